"""Per-link flow, without I/O: flood budgets, and a lagging link's place in history.

Plain classes driven by the node with time passed in, unit-tested without
trio. The policies are written down in docs/PROTOCOL.md ("Flood control",
"Back-pressure").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping

from chat.protocol import ProtocolError
from chat.state import History


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


class OriginBudgets:
    """A token bucket per origin, for events relayed from anywhere.

    An honest first hop holds each origin to ``--rate``; this bounds what
    arrives of one origin whatever path it takes (``--origin-rate``). Only
    new events are charged. At most ``max_origins`` buckets are kept, the
    least recently charged forgotten first.
    """

    __slots__ = ("_buckets", "burst", "max_origins", "rate")

    def __init__(self, rate: float, burst: float, max_origins: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_origins = max_origins
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, origin: str, now: float) -> float:
        """Spend one of ``origin``'s tokens; the seconds to wait before the next."""
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.get(origin)
        if bucket is None:
            bucket = self._buckets[origin] = TokenBucket(self.rate, self.burst)
            while len(self._buckets) > self.max_origins:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(origin)
        return bucket.take(now)


class Cursor:
    """Where a link is in the history while it cannot take everything at once.

    Order per origin must hold on each link: once anything waits, all that
    comes after it waits too. Rather than a queue of its own, a link that
    fell behind (a full outbox, or the catch-up of a newcomer) keeps a
    number into the history and is refilled from there as its writer
    drains (:meth:`refill`): a slow reader costs a few bytes, however far
    behind it is. Events that left the history meanwhile are skipped (the
    receiver reports the gap). Skipped too: events from the link itself
    (``serial``, flooding never sends an event back), those of the remote
    node, and with ``have`` (a newcomer's catch-up, §3) what it has.
    """

    __slots__ = ("have", "next", "node", "serial")

    def __init__(
        self, start: int, *, serial: int, node: str, have: Mapping[str, int] | None = None
    ) -> None:
        self.next = start
        self.serial = serial
        self.node = node
        self.have = have

    def _pending(self, history: History, start: int) -> Iterator[tuple[int, bytes]]:
        have = self.have
        for number in range(max(start, history.first), history.end):
            item = history.item(number)
            if item is None:
                continue
            event, source = item
            if source == self.serial or event.origin == self.node:
                continue
            if have is not None and event.seq <= have.get(event.origin, 0):
                continue
            yield number, event.raw

    def refill(self, history: History, put: Callable[[bytes], bool]) -> bool:
        """Put what the link lacks while ``put`` takes it; True once caught up."""
        for number, raw in self._pending(history, self.next):
            if not put(raw):
                self.next = number
                return False
        self.next = history.end
        return True

    def rest(self, history: History, budget: int) -> bytes:
        """What is still to send, as bytes: its most recent ``budget`` bytes."""
        pending = [raw for _, raw in self._pending(history, self.next)]
        total, start = 0, len(pending)
        while start > 0 and total + len(pending[start - 1]) <= budget:
            start -= 1
            total += len(pending[start])
        return b"".join(pending[start:])
