"""Who is in the group, as a person sees it, and the lines shown (no I/O).

:class:`Membership` turns delivered events into :class:`Entry` lines: it
keeps each origin's name and presence, shows a departure once however many
reports of it arrive, and tells names apart when two present nodes share
one (§2, §4). § refers to ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from chat.protocol import Event
from chat.state import MAX_ORIGINS, Delivery, Gap


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
    sent: float | None = None  # the claimed time, when ``ts`` is the arrival (chat.screen)


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

    def __init__(self, max_members: int = MAX_ORIGINS) -> None:
        self.max_members = max_members
        self._members: OrderedDict[str, Member] = OrderedDict()
        # How many present members bear each name: collisions in O(1), not
        # a scan of every member per line shown (a hub may know thousands).
        self._names: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._members)

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
