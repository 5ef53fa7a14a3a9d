"""Who is in the group, as a person sees it, and the lines shown (no I/O).

:class:`Membership` turns delivered events into :class:`Entry` lines: it
keeps each origin's name, identity and presence, shows a departure once
however many reports of it arrive, and tells names apart when two present
members' names look alike (§2, §4): ``bob~Ab3x``, the first characters of
each one's fingerprint. § refers to ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace

from chat.identity import Who, who_of
from chat.keys import fingerprint, unb64
from chat.names import skeleton
from chat.protocol import Event
from chat.state import MAX_ORIGINS, Delivery, Gap


@dataclass(slots=True)  # (not frozen, like Event: made for every line a node shows)
class Entry:
    """One line of the chat as shown to a person, before formatting.

    Nothing changes one once made: a changed line is a ``replace``.
    """

    kind: str  # an event kind, "gap" or "warning"
    ts: float
    who: str  # the display name of whom the line is about
    text: str = ""  # msg: the text; nick: the new name; warning: what to know
    missed: int = 0  # gap only
    history: bool = False
    event: Event | None = None  # the protocol event (None for a gap or a warning)
    origin: str = ""
    sent: float | None = None  # the claimed time, when ``ts`` is the arrival (chat.screen)
    # The origin's (chat.identity): shown with --json, not part of the line.
    fingerprint: str = field(default="", compare=False)
    # False for an event of a kind this node does not know (§4): no line for
    # a person, but --json passes its fields through.
    shown: bool = True
    action: bool = False  # a /me line: "* alice waves"
    to: str = ""  # a private message's recipient (a node id), shown to it alone
    outgoing: bool = False  # a private message this node sent: "-> bob: text"
    # A plain-text client gone with the node that hosted it (depart_hosted):
    # its node id; ``event`` is its host's leave or the report of its loss.
    subject: str = ""


@dataclass(slots=True)
class Member:
    node: str
    name: str
    present: bool = True
    fingerprint: str = ""  # its identity's, or its run key's (chat.identity.Who)
    person: bool = False  # an identity certified it
    host: str = ""  # the node vouching for it (a plain-text client)
    box: bytes = b""  # its box key, for private messages (chat.private)
    since: float = 0.0  # when it was first heard of (time of day)
    skeleton: str = ""  # what its name looks like (chat.names)
    counted: str = ""  # the fingerprint it is counted under while present


class Membership:
    """Names, identities and presence of the origins heard of; decides what is shown.

    A departure (``leave`` or any number of ``lost`` reports) is shown once;
    a departed node heard from again is present again (§4).
    """

    def __init__(self, max_members: int = MAX_ORIGINS) -> None:
        self.max_members = max_members
        self._members: OrderedDict[str, Member] = OrderedDict()
        # How many present members' names look like each skeleton: clashes
        # in O(1), not a scan of every member per line (a hub knows thousands).
        self._looks: Counter[str] = Counter()
        # The same, per (skeleton, fingerprint): one person under one name
        # twice (a restarted node's old run beside its new one) is no clash.
        self._same: Counter[tuple[str, str]] = Counter()
        # Nodes that vouched for a plain-text client heard of (depart_hosted),
        # forgotten when they depart.
        self._hosts: set[str] = set()

    def __len__(self) -> int:
        return len(self._members)

    def get(self, node: str) -> Member | None:
        return self._members.get(node)

    def present(self) -> list[Member]:
        return [m for m in self._members.values() if m.present]

    def display_name(self, node: str) -> str:
        """``name``, or ``name~Ab3x`` while a present member's name looks the same (§2)."""
        member = self._members.get(node)
        if member is None:
            return node[:8]
        same = self._same[member.skeleton, member.fingerprint]
        if self._looks[member.skeleton] - same > 0:  # another person looks like it
            return f"{member.name}~{tag(member.fingerprint)}"
        return member.name

    def find(self, name: str) -> list[Member]:
        """Present members shown as ``name`` (``bob`` or ``bob~Ab3x``)."""
        base, _, suffix = name.partition("~")
        return [
            m
            for m in self._members.values()
            if m.present and m.name == base and (not suffix or tag(m.fingerprint) == suffix)
        ]

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
            self._heard(event)
            return self._depart(event.node, event, history)
        if event.kind == "nick":
            old = self.display_name(event.origin) if member else event.name
            self._heard(event)
            if old == event.name:
                return None
            return self._entry(event, history, old, text=event.name)
        if event.kind == "leave":
            self._heard(event, present=member is None or member.present)
            return self._depart(event.origin, event, history)
        self._heard(event)
        entry = self._entry(event, history, self.display_name(event.origin), text=event.text)
        if event.kind == "msg" and event.extra.get("me") is True:
            return replace(entry, action=True)  # /me (§4): an older node shows <name> text
        if not event.known:
            # Kept and forwarded, not shown (§4); a pm is opened by chat.screen.
            return replace(entry, shown=False, to=str(event.extra.get("to", "")))
        return entry

    def _depart(self, node: str, event: Event, history: bool) -> Entry | None:
        member = self._members.get(node)
        if member is None or not member.present:
            return None
        who = self.display_name(node)
        self._set(member, member.name, present=False)
        return self._entry(event, history, who)

    def depart_hosted(self, host: str, event: Event, history: bool) -> list[Entry]:
        """The plain-text clients ``host`` vouched for go with it (its leave
        or loss, ``event``): lost, one line each, so none stays present."""
        if host not in self._hosts:
            return []  # (most departures: nobody it vouched for was heard of)
        self._hosts.discard(host)
        out = []
        for member in [m for m in self._members.values() if m.present and m.host == host]:
            who = self.display_name(member.node)
            self._set(member, member.name, present=False)
            entry = self._entry(event, history, who)
            out.append(replace(entry, kind="lost", subject=member.node))
        return out

    def _heard(self, event: Event, present: bool = True) -> Who | None:
        node = event.origin
        member = self._members.get(node)
        if member is None:
            member = self._members[node] = Member(
                node, event.name, present=False, fingerprint=fingerprint(event.pub)
            )
            member.since = time.time()
            while len(self._members) > self.max_members:
                _, forgotten = self._members.popitem(last=False)
                self._set(forgotten, forgotten.name, present=False)
        else:
            self._members.move_to_end(node)
        who = None
        if event.kind in ("join", "nick"):
            who = who_of(event)
            member.fingerprint, member.person, member.host = who.fingerprint, who.person, who.host
            if who.host:
                self._hosts.add(who.host)
                if len(self._hosts) > self.max_members:  # (bounded like the members)
                    self._hosts.pop()
            member.box = unb64(str(event.extra.get("box", "")), 32) or b""
        self._set(member, event.name, member.present or present)
        return who

    def _set(self, member: Member, name: str, present: bool) -> None:
        if (
            present
            and member.present
            and name == member.name
            and member.counted == member.fingerprint
        ):
            return  # (most events: a present member's message, nothing to recount)
        if member.present:
            self._looks[member.skeleton] -= 1
            self._same[member.skeleton, member.counted] -= 1
        if name != member.name or not member.skeleton:
            member.skeleton = skeleton(name)
        member.name, member.present = name, present
        if present:
            member.counted = member.fingerprint
            self._looks[member.skeleton] += 1
            self._same[member.skeleton, member.counted] += 1

    def _entry(self, event: Event, history: bool, who: str, text: str = "") -> Entry:
        member = self._members.get(event.origin)
        return Entry(
            event.kind,
            event.ts,
            who,
            text,
            history=history,
            event=event,
            origin=event.origin,
            fingerprint=member.fingerprint if member else "",
        )


def tag(fp: str) -> str:
    """The four characters of a fingerprint that tell look-alike names apart."""
    return fp.removeprefix("SHA256:")[:4]
