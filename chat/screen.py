"""What a person is shown of the delivered events (no I/O).

Between :class:`~chat.members.Membership` (who is present) and the front
ends, three rules a remote must not be able to talk around (issue 11):

- ``[history]`` marks what was created before this node joined. Only an
  event that came as catch-up (before its link said ``caught_up``, §6
  readings) can be history: a chosen ``ts`` never turns a live event into
  history.
- A ``ts`` more than ``MAX_SKEW`` seconds from this node's clock (ahead;
  or behind, for a live event) is shown at the time it arrived, with the
  claimed time beside it (``Entry.sent``).
- A ``lost`` from another node about one heard from less than
  ``quiet_after`` seconds ago (the dead-link time; this node's own reports,
  of links it saw drop, are shown at once) is held until that time has passed since it
  was last heard, and dropped if it is heard from meanwhile: a report
  from anyone cannot make a member who is talking look gone. (So such a
  line may come after later lines of the node that reported it.)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from chat.identity import KnownNames
from chat.members import Entry, Membership
from chat.protocol import Event
from chat.state import MAX_ORIGINS, Delivery

MAX_SKEW = 300.0  # seconds a ts may be off this node's clock and still be shown as is


class Screen:
    """Decides each line shown; holds back ``lost`` reports that may be stale."""

    def __init__(
        self,
        members: Membership,
        quiet_after: float,
        own: str = "",
        known: KnownNames | None = None,
        max_origins: int = MAX_ORIGINS,
    ) -> None:
        self.max_origins = max_origins
        # Opens a private message to this node or a client it hosts (chat.router).
        self.private: Callable[[Entry], Entry] = lambda entry: entry
        self.members = members
        self.quiet_after = quiet_after
        self.own = own  # this node's id: what it saw itself is not in doubt
        self.known = known or KnownNames(None)  # names seen before, with whose identity
        self._heard: OrderedDict[str, float] = OrderedDict()  # origin -> when last heard
        # node -> (when to show it, the lost event, and how it came: wall, joined, live)
        self._held: dict[str, tuple[float, Event, float, float, bool]] = {}

    def show(
        self, delivery: Delivery, *, now: float, wall: float, joined: float, live: bool
    ) -> list[Entry]:
        """The line for ``delivery``, if any. ``now`` is the node's clock
        (for timers), ``wall`` the time of day, ``live`` whether it came
        after its link's catch-up (or was made here)."""
        if isinstance(delivery, Event):
            origin = delivery.origin
            self._heard[origin] = now
            self._heard.move_to_end(origin)
            if len(self._heard) > self.max_origins:
                self._heard.popitem(last=False)
            self._held.pop(origin, None)  # heard from: any report of its loss was stale
            if delivery.kind == "lost" and origin != self.own:
                last = self._heard.get(delivery.node)
                if last is not None and now - last < self.quiet_after:
                    due = last + self.quiet_after
                    self._held[delivery.node] = (due, delivery, wall, joined, live)
                    return []
        entry = self._line(delivery, wall=wall, joined=joined, live=live)
        lines = [] if entry is None else [entry, *self._hosted(delivery, entry)]
        if isinstance(delivery, Event) and delivery.kind in ("join", "nick"):
            lines += self._name_check(delivery, wall)
        return lines

    def _name_check(self, event: Event, wall: float) -> list[Entry]:
        """Once a session: a name seen before with another identity (trust on first use)."""
        member = self.members.get(event.origin)
        if member is None or not member.person or event.origin == self.own:
            return []
        before = self.known.check(event.name, member.fingerprint)
        if before is None:
            return []
        text = (
            f"{event.name} is not the {event.name} you saw before"
            f" ({member.fingerprint} now, {before} before)"
        )
        who = self.members.display_name(event.origin)
        return [
            Entry("warning", wall, who, text, origin=event.origin, fingerprint=member.fingerprint)
        ]

    def due(self, now: float) -> list[Entry]:
        """The held ``lost`` reports whose time has come, as lines."""
        out = []
        for node, (at, event, wall, joined, live) in list(self._held.items()):
            if now >= at:
                del self._held[node]
                entry = self._line(event, wall=wall, joined=joined, live=live)
                if entry is not None:
                    out += [entry, *self._hosted(event, entry)]
        return out

    def _hosted(self, delivery: Delivery, entry: Entry) -> list[Entry]:
        """A node gone (its leave, or a report of its loss): its plain-text
        clients, whose events it made, are gone too (§9)."""
        if not isinstance(delivery, Event) or entry.kind not in ("leave", "lost"):
            return []
        gone = delivery.node if delivery.kind == "lost" else delivery.origin
        return self.members.depart_hosted(gone, delivery, entry.history)

    def _line(self, delivery: Delivery, *, wall: float, joined: float, live: bool) -> Entry | None:
        ts = delivery.ts
        skewed = ts > wall + MAX_SKEW or (live and ts < wall - MAX_SKEW)
        history = not live and not skewed and ts < joined
        entry = self.members.apply(delivery, history)
        if entry is not None and entry.kind == "pm":
            entry = self.private(entry)  # opened if it is to us (chat.router)
        if entry is not None and skewed:
            entry = replace(entry, ts=wall, sent=ts)
        return entry
