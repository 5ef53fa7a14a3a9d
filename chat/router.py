"""Where events go: de-duplication, order, history, flooding, catch-up, display.

The :class:`Router` is the node's event half (§4-§6): every event, received
or created here, passes through :meth:`Router.receive` or
:meth:`Router.originate`; it floods the bytes unchanged to the active links
(§5), keeps them for catch-up (§6), orders them per origin and shows them
to the person and the plain-text clients. It opens no connection and
starts no task. § refers to ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import trio

from chat.author import Author
from chat.changes import Changes
from chat.flow import Backlog
from chat.link import Link
from chat.members import Entry, Membership
from chat.protocol import Event, EventKind
from chat.state import Delivery, History, Sequencer
from chat.textclient import TextAudience

Sink = Callable[[Entry], None]
EventHook = Callable[[Link | None, Event], None]


class Router:
    """The events of one node and the links they go out on."""

    def __init__(
        self, me: Author, *, history: int, hold_back: float, sink: Sink, on_event: EventHook
    ) -> None:
        self.me = me
        self.sink = sink
        self.on_event = on_event  # the role's hook, for every new event
        self.sequencer = Sequencer(hold_back=hold_back)
        self.history = History(history)
        self.members = Membership()
        self.neighbours: dict[str, Link] = {}  # node id -> the one active link to it
        self.audience = TextAudience()  # plain-text clients that have not left
        self.gaps = Changes()  # a gap opened: the gap timer's deadline may move
        self.changes = Changes()  # an event was accepted or a line shown

    def is_new(self, origin: str, seq: int) -> bool:
        return self.sequencer.is_new(origin, seq)

    def receive(self, link: Link, event: Event) -> None:
        """An event from ``link``: new ones are kept, flooded and shown (§5)."""
        deliveries = self.sequencer.accept(event, trio.current_time())
        if deliveries is None:
            return  # seen before
        self.history.add(event)
        self._flood(event, link)
        self.on_event(link, event)
        if deliveries:
            self.deliver(deliveries)
        else:
            self.gaps.notify()
        self.changes.notify()

    def originate(self, author: Author, kind: EventKind, **extra: str) -> Event:
        """Create an event of ``author``'s: encode once, record, flood, show."""
        event = author.make(kind, time.time(), **extra)
        self.sequencer.record_own(author.id, author.seq)
        self.history.add(event)
        self._flood(event, None)
        self.on_event(None, event)
        self.deliver([event])
        return event

    def expire(self) -> None:
        """Give up the gaps open too long; show what they held (§5)."""
        self.deliver(self.sequencer.expire(trio.current_time()))

    # ------------------------------------------------------------ sending

    def catch_up(self, link: Link, have: Mapping[str, int]) -> None:
        """Send ``link`` every event of the history its ``have`` lacks (§6)."""
        for event in self.history.missing_for(have, skip_origin=link.node):
            self.send(link, event)

    def _flood(self, event: Event, came_from: Link | None) -> None:
        # The hot path of a relay: one put per recipient of the bytes as
        # received, no per-recipient object, task or call chain.
        raw = event.raw
        for link in self.neighbours.values():
            if link is not came_from and (link.backlog or not link.put(raw)):
                self._defer(link, event)

    def send(self, link: Link, event: Event) -> None:
        if link.backlog or not link.put(event.raw):
            self._defer(link, event)

    def _defer(self, link: Link, event: Event) -> None:
        if link.backlog is None:
            link.backlog = Backlog(self.history.size)
        link.backlog.add(event.key)

    def refill(self, link: Link) -> None:
        """The writer caught up: move backlog events from history to the outbox."""
        if link.backlog is not None and link.backlog.refill(self.history.raw, link.conn.send):
            link.backlog = None

    def unsent(self, link: Link) -> bytes:
        """What waits in ``link``'s backlog, as bytes, emptying it."""
        if link.backlog is None:
            return b""
        rest = b"".join(link.backlog.drain(self.history.raw))
        link.backlog = None
        return rest

    # ------------------------------------------------------------ showing

    def deliver(self, deliveries: Iterable[Delivery]) -> None:
        """Show delivered events (and gaps) to the person and the text clients."""
        joined = self.me.joined
        for delivery in deliveries:
            if (
                isinstance(delivery, Event)
                and delivery.kind == "lost"
                and (delivery.node == self.me.id or delivery.node in self.neighbours)
            ):
                # A stale report (a cut since healed) about us or about a
                # node we are linked to right now: kept and forwarded, not shown.
                continue
            entry = self.members.apply(delivery, delivery.ts < joined)
            if entry is not None:
                self.sink(entry)
                self.audience.show(entry)
        self.changes.notify()
