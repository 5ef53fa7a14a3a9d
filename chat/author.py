"""Authors: the origins a node creates events for (§4, §9).

A node creates events for itself and for each plain-text client it hosts.
An :class:`Author` numbers them and encodes each once, at birth; the bytes
are what every node forwards unchanged (§5).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from chat.protocol import Event, EventKind, make_event


@dataclass(eq=False, slots=True)
class Author:
    """One origin of events created here: its id, name and last seq."""

    name: str
    id: str = field(default_factory=lambda: secrets.token_hex(16))
    seq: int = 0
    joined: float = 0.0  # ts of its join: earlier events are history to it

    def make(self, kind: EventKind, ts: float, **extra: str) -> Event:
        """The author's next event, with its wire bytes."""
        self.seq += 1
        return make_event(kind, self.id, self.seq, ts, self.name, **extra)
