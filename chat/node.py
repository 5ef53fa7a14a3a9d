"""The node: one supervisor for the listener, the diallers and every link.

Role-agnostic: a mesh peer and a hub are both a :class:`Node`; what differs
(peer exchange, logging) is in a :class:`Role` passed in. § refers to
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
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import trio

from chat import render
from chat.connection import CLOSED_BY_REMOTE, DUPLICATE, ITSELF, Connection, Flusher, Timing
from chat.dialler import Dialler
from chat.protocol import (
    PROTO,
    Error,
    Event,
    EventKind,
    Frame,
    Hello,
    Peers,
    Ping,
    Pong,
    ProtocolError,
    RoleName,
    TextLine,
    join_addr,
    make_event,
    name_problem,
    text_problem,
)
from chat.state import Delivery, Entry, FloodControl, History, Membership, Sequencer

log = logging.getLogger("chat")

RECENT_LINES = 50  # chat lines replayed to a plain-text client that joins


@dataclass
class Config:
    name: str
    history: int = 1000
    degree: int = 8
    timing: Timing = field(default_factory=Timing)
    hold_back: float = 5.0
    rate: float = 20.0  # own events a second per connection (0: no limit)
    burst: float = 50.0
    link_rate: float = 5000.0  # forwarded events a second per connection
    patience: float = 10.0  # seconds over the limit before rate_limited
    max_connections: int = 1024


@dataclass(eq=False)
class Author:
    """Someone this node creates events for: itself or a plain-text client."""

    id: str
    name: str
    seq: int = 0
    joined: float = 0.0  # ts of its join: earlier events are history to it
    left: bool = False


@dataclass(eq=False, slots=True)
class Link:
    """One connection as the node sees it, from accept/dial to close."""

    conn: Connection
    hello: Hello | None = None  # the remote's, once received
    client: Author | None = None  # set for a plain-text client (§9)
    active: bool = False  # the one connection to hello.node (§3)
    left: bool = False  # the remote node sent its leave
    # Keys of events that did not fit the outbox; None until needed (an
    # empty deque is 600 bytes, and most links never need one).
    backlog: deque[tuple[str, int]] | None = None
    flood: FloodControl = field(default_factory=FloodControl)
    catch_up_seq: int = 0  # the remote's own seq when it said hello: later ones are new
    put: Callable[[bytes], bool] = field(init=False)

    def __post_init__(self) -> None:
        self.put = self.conn.outbox.put  # bound once: fan-out calls it per recipient

    @property
    def node(self) -> str:
        return self.hello.node if self.hello else ""

    @property
    def name(self) -> str:
        if self.client:
            return self.client.name
        if self.hello:
            return self.hello.name
        return self.where

    @property
    def where(self) -> str:
        remote = self.conn.remote
        return join_addr(*remote) if remote else "?"

    @property
    def addr(self) -> str | None:
        """The remote's dialable address (§3): its IP and its ``listen``."""
        if self.hello is None or self.hello.listen is None or self.conn.remote is None:
            return None
        return join_addr(self.conn.remote[0], self.hello.listen)

    @property
    def is_peer(self) -> bool:
        return self.hello is not None and self.hello.role == "peer"


class Role:
    """What a node of a given role does beyond the common core.

    The base class does nothing; :mod:`chat.peer` and :mod:`chat.hub` add
    peer exchange and the server log.
    """

    name: RoleName = "peer"

    def attach(self, node: Node) -> None:
        self.node = node

    def link_up(self, link: Link, replacing: Link | None = None) -> None:
        """A node or a plain-text client completed its handshake.

        ``replacing`` is the link to the same node that this one supersedes
        under the one-link-per-pair rule (§3): not a new neighbour.
        """

    def link_down(self, link: Link, lost: bool) -> None:
        """An active link ended; ``lost`` if it went without a leave."""

    def link_failed(self, link: Link) -> None:
        """A connection ended before its handshake completed."""
        log.info("connection with %s ended: %s", link.name, link.conn.close_reason)

    def on_peers(self, link: Link, frame: Peers) -> None:
        """A ``peers`` frame arrived (§7)."""

    def on_error(self, link: Link, frame: Error) -> None:
        log.warning("%s reported an error: %s: %s", link.name, frame.code, frame.message)

    def on_event(self, link: Link | None, event: Event) -> None:
        """A new event arrived from ``link`` (None: created here)."""


