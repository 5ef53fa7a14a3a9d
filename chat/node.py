"""The node: one supervisor for the listener, the diallers and every connection.

Role-agnostic: a mesh peer and a hub are both a :class:`Node`; what differs
(peer exchange, logging) is in a :class:`Role` passed in. The rules it
carries out live elsewhere: link decisions in :mod:`chat.lifecycle`, order
and history in :mod:`chat.state`, budgets and backlogs in :mod:`chat.flow`,
plain-text clients in :mod:`chat.textclient`. § refers to
``docs/PROTOCOL.md``.

Task tree::

    Node.run
    ├── services nursery        cancelled first on shutdown
    │   ├── listener            trio.serve_listeners (one task per listener)
    │   ├── dialler per address back-off, waits while its link is up
    │   └── gap timer           gives up gaps after 5 s (§5)
    └── connections nursery     closed last, after a grace period
        ├── flusher             writes every outbox filled in a step, once
        ├── watchdog            every connection's timers, in one sweep
        └── per connection      Connection.serve, the reader; a writer task
                                only while the kernel will not take the outbox
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from chat import gate
from chat.attention import Attention
from chat.author import Author
from chat.config import Config
from chat.dialler import Dialler, LinkEnd
from chat.identity import certificate
from chat.keys import SigningKey
from chat.lifecycle import Closing, Reason
from chat.link import Link
from chat.links import Links
from chat.listener import Acceptor
from chat.person import Person, screen_for
from chat.private import BoxKey
from chat.protocol import Event, Hello, ProtocolError, make_hello
from chat.role import Role
from chat.router import Router, Sink
from chat.tls import make_tls

log = logging.getLogger("chat")


class Node(Person):
    """A trio-chat node: a supervisor over its connections and its events."""

    def __init__(self, config: Config, role: Role | None = None, sink: Sink | None = None) -> None:
        self.config = config
        self.role = role or Role()
        run = SigningKey()  # this run's key: the node id is its hash (§2)
        self.box = BoxKey()  # this run's box key: private messages to us (§4)
        badge = certificate(config.identity, run) if config.identity else {}
        self.me = Author(config.name, run, {**badge, **self.box.badge()})
        # A closed group's TLS (§8): a certificate for this run key, the proof key.
        self.tls = make_tls(run, config.secret) if config.secret is not None else None
        # What deserves the person's attention, and whom they ignore (chat.person).
        self.attention = Attention(lambda: self.me.name, config.highlights)
        router = self.router = Router(
            self.me,
            history=config.history,
            history_bytes=config.history_bytes,
            hold_back=config.hold_back,
            quiet_after=config.timing.dead_after,
            max_origins=config.max_origins,
            known=config.known,
            sink=screen_for(self.attention, config, sink),
            on_event=self._on_event,
        )
        router.boxes[self.me.id] = self.box
        self.links = Links(config, router, self.role, self.hello)
        # The parts' state, under the names the roles and front ends use.
        self.sequencer, self.history = router.sequencer, router.history
        self.members = router.members
        self.neighbours = router.neighbours  # node id -> the one active link to it
        self.audience = router.audience  # plain-text clients that have not left
        self.connections = self.links.connections  # every open connection
        self.changes = router.changes  # a connection, link, event or line came or went
        self.listen_port: int | None = None
        self.started = trio.Event()
        self._stop = trio.Event()
        self._final_error: ProtocolError | None = None
        self._conns: trio.Nursery | None = None
        self.dialler = Dialler(
            self._serve_dialled, self._wait_unlinked, timeout=config.timing.handshake
        )
        self.role.attach(self)

    def _on_event(self, link: Link | None, event: Event) -> None:
        self.role.on_event(link, event)  # looked up each time: tests patch roles

    @property
    def opened(self) -> int:
        """Connections ever opened, accepted or dialled."""
        return self.links.opened

    @property
    def learned_dialling(self) -> int:
        """Dials under way to nodes learned by peer exchange."""
        return self.dialler.learned

    @property
    def id(self) -> str:
        return self.me.id

    @property
    def name(self) -> str:
        return self.me.name

    @property
    def fingerprint(self) -> str:
        """How others tell this node's person apart (§2): the identity's
        fingerprint, or the run key's when there is no identity."""
        key = self.config.identity or self.me.key
        return key.fingerprint

    # ------------------------------------------------------------ supervisor

    async def run(
        self,
        listeners: Sequence[trio.SocketListener] = (),
        *,
        text_listeners: Sequence[trio.SocketListener] = (),
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until :meth:`stop`; then leave and close within the grace period.

        ``text_listeners``: a closed group's plain-text port (§8), open to
        plain-text clients only.
        """
        for listener in listeners:
            self.listen_port = listener.socket.getsockname()[1]
            break
        async with trio.open_nursery() as conns:
            self._conns = conns
            conns.start_soon(self.links.flusher.run)
            conns.start_soon(self._watchdog)
            async with trio.open_nursery() as services:
                self.me.joined = time.time()
                self.originate(self.me, "join")
                if listeners:
                    services.start_soon(self._accept, listeners)
                if text_listeners:
                    services.start_soon(self._accept, text_listeners, True)
                services.start_soon(self._gap_timer)
                self.dialler.start(services)
                self.started.set()
                task_status.started()
                await self._stop.wait()
                services.cancel_scope.cancel()
            await self._close_all()
            conns.cancel_scope.cancel()

    def stop(self, error: ProtocolError | None = None) -> None:
        """Leave the group: ``leave`` on every link, flush, close (§4).

        With ``error`` (a hub's ``shutting_down``) that frame is each link's
        last word after the leave.
        """
        if self.stopping:
            return
        self.links.stopping = True
        self._final_error = error
        if self.started.is_set():
            self.links.leave_clients()
            self.originate(self.me, "leave")
        self._stop.set()

    async def _close_all(self) -> None:
        error = self._final_error
        for peer in list(self.connections.values()):
            # What a lagging link still lacks (our leave among it) goes out after
            # the outbox, not through it: the outbox may be full.
            rest = self.router.unsent(peer) if isinstance(peer, Link) else b""
            if error is not None:
                peer.conn.fail(error, before=rest)
            else:
                peer.conn.finish(Closing(Reason.SHUTTING_DOWN), rest)
        with trio.move_on_after(self.config.timing.grace):
            for conn in list(self.connections):
                await conn.closed.wait()

    async def _accept(self, listeners: Sequence[trio.SocketListener], text: bool = False) -> None:
        conns = self._conns
        assert conns is not None

        async def handle(stream: trio.SocketStream) -> None:
            if self.tls is None or text:
                link = self.links.open(stream, outgoing=False, text_only=text)
            else:
                opened = await gate.accepted(
                    self.links, stream, self.tls, self.config.timing.handshake
                )
                if opened is None:
                    return
                link = opened
            await self.links.serve(link, conns)

        await Acceptor(handle, conns, "this node is out of file descriptors").serve(listeners)

    async def _watchdog(self) -> None:
        """The link timers of every connection, from one task (§3, §7).

        One sweep every fortieth of the shortest timer (at most 0.25 s)
        instead of timeouts per connection: an idle connection then costs
        no cancel scope or timer entry (docs/benchmarks.md, W3). A timer
        fires up to one tick late.
        """
        t = self.config.timing
        tick = min(0.25, max(0.005, min(t.handshake, t.ping_after, t.dead_after, t.stall) / 40))
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for conn in list(self.connections):
                try:
                    conn.check(now)
                except Exception:  # a bug of ours: this connection's, not the node's
                    log.exception("internal error in the timers of %r", conn)
                    conn.abort(Closing(Reason.INTERNAL))
            try:
                self.router.tick(now)
                self.role.tick(now)
            except Exception:
                log.exception("internal error in a timer")

    async def _gap_timer(self) -> None:
        while True:
            deadline = self.sequencer.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self.router.gaps.wait()
                continue
            try:
                self.router.expire()
            except Exception:  # a bug of ours must not end the node
                log.exception("internal error giving up a gap")

    # --------------------------------------------------------------- dialling

    def connect(self, host: str, port: int, *, persistent: bool = True, expect: str = "") -> bool:
        """Dial ``host:port`` in the background; False if already dialling it.

        Persistent addresses (the command line's) are retried for as long
        as the node runs (:class:`chat.dialler.Dialler`).
        """
        if self.stopping:
            return False
        return self.dialler.connect(host, port, persistent=persistent, expect=expect)

    async def dials_settled(self) -> None:
        """Return once every address dialled so far has linked or failed once."""
        await self.dialler.settled()

    async def _serve_dialled(self, stream: trio.abc.Stream, on_up: Callable[[], None]) -> LinkEnd:
        if self.tls is None:
            link = self.links.open(stream, outgoing=True)
        else:
            opened = await gate.dialled(self.links, stream, self.tls, self.config.timing.handshake)
            if isinstance(opened, LinkEnd):
                return opened
            link = opened
        link.on_up = on_up
        assert self._conns is not None
        self._conns.start_soon(self.links.serve, link, self._conns)
        await link.conn.closed.wait()
        closing = link.conn.closing or Closing(Reason.CLOSED)
        return LinkEnd(link.node, link.name, link.conn.established, closing)

    async def _wait_unlinked(self, node_id: str) -> None:
        while (link := self.neighbours.get(node_id)) is not None:
            await link.conn.closed.wait()

    def add_stream(self, stream: trio.abc.Stream, *, outgoing: bool) -> Link:
        """Serve an already open stream (tests use memory streams); its link."""
        if self._conns is None:
            raise RuntimeError("the node is not running")
        link = self.links.open(stream, outgoing=outgoing)
        self._conns.start_soon(self.links.serve, link, self._conns)
        return link

    def hello(self, nonce: bytes) -> Hello:
        """This node's ``hello`` with ``nonce``, as it would send it now (§3)."""
        have = self.sequencer.have_map()
        return make_hello(self.me.key, nonce, self.name, self.role.name, self.listen_port, have)

    def originate(self, author: Author, kind: str, **extra: Any) -> Event:
        """Create an event of ``author``'s: encode once, record, flood, show."""
        return self.router.originate(author, kind, **extra)
