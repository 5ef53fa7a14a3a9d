"""Pure state of a node: order per origin and history (no I/O).

Everything here is plain Python driven by the node; time is passed in as a
number, so the rules are unit-tested without trio. § refers to
``docs/PROTOCOL.md``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from chat.protocol import MAX_HAVE, Event

HOLD_BACK = 5.0  # seconds a gap may stay open before held events go out (§5)


@dataclass(frozen=True, slots=True)
class Gap:
    """``missed`` events of ``origin`` that will not be delivered (§5)."""

    origin: str
    name: str
    missed: int
    ts: float  # the time of the first event after the gap


Delivery = Event | Gap


class _Origin:
    __slots__ = ("have", "held", "held_since")

    def __init__(self, have: int) -> None:
        self.have = have  # every seq <= have is delivered or given up
        self.held: dict[int, Event] = {}  # seq > have + 1, waiting for the gap
        self.held_since = 0.0


class Sequencer:
    """De-duplication and per-origin order with hold-back (§5).

    ``accept`` answers None for a duplicate, else the events (and gaps) now
    deliverable in order. Memory is bounded: at most ``max_origins`` origins
    are remembered (least recently heard forgotten first) and at most
    ``max_held`` events held per origin (past that the gap is given up at
    once).
    """

    def __init__(
        self, hold_back: float = HOLD_BACK, max_origins: int = 100_000, max_held: int = 1000
    ) -> None:
        self.hold_back = hold_back
        self.max_origins = max_origins
        self.max_held = max_held
        self._origins: OrderedDict[str, _Origin] = OrderedDict()
        self._gapped: set[str] = set()  # origins with held events

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
        track = self._origins.get(event.origin)
        if track is None:
            # The first event heard of an origin sets where it starts for us:
            # earlier seqs are neither waited for nor reported missed (§5).
            track = self._track(event.origin, event.seq - 1)
        else:
            self._origins.move_to_end(event.origin)
        seq = event.seq
        if seq <= track.have or seq in track.held:
            return None
        if seq != track.have + 1:
            if not track.held:
                track.held_since = now
                self._gapped.add(event.origin)
            track.held[seq] = event
            if len(track.held) > self.max_held:
                return self._release(event.origin, track)
            return []
        track.have = seq
        out: list[Delivery] = [event]
        while track.held and (nxt := track.held.pop(track.have + 1, None)):
            track.have += 1
            out.append(nxt)
        if not track.held:
            self._gapped.discard(event.origin)
        elif len(out) > 1:
            # A partial fill: what is still held waits behind a gap that is
            # newly exposed, and gets its own full hold-back.
            track.held_since = now
        return out

    def next_deadline(self) -> float | None:
        """When the oldest open gap is given up, if any is open."""
        if not self._gapped:
            return None
        return min(self._origins[o].held_since for o in self._gapped) + self.hold_back

    def expire(self, now: float) -> list[Delivery]:
        """Give up gaps open for ``hold_back`` seconds; deliver what they held."""
        out: list[Delivery] = []
        for origin in sorted(self._gapped):
            track = self._origins[origin]
            if now >= track.held_since + self.hold_back:
                out.extend(self._release(origin, track))
        return out

    def _release(self, origin: str, track: _Origin) -> list[Delivery]:
        out: list[Delivery] = []
        for seq in sorted(track.held):
            event = track.held[seq]
            if seq > track.have + 1:
                out.append(Gap(origin, event.name, seq - track.have - 1, event.ts))
            out.append(event)
            track.have = seq
        track.held.clear()
        self._gapped.discard(origin)
        return out

    def _track(self, origin: str, have: int) -> _Origin:
        track = self._origins[origin] = _Origin(have)
        while len(self._origins) > self.max_origins:
            forgotten, _ = self._origins.popitem(last=False)
            self._gapped.discard(forgotten)
        return track


class History:
    """The most recent events seen, oldest first, for catch-up (§6)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._events: deque[Event] = deque()
        self._by_key: dict[tuple[str, int], Event] = {}

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def add(self, event: Event) -> None:
        if self.size <= 0:
            return
        self._events.append(event)
        self._by_key[event.key] = event
        if len(self._events) > self.size:
            del self._by_key[self._events.popleft().key]

    def get(self, key: tuple[str, int]) -> Event | None:
        return self._by_key.get(key)

    def raw(self, key: tuple[str, int]) -> bytes | None:
        """The wire bytes of the event ``key``, if it is still held."""
        event = self._by_key.get(key)
        return event.raw if event is not None else None

    def missing_for(self, have: Mapping[str, int], skip_origin: str = "") -> Iterator[Event]:
        """Events the holder of ``have`` lacks, oldest first (§3, §6)."""
        for event in self._events:
            if event.seq > have.get(event.origin, 0) and event.origin != skip_origin:
                yield event