Sink = Callable[[Entry], None]


class Node:
    """A trio-chat node: history, flooding, catch-up and the link lifecycle."""

    def __init__(self, config: Config, role: Role | None = None, sink: Sink | None = None) -> None:
        self.config = config
        self.role = role or Role()
        self.sink = sink or (lambda entry: None)
        self.me = Author(secrets.token_hex(16), config.name)
        self.sequencer = Sequencer(hold_back=config.hold_back)
        self.history = History(config.history)
        self.members = Membership()
        self.links: dict[str, Link] = {}  # node id -> the active link to it
        self.sessions: dict[Connection, Link] = {}  # every open connection
        self.clients: set[Link] = set()  # plain-text clients that have not left
        self.recent: deque[Entry] = deque(maxlen=RECENT_LINES)
        self.listen_port: int | None = None
        self.stopping = False
        self.started = trio.Event()
        self._stop = trio.Event()
        self._final_error: ProtocolError | None = None
        self._gap_changed = trio.Event()
        self._flusher = Flusher()
        self._links_changed = trio.Event()  # a link came up or went down
        self.dialler = Dialler(self)
        self.role.attach(self)

    @property
    def id(self) -> str:
        return self.me.id

    @property
    def name(self) -> str:
        return self.me.name

    # ------------------------------------------------------------ supervisor

    async def run(
        self,
        listeners: Sequence[trio.SocketListener] = (),
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until :meth:`stop`; then leave and close within the grace period."""
        for listener in listeners:
            self.listen_port = listener.socket.getsockname()[1]
            break
        async with trio.open_nursery() as conns:
            self._conns = conns
            conns.start_soon(self._flusher.run)
            conns.start_soon(self._watchdog)
            async with trio.open_nursery() as services:
                self._services = services
                self.me.joined = time.time()
                self._originate(self.me, "join")
                if listeners:
                    services.start_soon(self._accept, listeners)
                services.start_soon(self._gap_timer)
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
        self.stopping = True
        self._final_error = error
        if self.started.is_set() and not self.me.left:
            self.me.left = True
            self._originate(self.me, "leave")
        self._stop.set()

    async def _close_all(self) -> None:
        error = self._final_error
        for link in list(self.sessions.values()):
            # What waits in the backlog (our leave among it) goes out after
            # the outbox, not through it: the outbox may be full.
            rest = b"".join(e.raw for e in map(self.history.get, link.backlog or ()) if e)
            link.backlog = None
            if error is not None:
                link.conn.fail(error, before=rest)
            else:
                link.conn.finish("shutting down", rest)
        with trio.move_on_after(self.config.timing.grace):
            for conn in list(self.sessions):
                await conn.closed.wait()

    async def _accept(self, listeners: Sequence[trio.SocketListener]) -> None:
        async def handle(stream: trio.SocketStream) -> None:
            full = len(self.sessions) >= self.config.max_connections
            link = self._new_link(stream, _peername(stream), outgoing=False)
            if full:
                why = f"this node takes at most {self.config.max_connections} connections"
                link.conn.fail(ProtocolError("too_many_connections", why))
            await self._run_link(link)

        await trio.serve_listeners(handle, list(listeners), handler_nursery=self._conns)

    # --------------------------------------------------------------- dialling

    def connect(self, host: str, port: int, *, persistent: bool = True, expect: str = "") -> bool:
        """Dial ``host:port`` in the background; False if already dialling it.

        See :class:`chat.dialler.Dialler`: persistent addresses (from the
        command line) are retried for as long as the node runs.
        """
        if self.stopping:
            return False
        return self.dialler.connect(
            self._services, host, port, persistent=persistent, expect=expect
        )

    async def dials_settled(self) -> None:
        """Return once every address dialled so far has linked or failed once."""
        await self.dialler.settled()

    @property
    def learned_dialling(self) -> int:
        """Dials under way to nodes learned by peer exchange."""
        return self.dialler.learned

    async def links_changed(self) -> None:
        """Return when a link next comes up or goes down."""
        await self._links_changed.wait()

    def _notify_links(self) -> None:
        self._links_changed.set()
        self._links_changed = trio.Event()

    def dial_stream(self, stream: trio.SocketStream) -> Link:
        """Serve a stream this node dialled (the dialler's half of a link)."""
        return self._start(stream, _peername(stream), outgoing=True)

    # ----------------------------------------------------- link lifecycle

    def _new_link(
        self, stream: trio.abc.Stream, remote: tuple[str, int] | None, outgoing: bool
    ) -> Link:
        config = self.config
        conn = Connection(
            stream,
            remote,
            outgoing=outgoing,
            timing=config.timing,
            flusher=self._flusher,
            seen=self._seen,
        )
        flood = FloodControl(config.rate, config.burst, config.link_rate, config.patience)
        link = self.sessions[conn] = Link(conn, flood=flood)
        return link

    def _start(
        self, stream: trio.abc.Stream, remote: tuple[str, int] | None, *, outgoing: bool
    ) -> Link:
        link = self._new_link(stream, remote, outgoing)
        self._conns.start_soon(self._run_link, link)
        return link

    def add_stream(self, stream: trio.abc.Stream, *, outgoing: bool) -> Link:
        """Serve an already open stream (tests use memory streams)."""
        return self._start(stream, None, outgoing=outgoing)

    async def _run_link(self, link: Link) -> None:
        conn = link.conn
        if conn.outgoing:
            conn.send_frame(self._hello())
        try:
            await conn.serve(self._on_frame, self._conns)
        except Exception:
            # A bug of ours on one connection must not take the node down.
            log.exception("internal error on the connection with %s", link.name)
            conn.abort("internal error")
        finally:
            self.sessions.pop(conn, None)
            try:
                self._link_closed(link)
            except Exception:
                log.exception("internal error closing the connection with %s", link.name)

    def _hello(self) -> Hello:
        return Hello(
            self.id, self.name, self.role.name, self.listen_port, self.sequencer.have_map(), PROTO
        )

    def _on_frame(self, conn: Connection, frame: Frame | TextLine) -> float:
        """Handle one frame; answer how long to stop reading this connection."""
        link = self.sessions.get(conn)
        if link is None or self.stopping:
            return 0.0  # leaving: our leave is sent, nothing more is relayed
        try:
            if not conn.established:
                self._on_first(link, frame)
                return 0.0
            if isinstance(frame, Event):
                # The remote's own new events draw on its small budget; what
                # it forwards (and its own catch-up, which its hello's have
                # already counted) on the large one.
                own = frame.origin == link.node and frame.seq > link.catch_up_seq
                pause = self._charge(link, own)
                self._on_event(link, frame)
                return pause
            if isinstance(frame, TextLine):
                pause = self._charge(link, own=True)
                self._on_text(link, frame.text)
                return pause
            pause = self._charge(link, own=False)
            self._on_link_frame(link, frame)
            return pause
        except ProtocolError as exc:
            conn.fail(exc)
            return 0.0

    def _seen(self, origin: str, seq: int) -> bool:
        return not self.sequencer.is_new(origin, seq)

    def _charge(self, link: Link, own: bool) -> float:
        flood = link.flood
        now = trio.current_time()
        pause = flood.charge(own, now)
        if pause and flood.exceeded(now):
            raise ProtocolError("rate_limited", f"over the rate limit for {flood.patience:g} s")
        return pause

    def _on_first(self, link: Link, frame: Frame | TextLine) -> None:
        conn = link.conn
        if isinstance(frame, TextLine) and not conn.outgoing:
            self._text_client_up(link, frame.text)
            return
        if isinstance(frame, Error) and conn.outgoing:
            self.role.on_error(link, frame)
            conn.finish(f"refused: {frame.code}")
            return
        if not isinstance(frame, Hello):
            raise ProtocolError("bad_frame", "the first frame must be a hello")
        link.hello = frame
        if not conn.outgoing:
            # Answer every well-formed hello before judging it (§3).
            conn.send_frame(self._hello())
        if frame.proto != PROTO:
            raise ProtocolError("unsupported_protocol", f"this node speaks protocol {PROTO}")
        if frame.node == self.id:
            conn.finish(ITSELF)
            return
        existing = self.links.get(frame.node)
        if existing is not None:
            if not self._keep_new(existing, link):
                conn.finish(DUPLICATE)
                return
            existing.active = False  # closing it is no departure
            existing.conn.finish(DUPLICATE)
        conn.established = True
        conn.keepalive = True
        conn.on_drained = partial(self._refill, link)
        link.active = True
        self.links[frame.node] = link
        self._notify_links()
        for event in self.history.missing_for(frame.have, skip_origin=frame.node):
            self._send_event(link, event)
        link.catch_up_seq = frame.have.get(frame.node, 0)
        link.hello = replace(frame, have={})  # up to 1000 entries: not kept per link
        self.role.link_up(link, replacing=existing)

    def _keep_new(self, old: Link, new: Link) -> bool:
        """The simultaneous-dial rule (§3): keep the link dialled by the smaller id."""
        old_dialler = self.id if old.conn.outgoing else old.node
        new_dialler = self.id if new.conn.outgoing else new.node
        return new_dialler < old_dialler

    def _link_closed(self, link: Link) -> None:
        self._notify_links()
        if link.client is not None:
            client = link.client
            self.clients.discard(link)
            lost = not client.left and not self.stopping
            if lost:
                client.left = True
                if link.conn.close_reason == CLOSED_BY_REMOTE:
                    self._originate(client, "leave")  # closing its side is a leave (§9)
                    lost = False
                else:
                    self._originate(self.me, "lost", node=client.id)
            self.role.link_down(link, lost)
            return
        if not link.active:
            if link.conn.close_reason not in (DUPLICATE, ITSELF):
                self.role.link_failed(link)
            return
        link.active = False
        if self.links.get(link.node) is link:
            del self.links[link.node]
        member = self.members.get(link.node)
        lost = not link.left and not self.stopping and (member is None or member.present)
        if lost:
            self._originate(self.me, "lost", node=link.node)
        self.role.link_down(link, lost)

    # --------------------------------------------------------------- frames

    def _on_link_frame(self, link: Link, frame: Frame) -> None:
        if isinstance(frame, Ping):
            link.conn.send_frame(Pong(frame.nonce))
        elif isinstance(frame, Peers):
            self.role.on_peers(link, frame)
        elif isinstance(frame, Error):
            self.role.on_error(link, frame)
        # Pong: arriving is all it had to do. Hello again, Unknown: ignored.

    def _on_event(self, link: Link, event: Event) -> None:
        origin = event.origin
        if event.kind == "leave" and origin == link.node:
            link.left = True
        if not self.sequencer.is_new(origin, event.seq):
            return
        deliveries = self.sequencer.accept(event, trio.current_time())
        if deliveries is None:
            return
        self.history.add(event)
        self._flood(event, link)
        self.role.on_event(link, event)
        if deliveries:
            self._deliver(deliveries)
        else:
            self._gap_changed.set()

    def _flood(self, event: Event, came_from: Link | None) -> None:
        # The hot path of a relay: one put per recipient of the bytes as
        # received, no per-recipient object, task or call chain.
        raw = event.raw
        for link in self.links.values():
            # Order per origin must hold on each link: once anything waits
            # in the backlog, everything after it waits there too.
            if link is not came_from and (link.backlog or not link.put(raw)):
                self._defer(link, event)

    def _send_event(self, link: Link, event: Event) -> None:
        if link.backlog or not link.put(event.raw):
            self._defer(link, event)

    def _defer(self, link: Link, event: Event) -> None:
        if link.backlog is None:
            link.backlog = deque()
        elif len(link.backlog) >= self.history.size:
            link.backlog.popleft()  # gone from history anyway
        link.backlog.append(event.key)

    def _refill(self, link: Link) -> None:
        """The writer caught up: move backlog events from history to the outbox."""
        backlog = link.backlog
        while backlog:
            event = self.history.get(backlog[0])
            if event is not None and not link.conn.send(event.raw):
                return
            backlog.popleft()
        link.backlog = None

    # --------------------------------------------------------------- events

    def _originate(self, author: Author, kind: EventKind, **extra: str) -> Event:
        """Create an event of ``author``'s: encode once, record, flood, show."""
        author.seq += 1
        event = make_event(kind, author.id, author.seq, time.time(), author.name, **extra)
        self.sequencer.record_own(author.id, author.seq)
        self.history.add(event)
        self._flood(event, None)
        self.role.on_event(None, event)
        self._deliver([event])
        return event

    def say(self, text: str) -> str | None:
        """Send a message as this node; the reason if it cannot be sent."""
        problem = text_problem(text)
        if problem or self.stopping:
            return problem or "leaving"
        self._originate(self.me, "msg", text=text)
        return None

    def rename(self, name: str) -> str | None:
        """Change this node's name (a ``nick`` event); the reason if refused."""
        problem = name_problem(name)
        if problem:
            return problem
        if name != self.me.name:
            self.me.name = name
            self._originate(self.me, "nick")
        return None

    def _deliver(self, deliveries: Iterable[Delivery]) -> None:
        joined = self.me.joined
        for delivery in deliveries:
            if (
                isinstance(delivery, Event)
                and delivery.kind == "lost"
                and (delivery.node == self.id or delivery.node in self.links)
            ):
                # A stale report (a cut since healed) about us or about a
                # node we are linked to right now: kept and forwarded, not shown.
                continue
            entry = self.members.apply(delivery, delivery.ts < joined)
            if entry is None:
                continue
            self.recent.append(entry)
            self.sink(entry)
            for link in self.clients:
                self._show_to_client(link, entry)

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
            for conn in list(self.sessions):
                conn.check(now)

    async def _gap_timer(self) -> None:
        while True:
            deadline = self.sequencer.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._gap_changed.wait()
                self._gap_changed = trio.Event()
                continue
            self._deliver(self.sequencer.expire(trio.current_time()))

    # ------------------------------------------------- plain-text clients (§9)

    def _text_client_up(self, link: Link, first_line: str) -> None:
        conn = link.conn
        conn.established = True
        name = link.where[-32:]
        command, _, arg = first_line.partition(" ")
        if command == "/nick" and not name_problem(arg.strip()):
            name, first_line = arg.strip(), ""
        client = link.client = Author(secrets.token_hex(16), name)
        client.joined = time.time()
        for entry in self.recent:
            self._show_to_client(link, replace(entry, history=True))
        self.clients.add(link)
        self._originate(client, "join")
        self.role.link_up(link)
        if first_line:
            self._on_text(link, first_line)

    def _on_text(self, link: Link, line: str) -> None:
        client = link.client
        if client is None or client.left:
            return
        command, _, arg = line.partition(" ")
        if command == "/exit":
            client.left = True
            self.clients.discard(link)
            self._originate(client, "leave")
            link.conn.finish("left")
            return
        if command == "/nick":
            name = arg.strip()
            problem = name_problem(name)
            if problem:
                link.conn.send(f"*** cannot use that name: {problem}\n".encode())
            elif name != client.name:
                client.name = name
                self._originate(client, "nick")
            return
        if not line.strip():
            return
        problem = text_problem(line)
        if problem:
            link.conn.send(f"*** not sent: {problem}\n".encode())
            return
        self._originate(client, "msg", text=line)

    def _show_to_client(self, link: Link, entry: Entry) -> None:
        client = link.client
        assert client is not None
        if entry.kind == "msg" and entry.origin == client.id:
            return  # they typed it; no echo
        if entry.event is not None and entry.history != (entry.ts < client.joined):
            entry = replace(entry, history=entry.ts < client.joined)
        link.conn.send((render.line(entry) + "\n").encode())


def _peername(stream: trio.abc.Stream) -> tuple[str, int] | None:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return None
    try:
        name = sock.getpeername()
    except OSError:
        return None
    return (str(name[0]), int(name[1]))
