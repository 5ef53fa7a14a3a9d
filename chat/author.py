"""Authors: the origins a node creates events for (§4, §9).

A node creates events for itself and for each plain-text client it hosts.
An :class:`Author` holds the run key of one such origin (its node id is
the key's, §2), numbers its events, and encodes and signs each once, at
birth; the bytes are what every node forwards unchanged (§5). Its
``badge`` is what its ``join`` and ``nick`` carry to say who it is: a
person's certificate, or the voucher of the node hosting it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chat.keys import SigningKey
from chat.protocol import Event, make_event

_BADGED = frozenset({"join", "nick"})


@dataclass(eq=False, slots=True)
class Author:
    """One origin of events created here: its key, name and last seq."""

    name: str
    key: SigningKey = field(default_factory=SigningKey)
    badge: Mapping[str, str] = field(default_factory=dict)
    seq: int = 0
    joined: float = 0.0  # ts of its join: earlier events are history to it
    id: str = field(init=False)

    def __post_init__(self) -> None:
        self.id = self.key.node_id

    def make(self, kind: str, ts: float, **extra: Any) -> Event:
        """The author's next event, signed, with its wire bytes.

        ``text`` and ``node`` are a msg's and a lost's own members; the rest
        of ``extra`` are extension members (a pm's, a /me's), after the
        badge on join and nick.
        """
        self.seq += 1
        text, node = str(extra.pop("text", "")), str(extra.pop("node", ""))
        members = {**(self.badge if kind in _BADGED else {}), **extra}
        return make_event(
            kind, self.key, self.seq, ts, self.name, text=text, node=node, extra=members
        )
