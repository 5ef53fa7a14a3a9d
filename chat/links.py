"""Every connection of a node, from its first frame to its close (§3, §9).

The first frame decides what a connection is, as hypercorn's protocol
wrapper picks HTTP/1 or HTTP/2 from the first bytes: a ``hello`` makes it a
:class:`~chat.link.Link` to another node, a line of text a
:class:`~chat.textclient.TextSession`. The decisions themselves (which of
two links to keep, whether a close is a departure) are the pure functions
of :mod:`chat.lifecycle`; events go to the :class:`~chat.router.Router`.
§ refers to ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import trio

from chat.admission import Admission
from chat.author import Author
from chat.changes import Changes
from chat.config import Config
from chat.connection import Connection
from chat.flow import FloodControl, OriginBudgets
from chat.group import Binding
from chat.handshake import Handshake
from chat.keys import SigningKey
from chat.lifecycle import (
    QUIET,
    Closing,
    Departure,
    Reason,
    Verdict,
    client_departure,
    judge_hello,
    node_departure,
)
from chat.link import Link
from chat.outbox import Flusher
from chat.protocol import (
    CaughtUp,
    Duplicate,
    Error,
    Event,
    Frame,
    Hello,
    Peers,
    Ping,
    Pong,
    ProtocolError,
    TextLine,
)
from chat.role import Role
from chat.router import Router
from chat.sockets import keep_alive, peername
from chat.textclient import TextSession
from chat.tls import Sealer, closed_group

log = logging.getLogger("chat")

Peer = Link | TextSession  # what an open connection serves
# A node's own old events it may send as catch-up, on the large budget. The
# soak's adversary showed 1000 was too many: one connection's claim put
# ~1000 events into a 1000-event history in 2 s, and a peer stopped just
# then could no longer catch up on the honest messages before them. A node
# with more of its own to catch up sends the rest at its own rate.
OWN_CATCH_UP = 100
CATCH_UP_WINDOW = 60.0  # seconds a link's events may count as catch-up without caught_up


class Links:
    """The open connections of one node and what each of them serves."""

    def __init__(
        self, config: Config, router: Router, role: Role, hello: Callable[[bytes], Hello]
    ) -> None:
        self.config = config
        self.router = router
        self.role = role
        self.hello = hello  # the node's hello with a nonce, as it would send it now
        self.connections: dict[Connection, Peer] = {}  # every open connection
        self.opened = 0  # connections ever opened, accepted or dialled
        self.stopping = False  # the node is leaving: nothing more is taken in
        self.flusher = Flusher(sealing=config.secret is not None)
        self.flusher.before = router.flush_flood  # a read's messages, then the writes
        self.changes: Changes = router.changes
        self.admission = Admission(
            max_connections=config.max_connections,
            max_per_address=config.max_per_address,
            max_text_per_address=config.max_text_per_address,
            join_rate=config.join_rate,
            join_burst=config.join_burst,
            max_addresses=config.max_origins,
        )
        self.origins = OriginBudgets(config.origin_rate, config.origin_burst, config.max_origins)

    def originate(self, author: Author, kind: str, **extra: Any) -> Event:
        """For the text sessions: an event of theirs, created here."""
        return self.router.originate(author, kind, **extra)

    def private(self, author: Author, name: str, text: str) -> str | None:
        """For the text sessions: a private message of theirs, sealed here (§4)."""
        return self.router.private(author, name, text)

    def reply(self, author: Author, text: str) -> str | None:
        last = self.router.last_private.get(author.id)
        if last is None:
            return "nobody has written to you privately"
        return self.router.private_to(author, last, text)

    def leave_clients(self) -> None:
        """The node is leaving: so is each plain-text client it hosts, first
        (their leaves go out before the node's, §9)."""
        for session in list(self.router.audience.sessions):
            if session.joined and not session.left:
                session.left = True
                self.originate(session.author, "leave")

    def names(self) -> list[str]:
        """For the text sessions' /peers: who is present, with fingerprints."""
        members = self.router.members
        present = members.present()
        names = [members.display_name(m.node) for m in present]
        width = max(map(len, names), default=0)
        lines = [f"{len(present)} present:"]
        lines += [f"  {n:<{width}}  {m.fingerprint}" for n, m in zip(names, present, strict=True)]
        return lines

    @property
    def run_key(self) -> SigningKey:
        """For the text sessions: this node's run key, which vouches for them."""
        return self.router.me.key

    def open(
        self,
        stream: trio.abc.Stream,
        *,
        outgoing: bool,
        group: Binding | None = None,
        text_only: bool = False,
        sealer: Sealer | None = None,
    ) -> Link:
        """A connection to serve; ``group``: a closed group's proofs to make
        first (§8); ``text_only``: plain-text clients only (a closed group's
        plain-text port)."""
        config = self.config
        conn = Connection(
            stream,
            peername(stream),
            outgoing=outgoing,
            timing=config.timing,
            flusher=self.flusher,
            seen=self._seen,
            sealer=sealer,
        )
        flood = FloodControl(config.rate, config.burst, config.link_rate, config.patience)
        link = Link(conn, flood, self)
        link.handshake = Handshake(
            self.router.me.key, outgoing=outgoing, make_hello=self.hello, group=group
        )
        link.text_only = text_only
        self.connections[conn] = link
        self.opened += 1
        if not outgoing and conn.remote is not None:
            refusal = self.admission.connected(conn.remote[0])
            if refusal is not None:
                conn.refuse(refusal)
        self.changes.notify()
        return link

    async def serve(self, link: Link, nursery: trio.Nursery) -> None:
        conn = link.conn
        if link.handshake is not None:
            for frame in link.handshake.start():  # the dialler's hello (§3)
                conn.send_frame(frame)
        try:
            await conn.serve(nursery)
        except Exception:
            # A bug of ours on one connection must not take the node down.
            log.exception("internal error on the connection with %s", link.name)
            conn.abort(Closing(Reason.INTERNAL))
        finally:
            peer = self.connections.pop(conn, link)
            if not conn.outgoing and conn.remote is not None:
                text = isinstance(peer, TextSession)
                self.admission.disconnected(conn.remote[0], text=text)
            try:
                self._closed(peer, conn.closing or Closing(Reason.CLOSED))
            except Exception:
                log.exception("internal error closing the connection with %s", peer.name)
            self.changes.notify()

    def _seen(self, origin: str, seq: int) -> bool:
        return not self.router.is_new(origin, seq)

    def link_frame(self, link: Link, frame: Frame | TextLine) -> float:
        """A frame on ``link``: its first, or one on an established link."""
        if link.active:
            return self._on_frame(link, frame)
        return self._first_frame(link, frame)

    def link_drained(self, link: Link) -> None:
        self.router.refill(link)

    def link_silent(self, link: Link) -> None:
        """Nothing came in the handshake time: a person who listens first (§9)."""
        if self.stopping:
            return
        if self.config.secret is not None and not link.text_only:
            why = "the handshake did not complete in time: a closed group's members speak first"
            link.conn.fail(ProtocolError("handshake_timeout", why))
            self.changes.notify()
            return
        try:
            self._text_session(link)
        except ProtocolError as exc:
            link.conn.fail(exc, text=True)
        self.changes.notify()

    def _text_session(self, link: Link) -> TextSession:
        conn = link.conn
        self._admit(conn, text=True)
        keep_alive(conn.stream, conn.timing.ping_after)  # (it cannot answer pings)
        session = TextSession(conn, link.flood, self, self.router.audience)
        self.router.boxes[session.author.id] = session.box  # it reads its private messages here
        self.connections[conn] = session
        session.open()
        return session

    def client_joined(self, session: TextSession) -> None:
        self.role.client_up(session)

    def _first_frame(self, link: Link, frame: Frame | TextLine) -> float:
        """The first frame decides what a connection is: a node or a person (§3, §9)."""
        if not self.stopping:
            try:
                self._choose(link, frame)
            except ProtocolError as exc:
                link.conn.fail(exc)
            self.changes.notify()
        return 0.0

    def _choose(self, link: Link, frame: Frame | TextLine) -> None:
        conn = link.conn
        if self.config.secret is not None:
            if link.text_only and not isinstance(frame, TextLine):
                why = "this port is for plain-text clients; members connect with TLS (§8)"
                raise ProtocolError("auth_failed", why)
            if isinstance(frame, TextLine) and not link.text_only:
                raise closed_group()  # (inside TLS: text is no member's first frame)
        if isinstance(frame, TextLine) and not conn.outgoing:
            self._text_session(link).handle(frame.text)
        elif isinstance(frame, Error):
            self.role.on_error(link, frame)
            conn.finish(Closing(Reason.REFUSED, f"refused: {frame.code}"))
        elif isinstance(frame, (Duplicate, TextLine)) or link.handshake is None:
            raise ProtocolError("bad_frame", "no event before the handshake is done (§3)")
        else:
            handshake = link.handshake
            for answer in handshake.receive(frame):  # (ProtocolError: its fault)
                conn.send_frame(answer)
            link.hello = handshake.theirs
            if handshake.done:
                assert handshake.theirs is not None
                link.handshake = None  # (its nonces are of no more use)
                self._on_hello(link, handshake.theirs)

    def _on_hello(self, link: Link, hello: Hello) -> None:
        """Both proofs passed: the rules of §3, then the link is up."""
        conn = link.conn
        existing = self.router.neighbours.get(hello.node)
        existing_outgoing = existing.conn.outgoing if existing else None
        verdict = judge_hello(self.router.me.id, hello.node, conn.outgoing, existing_outgoing)
        if verdict in (Verdict.ITSELF, Verdict.KEEP_OLD):
            why = Reason.ITSELF if verdict is Verdict.ITSELF else Reason.DUPLICATE
            conn.finish(Closing(why))
            return
        if not conn.outgoing:
            self._admit(conn, text=False)
        if existing is not None:
            existing.active = False  # closing it is no departure
            existing.conn.finish(Closing(Reason.DUPLICATE))
        conn.established = conn.keepalive = True
        link.active = link.verified = True
        link.up_at = trio.current_time()
        self.router.neighbours[hello.node] = link
        self.router.catch_up(link, hello.have)
        # Its own events it says it has and we lack come as catch-up, on
        # the large budget: no more of them than we lack, nor than
        # OWN_CATCH_UP, whatever the hello claims (a claim of 10**12 would
        # otherwise buy every later event the large budget).
        link.catch_up_seq = claimed = hello.have.get(hello.node, 0)
        lacking = max(0, claimed - self.router.sequencer.have(hello.node))
        link.catch_up_left = min(lacking, OWN_CATCH_UP, self.router.history.size)
        # Its have (up to 1000 entries), bytes and nonce served the handshake:
        # not kept per link (an idle connection costs a hub ~8 KiB, W3).
        link.hello = replace(hello, have={}, raw=b"", nonce=b"")
        if link.on_up is not None:
            link.on_up()
        self.role.link_up(link, replacing=existing)

    def _admit(self, conn: Connection, *, text: bool) -> None:
        """Charge a join to the remote's address; raise its refusal if over."""
        if conn.remote is not None:
            refusal = self.admission.joining(conn.remote[0], text=text, now=trio.current_time())
            if refusal is not None:
                raise refusal

    def _on_frame(self, link: Link, frame: Frame | TextLine) -> float:
        """One frame on an established link; how long to stop reading it."""
        if self.stopping:
            return 0.0  # leaving: our leave is sent, nothing more is relayed
        try:
            now = trio.current_time()
            if not link.live and now - link.up_at >= CATCH_UP_WINDOW:
                link.live = True  # it never said caught_up: it has had its time
            if isinstance(frame, Event):
                # The remote's own new events draw on its small budget; what
                # it forwards (and its own catch-up, which its hello's have
                # already counted) on the large one.
                own = frame.origin == link.node
                if own and frame.seq <= link.catch_up_seq and link.catch_up_left > 0:
                    link.catch_up_left -= 1
                    own = False
                pause = link.flood.admit(own, now)
                if not own and self.router.is_new(frame.origin, frame.seq):
                    pause = max(pause, self.origins.take(frame.origin, now))
                if frame.kind == "leave" and frame.origin == link.node:
                    link.left = True
                self.router.receive(link, frame)
                return pause
            self.router.flush_flood()  # (what came before it goes first)
            # An error is the remote's own speech: the small budget.
            pause = link.flood.admit(isinstance(frame, Error), now)
            if isinstance(frame, Ping):
                link.conn.send_frame(Pong(frame.nonce))
            elif isinstance(frame, Peers):
                self.role.on_peers(link, frame)
            elif isinstance(frame, CaughtUp):
                link.live = True
            elif isinstance(frame, Error):
                # The sender closes after an error (§7); one that keeps
                # talking and errs again is closed here, not heard forever.
                link.errors += 1
                self.role.on_error(link, frame)
                if link.errors > 1:
                    link.conn.finish(Closing(Reason.REFUSED, f"a second error: {frame.code}"))
            # Pong: arriving was all it had to do. Hello again, Unknown: ignored.
            return pause
        except ProtocolError as exc:
            link.conn.fail(exc)
            return 0.0

    def _closed(self, peer: Peer, closing: Closing) -> None:
        if isinstance(peer, TextSession):
            self.router.audience.sessions.discard(peer)
            self.router.boxes.pop(peer.author.id, None)
            if not peer.joined:  # it never spoke: nobody was told it came
                self.role.closed_unheard(peer.where, closing)
                return
            how = client_departure(closing, said_leave=peer.left, stopping=self.stopping)
            peer.left = True
            if how is Departure.LEAVE:
                self.originate(peer.author, "leave")  # closing its side is a leave (§9)
            elif how is Departure.LOST:
                self.originate(self.router.me, "lost", node=peer.author.id)
            self.role.client_down(peer, how is Departure.LOST)
            return
        if not peer.active:
            if peer.conn.decoder.plain_text is None and not peer.conn.outgoing:
                self.role.closed_unheard(peer.where, closing)  # a port probe, say
            elif closing.reason not in QUIET:
                self.role.link_failed(peer)
            return
        member = self.router.members.get(peer.node)
        how = node_departure(
            closing,
            active=peer.active,
            said_leave=peer.left,
            stopping=self.stopping,
            present=member is None or member.present,
        )
        peer.active = False
        if self.router.neighbours.get(peer.node) is peer:
            del self.router.neighbours[peer.node]
        if how is Departure.LOST:
            self.originate(self.router.me, "lost", node=peer.node)
        self.role.link_down(peer, how is Departure.LOST)
