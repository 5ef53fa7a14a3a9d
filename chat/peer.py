"""The mesh peer role: peer exchange, the degree rule, status lines (§7).

Peer exchange is bounded both ways. Out: a ``peers`` frame lists at most
``MAX_PEERS`` neighbours (the longest linked first) and always fits in
``MAX_FRAME``; a link gets one at most every ``PEERS_EVERY`` seconds, what
changes meanwhile coalesced (the first right after its handshake). In: a
link's frames make this peer dial at most ``DIALS_PER_SECOND`` new
addresses a second (after a burst of ``--degree``), only IP literals, and
only while fewer than ``--degree`` peers are linked or being dialled.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable

import trio

from chat.addr import dialable_ip, split_addr
from chat.flow import TokenBucket
from chat.link import Link
from chat.protocol import MAX_FRAME, Event, PeerInfo, Peers, encode
from chat.role import NodeView, Role
from chat.state import MAX_ORIGINS
from chat.textclient import TextSession

log = logging.getLogger("chat")

MAX_PEERS = 200  # entries of a peers frame (each at most ~250 bytes: it fits)
PEERS_EVERY = 1.0  # seconds between peers frames on one link, at least
DIALS_PER_SECOND = 1.0  # addresses learned from one link dialled a second


class PeerRole(Role):
    """A person's node: learns the mesh from ``peers`` frames and fills it in."""

    name = "peer"

    def __init__(self) -> None:
        # origin -> name of the link it last came over, for /peers; the
        # least recently heard forgotten past max_origins.
        self.max_origins = MAX_ORIGINS
        self.via: OrderedDict[str, str] = OrderedDict()
        self._pending: set[Link] = set()  # links owed a peers frame
        self._sent: dict[Link, float] = {}  # when each link last got one
        self._dials: dict[Link, TokenBucket] = {}  # what each link may make us dial

    def attach(self, node: NodeView) -> None:
        super().attach(node)
        self.degree = node.config.degree
        self.max_origins = node.config.max_origins

    # ------------------------------------------------------------ exchange

    def frame(self) -> bytes:
        """The peers frame: dialable peers we are linked to, bounded to fit."""
        entries = []
        for link in self.node.neighbours.values():
            addr = link.addr
            if link.is_peer and addr is not None:
                entries.append(PeerInfo(link.node, link.name, addr))
                if len(entries) == MAX_PEERS:
                    break
        data = encode(Peers(tuple(entries)))
        while len(data) > MAX_FRAME:  # (cannot happen with MAX_PEERS: a guard)
            entries = entries[: len(entries) * 3 // 4]
            data = encode(Peers(tuple(entries)))
        return data

    def _advertise(self, to: Iterable[Link]) -> None:
        """Owe each peer of ``to`` a peers frame; send what is due now."""
        self._pending.update(link for link in to if link.is_peer)
        self.tick(trio.current_time())

    def tick(self, now: float) -> None:
        due = [
            link
            for link in self._pending
            if link.active and now - self._sent.get(link, -PEERS_EVERY) >= PEERS_EVERY
        ]
        if not due:
            return
        # One frame for everyone: a receiver skips its own entry (§7 readings).
        data = self.frame()
        for link in due:
            link.conn.send(data)
            self._sent[link] = now
            self._pending.discard(link)

    def peer_count(self) -> int:
        return sum(1 for link in self.node.neighbours.values() if link.is_peer)

    def on_peers(self, link: Link, frame: Peers) -> None:
        node = self.node
        if not link.verified:
            return  # addresses are learned from authenticated peers only
        budget = self._dials.get(link)
        if budget is None:
            budget = self._dials[link] = TokenBucket(DIALS_PER_SECOND, max(1, self.degree))
        now = trio.current_time()
        for info in frame.peers:
            if info.node == node.id or info.node in node.neighbours:
                continue
            if self.peer_count() + node.learned_dialling >= self.degree:
                return
            where = split_addr(info.addr)
            if where is None or not dialable_ip(where[0]):
                continue  # only IP literals are anyone's address (§7)
            if budget.take(now) > 0:
                budget.tokens += 1.0  # not spent: this dial did not happen
                return
            if node.connect(*where, persistent=False, expect=info.node):
                log.info("dialling %s at %s (learned from %s)", info.name, info.addr, link.name)

    # ------------------------------------------------------------ lifecycle

    def link_up(self, link: Link, replacing: Link | None = None) -> None:
        hello = link.hello
        assert hello is not None
        if replacing is None:
            kind = "" if hello.role == "peer" else f" ({hello.role})"
            log.info("connected to %s%s at %s", link.name, kind, link.addr or link.where)
        else:
            self._forget(replacing)
        if link.is_peer:
            others = self.node.neighbours.values()
            if link.addr is not None and replacing is None:  # a new neighbour: tell all
                self._advertise(others)
            else:
                self._advertise([link])  # right after the handshake (§7)

    def link_down(self, link: Link, lost: bool) -> None:
        self._forget(link)
        if self.node.stopping:
            return
        how = "lost" if lost else "closed"
        log.info("connection to %s %s (%s)", link.name, how, link.conn.closing)
        if link.is_peer and link.addr is not None:
            self._advertise(self.node.neighbours.values())

    def _forget(self, link: Link) -> None:
        self._pending.discard(link)
        self._sent.pop(link, None)
        self._dials.pop(link, None)

    def client_up(self, session: TextSession) -> None:
        log.info("plain-text client %s connected from %s", session.name, session.where)

    def on_event(self, link: Link | None, event: Event) -> None:
        via = self.via
        via[event.origin] = link.name if link else ""
        via.move_to_end(event.origin)
        if len(via) > self.max_origins:
            via.popitem(last=False)
