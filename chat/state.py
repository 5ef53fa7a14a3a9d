"""Pure state of a node: order per origin and history (no I/O).

Everything here is plain Python driven by the node; time is passed in as a
number, so the rules are unit-tested without trio. § refers to
``docs/PROTOCOL.md``.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from chat.protocol import MAX_HAVE, Event

HOLD_BACK = 5.0  # seconds a gap may stay open before held events go out (§5)
MAX_ORIGINS = 50_000  # origins remembered; the least recently heard are forgotten
MAX_HELD_BYTES = 1 << 20  # bytes held back behind gaps, per origin
MAX_TOTAL_HELD = 16 << 20  # bytes held back behind gaps, all origins
HISTORY_BYTES = 64 << 20  # bytes of history kept (--history-bytes)


@dataclass(frozen=True, slots=True)
class Gap:
    """``missed`` events of ``origin`` that will not be delivered (§5)."""

    origin: str
    name: str
    missed: int
    ts: float  # the time of the first event after the gap


Delivery = Event | Gap


class _Origin:
    __slots__ = ("have", "held", "held_bytes", "since")

    def __init__(self, have: int) -> None:
        self.have = have  # every seq <= have is delivered or given up
        # seq > have + 1, waiting for the gap: the event and when it arrived.
        self.held: dict[int, tuple[Event, float]] = {}
        self.held_bytes = 0
        self.since = 0.0  # when the oldest event now held arrived


class Sequencer:
    """De-duplication and per-origin order with hold-back (§5).

    ``accept`` answers None for a duplicate, else the events (and gaps) now
    deliverable in order. An event held behind a gap waits at most
    ``hold_back`` seconds from its own arrival: filling part of a gap does
    not restart anyone's clock, so a remote cannot keep events held forever
    by filling one gap at a time.

    Memory is bounded: at most ``max_origins`` origins are remembered
    (least recently heard forgotten first); an origin holds at most
    ``max_held`` events and ``max_held_bytes`` bytes, and all origins
    together ``max_total_held`` bytes. Past a bound the gap is given up at
    once (the oldest first, for the total), as if its time had run out.
    """

    def __init__(
        self,
        hold_back: float = HOLD_BACK,
        max_origins: int = MAX_ORIGINS,
        max_held: int = 1000,
        max_held_bytes: int = MAX_HELD_BYTES,
        max_total_held: int = MAX_TOTAL_HELD,
    ) -> None:
        self.hold_back = hold_back
        self.max_origins = max_origins
        self.max_held = max_held
        self.max_held_bytes = max_held_bytes
        self.max_total_held = max_total_held
        self.held_bytes = 0  # bytes of events held, all origins
        self._origins: OrderedDict[str, _Origin] = OrderedDict()
        # (deadline, origin): the next gap to give up is on top. Stale
        # entries (the gap closed or its deadline moved) are skipped lazily,
        # so a deadline costs O(log n) however many gaps are open.
        self._deadlines: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._origins)

    def is_new(self, origin: str, seq: int) -> bool:
        track = self._origins.get(origin)
        return track is None or (seq > track.have and seq not in track.held)

    def have(self, origin: str) -> int:
        track = self._origins.get(origin)
        return track.have if track else 0

    def have_map(self, limit: int = MAX_HAVE) -> dict[str, int]:
        """``have`` for the ``limit`` origins heard from most recently (§3)."""
        out: dict[str, int] = {}
        for origin in reversed(self._origins):
            if len(out) >= limit:
                break
            out[origin] = self._origins[origin].have
        return out

    def record_own(self, origin: str, seq: int) -> None:
        """Note an event this node created itself: nothing to order."""
        track = self._origins.get(origin) or self._track(origin, seq - 1)
        track.have = seq
        self._origins.move_to_end(origin)

    def accept(self, event: Event, now: float) -> list[Delivery] | None:
        origin = event.origin
        track = self._origins.get(origin)
        if track is None:
            # The first event heard of an origin sets where it starts for us:
            # earlier seqs are neither waited for nor reported missed (§5).
            track = self._track(origin, event.seq - 1)
        else:
            self._origins.move_to_end(origin)
        seq = event.seq
        if seq <= track.have or seq in track.held:
            return None
        if seq != track.have + 1:
            return self._hold(origin, track, event, now)
        track.have = seq
        out: list[Delivery] = [event]
        held = track.held
        if held:
            while (nxt := held.pop(track.have + 1, None)) is not None:
                track.have += 1
                out.append(nxt[0])
                self._unhold(track, nxt[0])
            if held and len(out) > 1:
                # A partial fill: the rest keep their own arrival times. The
                # dict keeps arrival order, so the oldest is the first left.
                track.since = next(iter(held.values()))[1]
                heapq.heappush(self._deadlines, (track.since + self.hold_back, origin))
        return out

    def _hold(self, origin: str, track: _Origin, event: Event, now: float) -> list[Delivery]:
        if not track.held:
            track.since = now
            heapq.heappush(self._deadlines, (now + self.hold_back, origin))
        track.held[event.seq] = (event, now)
        size = len(event.raw)
        track.held_bytes += size
        self.held_bytes += size
        out: list[Delivery] = []
        if len(track.held) > self.max_held or track.held_bytes > self.max_held_bytes:
            out.extend(self._release(origin, track))
        while self.held_bytes > self.max_total_held:
            oldest = self._next_due()
            if oldest is None:  # (cannot happen: something is held)
                break
            out.extend(self._release(oldest, self._origins[oldest]))
        return out

    def _unhold(self, track: _Origin, event: Event) -> None:
        size = len(event.raw)
        track.held_bytes -= size
        self.held_bytes -= size

    def _next_due(self) -> str | None:
        """The origin whose gap is to be given up first, stale entries dropped."""
        deadlines = self._deadlines
        while deadlines:
            deadline, origin = deadlines[0]
            track = self._origins.get(origin)
            if track is not None and track.held and track.since + self.hold_back == deadline:
                return origin
            heapq.heappop(deadlines)
        return None

    def next_deadline(self) -> float | None:
        """When the oldest open gap is given up, if any is open."""
        origin = self._next_due()
        return None if origin is None else self._origins[origin].since + self.hold_back

    def expire(self, now: float) -> list[Delivery]:
        """Give up gaps open for ``hold_back`` seconds; deliver what they held."""
        out: list[Delivery] = []
        while (origin := self._next_due()) is not None:
            track = self._origins[origin]
            if now < track.since + self.hold_back:
                break
            out.extend(self._release(origin, track))
        return out

    def _release(self, origin: str, track: _Origin) -> list[Delivery]:
        out: list[Delivery] = []
        for seq in sorted(track.held):
            event = track.held[seq][0]
            if seq > track.have + 1:
                out.append(Gap(origin, event.name, seq - track.have - 1, event.ts))
            out.append(event)
            track.have = seq
        self.held_bytes -= track.held_bytes
        track.held_bytes = 0
        track.held.clear()
        return out

    def _track(self, origin: str, have: int) -> _Origin:
        track = self._origins[origin] = _Origin(have)
        while len(self._origins) > self.max_origins:
            _, forgotten = self._origins.popitem(last=False)
            self.held_bytes -= forgotten.held_bytes
        return track


class History:
    """The most recent events seen, oldest first, for catch-up (§6).

    Bounded twice: at most ``size`` events and ``max_bytes`` bytes of them
    (the oldest leave first). Events are numbered as they come; a link
    that cannot take everything at once keeps a number (a cursor) into
    the history instead of a copy, and each event records the link it came
    from (``source``), which flooding skips.
    """

    def __init__(self, size: int, max_bytes: int = HISTORY_BYTES) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: dict[int, tuple[Event, int]] = {}  # number -> (event, source)
        self.first = 0  # number of the oldest event held
        self.end = 0  # number the next event will get

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Event]:
        return (self._items[n][0] for n in range(self.first, self.end))

    def add(self, event: Event, source: int = 0) -> int | None:
        """Keep ``event``, which came from link ``source`` (0: made here).

        Answers its number, or None if it cannot be kept at all.
        """
        size = len(event.raw)
        if self.size <= 0 or size > self.max_bytes:
            return None
        number = self.end
        self._items[number] = (event, source)
        self.end += 1
        self.bytes += size
        while len(self._items) > self.size or self.bytes > self.max_bytes:
            old, _ = self._items.pop(self.first)
            self.bytes -= len(old.raw)
            self.first += 1
        return number

    def item(self, number: int) -> tuple[Event, int] | None:
        """The event numbered ``number`` and its source, if still held."""
        return self._items.get(number)

    def get(self, key: tuple[str, int]) -> Event | None:
        """The event of ``key`` (origin, seq), if held: a scan, for tests and
        tools (the relaying path keeps no index: a tuple and two dict
        operations per event)."""
        origin, seq = key
        return next((e for e in self if e.seq == seq and e.origin == origin), None)

    def missing_for(self, have: Mapping[str, int], skip_origin: str = "") -> Iterator[Event]:
        """Events the holder of ``have`` lacks, oldest first (§3, §6)."""
        for event in self:
            if event.seq > have.get(event.origin, 0) and event.origin != skip_origin:
                yield event

    def recent_start(self, budget: int, wanted: Callable[[Event, int], bool]) -> int:
        """The number from which the wanted events fit in ``budget`` bytes.

        Catch-up is sent from there on: a newcomer that lacks more than
        the budget gets the most recent part (§6).
        """
        total = 0
        for number in range(self.end - 1, self.first - 1, -1):
            event, source = self._items[number]
            if wanted(event, source):
                total += len(event.raw)
                if total > budget:
                    return number + 1
        return self.first
