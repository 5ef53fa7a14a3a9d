"""Plain-text clients (§9): netcat, telnet, a script with a socket.

A connection whose first byte is not ``{`` becomes a :class:`TextSession`.
The node it reaches creates its events for it (its own :class:`Author`),
shows it the chat as transcript lines, never JSON, and answers its mistakes
in text. The node's plain-text clients form one :class:`TextAudience`: each
line of the chat is rendered once, whoever reads it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from typing import Protocol

import trio

from chat import render
from chat.addr import join_addr
from chat.author import Author
from chat.commands import Command, parse
from chat.connection import Connection
from chat.flow import FloodControl
from chat.identity import voucher
from chat.keys import SigningKey
from chat.lifecycle import Closing, Reason
from chat.members import Entry
from chat.protocol import (
    Event,
    EventKind,
    Frame,
    ProtocolError,
    TextLine,
    name_problem,
    text_problem,
)

RECENT_LINES = 50  # chat lines replayed to a plain-text client that joins
COMMANDS = frozenset({"nick", "exit"})  # the rest of /word lines are messages


class Host(Protocol):
    """What a text session needs of the node that hosts it."""

    @property
    def stopping(self) -> bool: ...

    def originate(self, author: Author, kind: EventKind, **extra: str) -> Event: ...

    @property
    def run_key(self) -> SigningKey: ...

    def client_joined(self, session: TextSession) -> None:
        """The client spoke its first words: it is a member now."""


class TextAudience:
    """A node's plain-text clients, as one audience for the chat's lines."""

    def __init__(self, recent: int = RECENT_LINES) -> None:
        self.sessions: set[TextSession] = set()
        # The recent lines, each with its renderings once made (by history).
        self.recent: deque[tuple[Entry, dict[bool, bytes]]] = deque(maxlen=recent)

    def __len__(self) -> int:
        return len(self.sessions)

    def welcome(self, session: TextSession) -> None:
        """Show a newcomer the recent lines as history, then the chat."""
        joined = session.author.joined
        for entry, rendered in self.recent:
            history = entry.ts < joined if entry.event else True
            data = rendered.get(history)
            if data is None:
                data = rendered[history] = _line(entry, history)
            session.conn.send(data)
        self.sessions.add(session)

    def show(self, entry: Entry) -> None:
        """A line of the chat, to every client: rendered at most twice, not per client."""
        if not entry.shown:
            return  # an event of a kind this node does not know (§4)
        rendered: dict[bool, bytes] = {}
        self.recent.append((entry, rendered))
        if not self.sessions:
            return
        for session in self.sessions:
            author = session.author
            if entry.kind == "msg" and entry.origin == author.id:
                continue  # they typed it; no echo
            # Whether a line is history depends on when each client joined.
            history = entry.ts < author.joined if entry.event is not None else entry.history
            data = rendered.get(history)
            if data is None:
                data = rendered[history] = _line(entry, history)
            session.conn.send(data)


def _line(entry: Entry, history: bool) -> bytes:
    if entry.history != history:
        entry = replace(entry, history=history)
    return (render.line(entry) + "\n").encode()


class TextSession:
    """One plain-text client: its author, its commands, its budget.

    It listens from the moment it is opened (the chat comes to it as text)
    and joins with its first words: a ``/nick NAME`` or a message (§9).
    """

    __slots__ = ("audience", "author", "conn", "flood", "host", "joined", "left")

    def __init__(
        self, conn: Connection, flood: FloodControl, host: Host, audience: TextAudience
    ) -> None:
        self.conn = conn
        self.flood = flood
        self.host = host
        self.audience = audience
        # Its own run key, vouched for by ours (§2); named by its address until /nick.
        key = SigningKey()
        self.author = Author(self.where[-32:], key, voucher(host.run_key, key))
        self.joined = False  # it has spoken: its join was made
        self.left = False

    @property
    def name(self) -> str:
        return self.author.name

    @property
    def where(self) -> str:
        remote = self.conn.remote
        return join_addr(*remote) if remote else "?"

    def open(self) -> None:
        """Take over the connection and show the recent lines, as history."""
        conn = self.conn
        conn.established = True
        conn.handler = self
        self.author.joined = time.time()
        self.audience.welcome(self)

    def on_frame(self, frame: Frame | TextLine) -> float:
        """A line from the client; answers how long to stop reading it."""
        if not isinstance(frame, TextLine) or self.left:
            return 0.0
        try:
            pause = self.flood.admit(True, trio.current_time())
        except ProtocolError as exc:
            self.conn.fail(exc)
            return 0.0
        self.handle(frame.text)
        return pause

    def on_drained(self) -> None:
        """Nothing waits for room: a text client's lines are never held back."""

    def on_silent(self) -> None:
        """(Only a connection not yet chosen can be silent.)"""

    def handle(self, line: str) -> None:
        """Act on one line the client sent: a command or a message."""
        if self.host.stopping or self.left:
            return
        action = parse(line)
        if action is None:
            return
        command, arg = (action.name, action.arg) if isinstance(action, Command) else ("", "")
        if not self.joined:
            if command == "nick" and not name_problem(arg):
                self.author.name = arg  # its first words name it (§9)
                self._join()
                return
            if command != "exit":
                self._join()  # its first words: named by its address
        if command in COMMANDS:
            if command == "exit":
                self.leave()
            else:
                self._rename(arg)
            return
        # Any other line is a message as typed, /word and //word included (§9).
        problem = text_problem(line)
        if problem:
            self.note(f"not sent: {problem}")
            return
        self.host.originate(self.author, "msg", text=line)

    def _join(self) -> None:
        self.joined = True
        self.host.originate(self.author, "join")
        self.host.client_joined(self)

    def _rename(self, name: str) -> None:
        problem = name_problem(name)
        if problem:
            self.note(f"cannot use that name: {problem}")
        elif name != self.author.name:
            self.author.name = name
            self.host.originate(self.author, "nick")

    def leave(self) -> None:
        """``/exit``: the client's leave (if it had joined), then close."""
        self.left = True
        self.audience.sessions.discard(self)
        if self.joined:
            self.host.originate(self.author, "leave")
        self.conn.finish(Closing(Reason.LEFT))

    def note(self, text: str) -> None:
        """A line for this client only."""
        self.conn.send(f"*** {text}\n".encode())
