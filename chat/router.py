"""Where events go: de-duplication, order, history, flooding, catch-up, display.

The :class:`Router` is the node's event half (§4-§6): every event, received
or created here, passes through :meth:`Router.receive` or
:meth:`Router.originate`; it floods the bytes unchanged to the active links
(§5), keeps them for catch-up (§6), orders them per origin and shows them
to the person and the plain-text clients. It opens no connection and
starts no task. § refers to ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import trio

from chat.author import Author
from chat.changes import Changes
from chat.flow import Cursor
from chat.identity import KnownNames
from chat.keys import node_id, verify
from chat.link import Link
from chat.members import Entry, Membership
from chat.names import text_problem
from chat.private import BoxKey, Sealed, seal
from chat.protocol import CaughtUp, Event
from chat.screen import Screen
from chat.state import MAX_ORIGINS, Delivery, History, Sequencer
from chat.textclient import TextAudience

MAX_SENT_PRIVATE = 1000  # private messages sent, remembered until shown back
BAD_LOG_EVERY = 60.0  # seconds between log lines about one link's bad signatures
CATCH_UP_BYTES = 4 << 20  # catch-up sent to a newcomer at most (its most recent part)
LAST_WORDS_BYTES = 1 << 20  # what a lagging link is still sent when this node leaves

log = logging.getLogger("chat")

Sink = Callable[[Entry], None]
EventHook = Callable[[Link | None, Event], None]


BUS_SOURCE = -1  # the history's source number of events read from the bus (chat.bus)


class Router:
    """The events of one node and the links they go out on."""

    def __init__(
        self,
        me: Author,
        *,
        history: int,
        history_bytes: int,
        hold_back: float,
        quiet_after: float,
        max_origins: int = MAX_ORIGINS,
        known: KnownNames | None = None,
        sink: Sink,
        on_event: EventHook,
    ) -> None:
        self.me = me
        self.sink = sink
        self.on_event = on_event  # the role's hook, for every new event
        self.sequencer = Sequencer(hold_back=hold_back, max_origins=max_origins)
        self.history = History(history, history_bytes)
        self.members = Membership(max_origins)
        # What is shown, and when.
        self.screen = Screen(self.members, quiet_after, me.id, known, max_origins)
        self.neighbours: dict[str, Link] = {}  # node id -> the one active link to it
        self.audience = TextAudience()  # plain-text clients that have not left
        self.gaps = Changes()  # a gap opened: the gap timer's deadline may move
        # Private messages (chat.private): the box keys of who reads them here
        # (this node, the clients it hosts), what we sent (we cannot open it),
        # and who last wrote to each of ours privately (/reply).
        self.boxes: dict[str, BoxKey] = {}
        self.sent_private: OrderedDict[tuple[str, int], tuple[str, str]] = OrderedDict()
        self.last_private: dict[str, str] = {}
        self.screen.private = self._open_private
        self.signature_checks = 0  # events whose signature was checked (§4)
        self.bad_signatures = 0  # and dropped because it did not hold
        self.changes = Changes()  # an event was accepted or a line shown
        # Messages of the read being handled, not yet passed on (flush_flood).
        self._batch: list[bytes] = []
        self._batch_link: Link | None = None
        self._batch_first = 0

    def is_new(self, origin: str, seq: int) -> bool:
        return self.sequencer.is_new(origin, seq)

    def receive(self, link: Link | None, event: Event) -> bool:
        """An event from ``link``, or from no link (the bus, chat.bus): new
        ones are checked, kept, flooded and shown (§4, §5). True if it was
        new and authentic."""
        if not self.sequencer.is_new(event.origin, event.seq):
            return False  # seen before: dropped before any cryptography
        if not self._authentic(link, event):
            return False  # never shown, kept, forwarded or counted as seen (§4)
        deliveries = self.sequencer.accept(event, trio.current_time())
        if deliveries is None:
            return False
        source = BUS_SOURCE if link is None else link.serial
        number = self.history.add(event, source)
        if link is not None and number is not None and event.kind == "msg":
            # Messages from one read go on together: one put per recipient
            # per read, not per message (flush_flood, at the read's end).
            if self._batch_link is not link:
                self.flush_flood()
                self._batch_link, self._batch_first = link, number
            self._batch.append(event.raw)
        else:
            self.flush_flood()
            self._flood(event.raw, number, link)
        self.on_event(link, event)
        if deliveries:
            self.deliver(deliveries, live=link is None or link.live)
        else:
            self.gaps.notify()
        self.changes.notify()
        return True

    def _authentic(self, link: Link | None, event: Event) -> bool:
        """Whether ``event`` is its origin's: its key is the origin's and signed it (§4).

        The first hop is taken on trust: an event whose origin is the
        link's remote, under the key its handshake proved, could only harm
        its origin, so a hub relays its clients at full speed. Every
        relayed event is checked, once (duplicates were dropped before).
        """
        hello = link.hello if link is not None else None
        if hello is not None and event.origin == hello.node and event.pub == hello.key:
            return True
        self.signature_checks += 1
        if node_id(event.pub) == event.origin and verify(event.pub, event.sig, event.signed()):
            return True
        self.bad_signatures += 1
        if link is None:
            return False  # (from the bus: counted, it has no link to name)
        link.bad_signatures += 1
        now = trio.current_time()
        if now - link.bad_logged >= BAD_LOG_EVERY:
            link.bad_logged = now
            log.warning(
                "dropped %d events from %s so far whose signature is not their origin's",
                link.bad_signatures,
                link.name,
            )
        return False

    def originate(self, author: Author, kind: str, **extra: Any) -> Event:
        """Create an event of ``author``'s: encode once, record, flood, show."""
        event = author.make(kind, time.time(), **extra)
        self.sequencer.record_own(author.id, author.seq)
        self.flush_flood()
        self._flood(event.raw, self.history.add(event), None)
        self.on_event(None, event)
        self.deliver([event], live=True)
        return event

    def expire(self) -> None:
        """Give up the gaps open too long; show what they held (§5)."""
        self.deliver(self.sequencer.expire(trio.current_time()), live=False)

    def tick(self, now: float) -> None:
        """Show the held ``lost`` reports whose time has come (chat.screen)."""
        due = self.screen.due(now)
        if due:
            self._show(due)

    # ------------------------------------------------------------ sending

    def catch_up(self, link: Link, have: Mapping[str, int]) -> None:
        """Send ``link`` what its ``have`` lacks of the history, oldest first (§6).

        At most ``CATCH_UP_BYTES`` of it: a newcomer that lacks more gets
        the most recent part. The rest of the history follows as the
        writer drains (a cursor, not a copy).
        """
        node, serial = link.node, link.serial

        def wanted(event: Event, source: int) -> bool:
            return (
                source != serial and event.origin != node and event.seq > have.get(event.origin, 0)
            )

        start = self.history.recent_start(CATCH_UP_BYTES, wanted)
        link.cursor = Cursor(start, serial=serial, node=node, have=have)
        link.catch_up_end = self.history.end
        self.refill(link)

    def flush_flood(self) -> None:
        """Pass on the messages of the read being handled (receive).

        Called before anything else is sent or decided, and when the read
        is done (chat.outbox.Flusher, before any await): nothing is held
        past the step that read it, and every link gets what it got before,
        in the same order, in fewer and larger puts.
        """
        batch = self._batch
        if batch:
            self._batch = []
            # (join returns a lone item itself: no copy for one message)
            self._flood(b"".join(batch), self._batch_first, self._batch_link)
        self._batch_link = None

    def _flood(self, raw: bytes, number: int | None, came_from: Link | None) -> None:
        # The hot path of a relay: one put per recipient of the bytes as
        # received, no per-recipient object, task or call chain. ``raw``
        # may be several events, ``number`` the first one's in history.
        for link in self.neighbours.values():
            if link is not came_from and (link.cursor is not None or not link.put(raw)):
                self._defer(link, number)

    def _defer(self, link: Link, number: int | None) -> None:
        """The event numbered ``number`` did not fit: ``link`` falls behind."""
        if link.cursor is None:
            start = self.history.end if number is None else number  # None: not kept, lost
            link.cursor = Cursor(start, serial=link.serial, node=link.node)

    def refill(self, link: Link) -> None:
        """The writer caught up: move what the link lacks from history to its outbox."""
        cursor = link.cursor
        if cursor is not None and cursor.refill(self.history, link.conn.send):
            link.cursor = None
        end = link.catch_up_end
        behind = link.cursor is not None and link.cursor.next < (end or 0)
        if end is not None and not behind and link.conn.send_frame(CaughtUp()):
            link.catch_up_end = None  # said: what follows is live (§6 readings)

    def unsent(self, link: Link) -> bytes:
        """What ``link`` still lacks (its most recent part), as bytes; it is up to date then."""
        cursor, link.cursor = link.cursor, None
        return b"" if cursor is None else cursor.rest(self.history, LAST_WORDS_BYTES)

    # ------------------------------------------------------------ showing

    def deliver(self, deliveries: Iterable[Delivery], *, live: bool) -> None:
        """Show delivered events (and gaps) to the person and the text clients.

        ``live``: they came after their link's catch-up, or were made here.
        """
        now, wall, joined = trio.current_time(), time.time(), self.me.joined
        entries = []
        for delivery in deliveries:
            if (
                isinstance(delivery, Event)
                and delivery.kind == "lost"
                and (delivery.node == self.me.id or delivery.node in self.neighbours)
            ):
                # A stale report (a cut since healed) about us or about a
                # node we are linked to right now: kept and forwarded, not shown.
                continue
            entries += self.screen.show(delivery, now=now, wall=wall, joined=joined, live=live)
        self._show(entries)

    def _show(self, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.kind == "pm":
                # To its one reader here, if any: this node's person or a client.
                if entry.shown and (entry.to if not entry.outgoing else entry.origin) == self.me.id:
                    self.sink(entry)
                elif entry.shown:
                    self.audience.show_private(entry)
                continue
            self.sink(entry)
            self.audience.show(entry)
        self.changes.notify()

    # ------------------------------------------------------------ private

    def private(self, author: Author, name: str, text: str) -> str | None:
        """Send ``text`` from ``author`` to the one present member shown as
        ``name``, sealed to it (chat.private); the reason if it cannot be."""
        everyone = self.members.find(name)
        found = [m for m in everyone if m.node != author.id]
        if not found:
            if everyone:
                return f"{name} is you: a private message goes to someone else"
            return f"nobody called {name} is here; /peers lists who is"
        if len(found) > 1:
            names = ", ".join(self.members.display_name(m.node) for m in found)
            return f"{name} is more than one person: say which ({names})"
        return self.private_to(author, found[0].node, text)

    def private_to(self, author: Author, node: str, text: str) -> str | None:
        member = self.members.get(node)
        if member is None or not member.present:
            return "they are not here any more"
        if not member.box:
            return f"{member.name} cannot receive private messages (an older trio-chat)"
        problem = text_problem(text)
        if problem:
            return problem
        sealed = seal(text, member.box, author.id, node)
        self.sent_private[(author.id, author.seq + 1)] = (self.members.display_name(node), text)
        while len(self.sent_private) > MAX_SENT_PRIVATE:
            self.sent_private.popitem(last=False)
        self.originate(author, "pm", **sealed.members(node))
        return None

    def _open_private(self, entry: Entry) -> Entry:
        event = entry.event
        assert event is not None
        sent = self.sent_private.pop(event.key, None)
        if sent is not None:
            who, text = sent
            return replace(entry, who=who, text=text, to=event.origin, outgoing=True, shown=True)
        box = self.boxes.get(entry.to)
        pair = Sealed.of(dict(event.extra)) if box is not None else None
        if box is None or pair is None or pair[0] != entry.to:
            return entry  # not to anyone here: kept and forwarded, not shown
        opened = box.open(pair[1], event.origin, entry.to)
        if opened is None:
            log.warning("a private message from %s could not be opened", entry.who)
            return entry
        self.last_private[entry.to] = event.origin
        return replace(entry, text=opened, shown=True)
