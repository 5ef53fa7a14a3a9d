"""Pure state of a node: order per origin, history, membership (no I/O).

Everything here is plain Python driven by the node; time is passed in as a
number, so the rules are unit-tested without trio. § refers to
``docs/PROTOCOL.md``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
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

    def missing_for(self, have: Mapping[str, int], skip_origin: str = "") -> Iterator[Event]:
        """Events the holder of ``have`` lacks, oldest first (§3, §6)."""
        for event in self._events:
            if event.seq > have.get(event.origin, 0) and event.origin != skip_origin:
                yield event


# --------------------------------------------------------------------------
# Membership: who is in the group, as a person sees it.


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the chat as shown to a person, before formatting."""

    kind: str  # an event kind, or "gap"
    ts: float
    who: str  # the display name of whom the line is about
    text: str = ""  # msg: the text; nick: the new name
    missed: int = 0  # gap only
    history: bool = False
    event: Event | None = None  # the protocol event (None for a gap)
    origin: str = ""


@dataclass(slots=True)
class Member:
    node: str
    name: str
    present: bool = True


class Membership:
    """Names and presence of the origins heard of; decides what is shown.

    A departure (``leave`` or any number of ``lost`` reports) is shown once;
    a departed node heard from again is present again (§4).
    """

    def __init__(self, max_members: int = 100_000) -> None:
        self.max_members = max_members
        self._members: OrderedDict[str, Member] = OrderedDict()
        # How many present members bear each name: collisions in O(1), not
        # a scan of every member per line shown (a hub may know thousands).
        self._names: Counter[str] = Counter()

    def get(self, node: str) -> Member | None:
        return self._members.get(node)

    def present(self) -> list[Member]:
        return [m for m in self._members.values() if m.present]

    def display_name(self, node: str) -> str:
        """``name``, or ``name#abcd`` when another present node shares it (§2)."""
        member = self._members.get(node)
        if member is None:
            return node[:8]
        if self._names[member.name] > member.present:
            return f"{member.name}#{node[:4]}"
        return member.name

    def apply(self, delivery: Delivery, history: bool) -> Entry | None:
        """Update membership with a delivered event; the line to show, if any."""
        if isinstance(delivery, Gap):
            return Entry(
                "gap",
                delivery.ts,
                self.display_name(delivery.origin)
                if delivery.origin in self._members
                else delivery.name,
                missed=delivery.missed,
                history=history,
                origin=delivery.origin,
            )
        event = delivery
        member = self._members.get(event.origin)
        if event.kind == "lost":
            # About another node; the origin is only the one reporting it.
            self._heard(event.origin, event.name)
            return self._depart(event.node, event, history)
        if event.kind == "nick":
            old = self.display_name(event.origin) if member else event.name
            self._heard(event.origin, event.name)
            if old == event.name:
                return None
            return self._entry(event, history, old, text=event.name)
        if event.kind == "leave":
            self._heard(event.origin, event.name, present=member is None or member.present)
            return self._depart(event.origin, event, history)
        self._heard(event.origin, event.name)
        return self._entry(event, history, self.display_name(event.origin), text=event.text)

    def _depart(self, node: str, event: Event, history: bool) -> Entry | None:
        member = self._members.get(node)
        if member is None or not member.present:
            return None
        who = self.display_name(node)
        self._set(member, member.name, present=False)
        return self._entry(event, history, who)

    def _heard(self, node: str, name: str, present: bool = True) -> None:
        member = self._members.get(node)
        if member is None:
            member = self._members[node] = Member(node, name, present=False)
            while len(self._members) > self.max_members:
                _, forgotten = self._members.popitem(last=False)
                self._set(forgotten, forgotten.name, present=False)
        else:
            self._members.move_to_end(node)
        self._set(member, name, member.present or present)

    def _set(self, member: Member, name: str, present: bool) -> None:
        if member.present:
            self._names[member.name] -= 1
        member.name, member.present = name, present
        if present:
            self._names[name] += 1

    @staticmethod
    def _entry(event: Event, history: bool, who: str, text: str = "") -> Entry:
        return Entry(
            event.kind, event.ts, who, text, history=history, event=event, origin=event.origin
        )


# --------------------------------------------------------------------------
# Flood control


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
