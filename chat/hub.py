"""The hub role: a relay with no person, and its server log.

The hub is the same :class:`~chat.node.Node` as a peer; only what it says
differs. It never sends ``peers`` (its clients stay behind it, §7), and it
logs what happens in the style of the classic relay server::

    [SUCCESS] hub listening on 0.0.0.0:8080
    [NEW CONNECTION] alice (127.0.0.1:53412)
    [ACTIVE CONNECTIONS] 2
    [RECEIVED] alice: hello
    [DISCONNECTED] alice (left)
"""

from __future__ import annotations

import logging
import os
import time
from typing import TextIO

from chat.lifecycle import Closing, Reason
from chat.link import Link
from chat.protocol import Error, Event, Peers
from chat.render import safe
from chat.role import Role
from chat.textclient import TextSession

log = logging.getLogger("chat")

_COLOURS = {
    "SUCCESS": "\x1b[1;32m",
    "NEW CONNECTION": "\x1b[36m",
    "ACTIVE CONNECTIONS": "\x1b[34m",
    "RECEIVED": "\x1b[0m",
    "DISCONNECTED": "\x1b[33m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[1;31m",
    "INFO": "\x1b[2m",
}
_RESET = "\x1b[0m"


class HubFormatter(logging.Formatter):
    """``HH:MM:SS [TAG] message``; the tag coloured when ``colour`` is on.

    A record's tag is its ``tag`` attribute (``extra={"tag": ...}``), else
    its level name, so the node's own status lines fit in.
    """

    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        tag = getattr(record, "tag", None) or record.levelname
        label = f"[{tag}]"
        if self.colour:
            label = f"{_COLOURS.get(tag, '')}{label}{_RESET}"
        text = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {label} "
        text += record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def wants_colour(stream: TextIO) -> bool:
    """Colour only for a terminal, and never when NO_COLOR is set (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _event(tag: str, message: str, *args: object) -> None:
    log.info(message, *args, extra={"tag": tag})


class HubRole(Role):
    """Relays everything (the node does that) and logs it."""

    name = "hub"

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet

    def _active(self) -> int:
        return len(self.node.neighbours) + len(self.node.audience)

    def link_up(self, link: Link, replacing: Link | None = None) -> None:
        if replacing is not None:
            return  # the same neighbour over its surviving connection
        kind = "" if not link.hello or link.hello.role == "peer" else " [hub]"
        self._connected(link.name, kind, link.where)

    def client_up(self, session: TextSession) -> None:
        self._connected(session.name, "", session.where)

    def _connected(self, name: str, kind: str, where: str) -> None:
        _event("NEW CONNECTION", "%s%s (%s)", safe(name), kind, where)
        _event("ACTIVE CONNECTIONS", "%d", self._active())

    def link_down(self, link: Link, lost: bool) -> None:
        self._disconnected(link.name, lost, link.conn.closing)

    def client_down(self, session: TextSession, lost: bool) -> None:
        self._disconnected(session.name, lost, session.conn.closing)

    def _disconnected(self, name: str, lost: bool, closing: Closing | None) -> None:
        if self.node.stopping:
            return
        if closing is not None and closing.reason is Reason.PROTOCOL_ERROR:
            why = str(closing)
        elif lost:
            why = f"connection lost: {closing}"
        else:
            why = "left"
        _event("DISCONNECTED", "%s (%s)", safe(name), why)
        _event("ACTIVE CONNECTIONS", "%d", self._active())

    def link_failed(self, link: Link) -> None:
        if not self.node.stopping:
            _event("ERROR", "%s: %s", link.where, link.conn.closing)

    def on_peers(self, link: Link, frame: Peers) -> None:
        """A hub dials only the links its operator configures (§7)."""

    def on_error(self, link: Link, frame: Error) -> None:
        _event("ERROR", "%s reported %s: %s", safe(link.name), frame.code, safe(frame.message))

    def on_event(self, link: Link | None, event: Event) -> None:
        if event.kind == "msg" and not self.quiet:
            _event("RECEIVED", "%s: %s", safe(event.name), safe(event.text))
