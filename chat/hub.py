"""The hub role: a relay with no person, and its server log.

The hub is the same :class:`~chat.node.Node` as a peer; only what it says
differs. It never sends ``peers`` (its clients stay behind it, §7), and it
logs what happens in the style of the classic relay server::

    [SUCCESS] hub listening on 0.0.0.0:8080 (identity SHA256:ti6Gf6LzOv5i)
    [NEW CONNECTION] alice (127.0.0.1:53412)
    [ACTIVE CONNECTIONS] 2
    [RECEIVED] From alice: hello
    [DISCONNECTED] alice (left)

One address gets at most ``LOG_RATE`` lines a second (bursts of
``LOG_BURST``); what it would have had beyond is counted and said in one
line, ``127.0.0.1: 42 more lines suppressed``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from chat.lifecycle import Closing, Reason
from chat.link import Link
from chat.logs import LineLimiter
from chat.protocol import Error, Event, Peers
from chat.role import Role
from chat.textclient import TextSession

if TYPE_CHECKING:
    from chat.bus import Bus

log = logging.getLogger("chat")

LOG_RATE = 20.0  # log lines a second about one address
LOG_BURST = 100.0


class HubRole(Role):
    """Relays everything (the node does that) and logs it."""

    name = "hub"

    def __init__(self, *, quiet: bool = False, log_rate: float = LOG_RATE) -> None:
        self.quiet = quiet
        self.limiter = LineLimiter(log_rate, max(LOG_BURST, log_rate * 5))
        self._addresses: dict[str, str] = {}  # a text client's origin -> its address
        self.bus: Bus | None = None  # other hubs, through Redis (chat.bus)

    def _event(self, address: str, tag: str, message: str, *args: object) -> None:
        allowed, suppressed = self.limiter.allow(address, trio.current_time())
        if not allowed:
            return
        if suppressed:
            _suppressed(address, suppressed)
        log.info(message, *args, extra={"tag": tag})

    def tick(self, now: float) -> None:
        for address, count in self.limiter.overdue(now):
            _suppressed(address, count)

    def _active(self) -> int:
        return len(self.node.neighbours) + len(self.node.audience)

    def link_up(self, link: Link, replacing: Link | None = None) -> None:
        if replacing is not None:
            return  # the same neighbour over its surviving connection
        kind = "" if not link.hello or link.hello.role == "peer" else " [hub]"
        self._connected(link.name, kind, link.where)

    def client_up(self, session: TextSession) -> None:
        self._addresses[session.author.id] = _ip(session.where)
        self._connected(session.name, "", session.where)

    def _connected(self, name: str, kind: str, where: str) -> None:
        self._event(_ip(where), "NEW CONNECTION", "%s%s (%s)", name, kind, where)
        self._event(_ip(where), "ACTIVE CONNECTIONS", "%d", self._active())

    def link_down(self, link: Link, lost: bool) -> None:
        self._disconnected(link.name, link.where, lost, link.conn.closing)

    def client_down(self, session: TextSession, lost: bool) -> None:
        self._addresses.pop(session.author.id, None)
        self._disconnected(session.name, session.where, lost, session.conn.closing)

    def _disconnected(self, name: str, where: str, lost: bool, closing: Closing | None) -> None:
        if self.node.stopping:
            return
        if closing is not None and closing.reason is Reason.PROTOCOL_ERROR:
            why = str(closing)
        elif lost:
            why = f"connection lost: {closing}"
        else:
            why = "left"
        self._event(_ip(where), "DISCONNECTED", "%s (%s)", name, why)
        self._event(_ip(where), "ACTIVE CONNECTIONS", "%d", self._active())

    def closed_unheard(self, where: str, closing: Closing) -> None:
        if self.quiet or self.node.stopping:
            return
        unheard = "closed before saying anything" if closing.reason in _THEIRS else str(closing)
        self._event(_ip(where), "DISCONNECTED", "%s (%s)", where, unheard)

    def link_failed(self, link: Link) -> None:
        if not self.node.stopping:
            self._event(_ip(link.where), "ERROR", "%s: %s", link.where, link.conn.closing)

    def on_peers(self, link: Link, frame: Peers) -> None:
        """A hub dials only the links its operator configures (§7)."""

    def on_error(self, link: Link, frame: Error) -> None:
        where = _ip(link.where)
        self._event(where, "ERROR", "%s reported %s: %s", link.name, frame.code, frame.message)

    def on_event(self, link: Link | None, event: Event) -> None:
        if self.bus is not None:
            self.bus.publish(event)  # (not those the bus itself delivered)
        if event.kind == "msg" and not self.quiet:
            where = _ip(link.where) if link else self._addresses.get(event.origin, "")
            self._event(where, "RECEIVED", "From %s: %s", event.name, event.text)


_THEIRS = frozenset({Reason.CLOSED_BY_REMOTE, Reason.RESET, Reason.LEFT})


def _ip(where: str) -> str:
    """The address part of ``ip:port`` (``[v6]:port`` too)."""
    return where.rpartition(":")[0].strip("[]")


def _suppressed(address: str, count: int) -> None:
    log.info("%s: %d more lines suppressed", address or "here", count, extra={"tag": "INFO"})
