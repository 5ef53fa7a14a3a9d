"""The mesh peer role: peer exchange, the degree rule, status lines (§7)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from chat.addr import dialable_ip, split_addr
from chat.link import Link
from chat.protocol import Event, PeerInfo, Peers
from chat.role import NodeView, Role
from chat.textclient import TextSession

log = logging.getLogger("chat")


class PeerRole(Role):
    """A person's node: learns the mesh from ``peers`` frames and fills it in."""

    name = "peer"

    def __init__(self) -> None:
        self.via: dict[str, str] = {}  # origin -> name of the link it last came over

    def attach(self, node: NodeView) -> None:
        super().attach(node)
        self.degree = node.config.degree

    # ------------------------------------------------------------ exchange

    def _neighbours(self) -> list[tuple[Link, PeerInfo]]:
        out = []
        for link in self.node.neighbours.values():
            addr = link.addr
            if link.is_peer and addr is not None:
                out.append((link, PeerInfo(link.node, link.name, addr)))
        return out

    def _advertise(self, to: Iterable[Link]) -> None:
        """Send each of ``to`` the dialable peers we are linked to, bar itself."""
        neighbours = self._neighbours()
        for link in to:
            if link.is_peer:
                link.conn.send_frame(
                    Peers(tuple(p for other, p in neighbours if other is not link))
                )

    def peer_count(self) -> int:
        return sum(1 for link in self.node.neighbours.values() if link.is_peer)

    def on_peers(self, link: Link, frame: Peers) -> None:
        node = self.node
        for info in frame.peers:
            if info.node == node.id or info.node in node.neighbours:
                continue
            if self.peer_count() + node.learned_dialling >= self.degree:
                return
            where = split_addr(info.addr)
            if where is None or not dialable_ip(where[0]):
                continue  # only IP literals are anyone's address (§7)
            if node.connect(*where, persistent=False, expect=info.node):
                log.info("dialling %s at %s (learned from %s)", info.name, info.addr, link.name)

    # ------------------------------------------------------------ lifecycle

    def link_up(self, link: Link, replacing: Link | None = None) -> None:
        hello = link.hello
        assert hello is not None
        if replacing is None:
            kind = "" if hello.role == "peer" else f" ({hello.role})"
            log.info("connected to %s%s at %s", link.name, kind, link.addr or link.where)
        if link.is_peer:
            self._advertise([link])  # right after the handshake (§7)
            if link.addr is not None and replacing is None:  # a new neighbour
                neighbours = self.node.neighbours.values()
                self._advertise(other for other in neighbours if other is not link)

    def link_down(self, link: Link, lost: bool) -> None:
        if self.node.stopping:
            return
        how = "lost" if lost else "closed"
        log.info("connection to %s %s (%s)", link.name, how, link.conn.closing)
        if link.is_peer and link.addr is not None:
            self._advertise(self.node.neighbours.values())

    def client_up(self, session: TextSession) -> None:
        log.info("plain-text client %s connected from %s", session.name, session.where)

    def on_event(self, link: Link | None, event: Event) -> None:
        self.via[event.origin] = link.name if link else ""
