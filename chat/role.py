"""Roles: what a node of a given kind adds to the common core.

A :class:`Role` is a set of hooks the node calls; the base class does
nothing. :mod:`chat.peer` adds peer exchange, :mod:`chat.hub` the server
log. A role sees the node through :class:`NodeView`, the part of it that
roles may use.
"""

from __future__ import annotations

import logging
from typing import Protocol

from chat.config import Config
from chat.lifecycle import Closing
from chat.link import Link
from chat.protocol import Error, Event, Peers, RoleName
from chat.textclient import TextAudience, TextSession

log = logging.getLogger("chat")


class NodeView(Protocol):
    """What a role may see and do of its node."""

    @property
    def id(self) -> str: ...

    @property
    def config(self) -> Config: ...

    @property
    def stopping(self) -> bool: ...

    @property
    def neighbours(self) -> dict[str, Link]: ...

    @property
    def audience(self) -> TextAudience: ...

    @property
    def learned_dialling(self) -> int: ...

    def connect(
        self, host: str, port: int, *, persistent: bool = True, expect: str = ""
    ) -> bool: ...


class Role:
    """Hooks the node calls; each does nothing here."""

    name: RoleName = "peer"
    node: NodeView

    def attach(self, node: NodeView) -> None:
        self.node = node

    def link_up(self, link: Link, replacing: Link | None = None) -> None:
        """A node link completed its handshake; ``replacing`` is the link to
        the same node that it supersedes (§3): not a new neighbour."""

    def link_down(self, link: Link, lost: bool) -> None:
        """An active link ended; ``lost`` if it went without a leave."""

    def link_failed(self, link: Link) -> None:
        """A connection ended before its handshake completed."""
        log.info("connection with %s ended: %s", link.name, link.conn.closing)

    def client_up(self, session: TextSession) -> None:
        """A plain-text client joined (§9): it spoke its first words."""

    def closed_unheard(self, where: str, closing: Closing) -> None:
        """A connection closed before it said anything (a port probe, a
        listener that never spoke): nobody was told it came."""

    def client_down(self, session: TextSession, lost: bool) -> None:
        """A plain-text client's connection ended."""

    def on_peers(self, link: Link, frame: Peers) -> None:
        """A ``peers`` frame arrived (§7)."""

    def on_error(self, link: Link, frame: Error) -> None:
        log.warning("%s reported an error: %s: %s", link.name, frame.code, frame.message)

    def on_event(self, link: Link | None, event: Event) -> None:
        """A new event arrived from ``link`` (None: created here)."""

    def tick(self, now: float) -> None:
        """Called a few times a second (the watchdog's sweep): for what waits."""
