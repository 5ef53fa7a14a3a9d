"""A link: one connection to another node, as the node sees it (§3-§7)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from chat.addr import join_addr
from chat.connection import Connection
from chat.flow import Cursor, FloodControl
from chat.handshake import Handshake
from chat.protocol import Frame, Hello, TextLine

_serials = itertools.count(1)  # 0 is "created here"


class Owner(Protocol):
    """What a link reports to (the node's :class:`~chat.links.Links`)."""

    def link_frame(self, link: Link, frame: Frame | TextLine) -> float: ...

    def link_drained(self, link: Link) -> None: ...

    def link_silent(self, link: Link) -> None: ...


@dataclass(eq=False, slots=True)
class Link:
    """A connection to a node, from dial or accept to close.

    Until its handshake completes a link is pending: ``hello`` is None.
    """

    conn: Connection
    flood: FloodControl
    owner: Owner
    hello: Hello | None = None  # the remote's, once received (its ``have`` dropped)
    active: bool = False  # the one link to hello.node (§3)
    # Its remote proved who it is: what it says of others (peers) is heard.
    # Protocol 1 has no proof, so a completed handshake is all it takes.
    verified: bool = False
    left: bool = False  # the remote node sent its own leave
    errors: int = 0  # error frames received: a second one closes the link
    bad_signatures: int = 0  # events it brought whose signature did not hold (§4)
    bad_logged: float = -3600.0  # when that was last logged
    # Where it is in the history while it cannot take everything at once
    # (catch-up, a full outbox); None when it is up to date (chat.flow).
    cursor: Cursor | None = None
    serial: int = field(default_factory=lambda: next(_serials))  # names it in the history
    catch_up_seq: int = 0  # the remote's own seq when it said hello: later ones are new
    catch_up_left: int = 0  # own events still allowed as catch-up (the large budget)
    # Ours: the history's end when its handshake completed; None once our
    # catch-up is all sent and ``caught_up`` said. Theirs: ``live`` once
    # they said it (or CATCH_UP_WINDOW passed): their events are live.
    catch_up_end: int | None = None
    live: bool = False
    up_at: float = 0.0  # trio time the handshake completed
    on_up: Callable[[], None] | None = None  # the dialler's, told when the handshake completes
    text_only: bool = False  # it came to a closed group's plain-text port (§8)
    handshake: Handshake | None = None  # until both proofs have passed (§3)
    put: Callable[[bytes], bool] = field(init=False)

    def __post_init__(self) -> None:
        self.put = self.conn.outbox.put  # bound once: fan-out calls it per recipient
        self.conn.handler = self

    def on_frame(self, frame: Frame | TextLine) -> float:
        return self.owner.link_frame(self, frame)

    def on_drained(self) -> None:
        self.owner.link_drained(self)

    def on_silent(self) -> None:
        self.owner.link_silent(self)

    @property
    def node(self) -> str:
        """The remote's node id ("" before its hello)."""
        return self.hello.node if self.hello else ""

    @property
    def name(self) -> str:
        return self.hello.name if self.hello else self.where

    @property
    def where(self) -> str:
        """The remote end of the connection, ``ip:port``."""
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
