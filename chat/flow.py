"""Per-link flow, without I/O: flood budgets and the backlog of a full outbox.

Plain classes driven by the node with time passed in, unit-tested without
trio. The policies are written down in docs/PROTOCOL.md ("Flood control",
"Back-pressure").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from chat.protocol import ProtocolError


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; rate 0 is no limit."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.last: float | None = None

    def take(self, now: float) -> float:
        """Spend one token; the seconds to wait before the next may be spent."""
        if self.rate <= 0:
            return 0.0
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class FloodControl:
    """Per-connection budgets, as IRC servers keep them.

    Events the connected node originates itself (and a plain-text client's
    lines) draw on the ``own`` bucket; forwarded traffic on the much larger
    ``link`` bucket. ``charge`` answers how long to stop reading; a
    connection that has had to wait on every frame for ``patience`` seconds
    is ``exceeded`` and is to be cut off.
    """

    __slots__ = ("link", "over_since", "own", "patience")

    def __init__(
        self,
        own_rate: float = 20.0,
        own_burst: float = 50.0,
        link_rate: float = 5000.0,
        patience: float = 10.0,
    ) -> None:
        self.own = TokenBucket(own_rate, own_burst)
        self.link = TokenBucket(link_rate, link_rate)
        self.patience = patience
        self.over_since: float | None = None

    def charge(self, own: bool, now: float) -> float:
        wait = (self.own if own else self.link).take(now)
        if not wait:
            self.over_since = None
        elif self.over_since is None:
            self.over_since = now
        return wait

    def exceeded(self, now: float) -> bool:
        return self.over_since is not None and now - self.over_since >= self.patience

    def admit(self, own: bool, now: float) -> float:
        """:meth:`charge`, raising ``rate_limited`` once patience runs out."""
        pause = self.charge(own, now)
        if pause and self.exceeded(now):
            raise ProtocolError("rate_limited", f"over the rate limit for {self.patience:g} s")
        return pause


EventKey = tuple[str, int]


class Backlog:
    """Keys of events that did not fit a link's outbox, oldest first.

    Order per origin must hold on each link: once anything waits here,
    everything after it waits here too. Only keys are kept; the bytes are
    looked up in the history when the writer drains (:meth:`refill`), so a
    slow reader costs a few bytes per event, not a copy of each. At most
    ``limit`` keys are kept (the history's size: anything older has left it
    anyway); the oldest go first, and the receiver reports the gap.
    """

    __slots__ = ("_keys", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._keys: deque[EventKey] = deque()

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: EventKey) -> None:
        if len(self._keys) >= self.limit:
            self._keys.popleft()
        self._keys.append(key)

    def refill(
        self, lookup: Callable[[EventKey], bytes | None], put: Callable[[bytes], bool]
    ) -> bool:
        """Move events to the outbox with ``put`` while it takes them.

        Keys whose event left the history are skipped. True once empty.
        """
        keys = self._keys
        while keys:
            raw = lookup(keys[0])
            if raw is not None and not put(raw):
                return False
            keys.popleft()
        return True

    def drain(self, lookup: Callable[[EventKey], bytes | None]) -> Iterable[bytes]:
        """Everything still waiting, as bytes, emptying the backlog."""
        keys, self._keys = self._keys, deque()
        for key in keys:
            raw = lookup(key)
            if raw is not None:
                yield raw
