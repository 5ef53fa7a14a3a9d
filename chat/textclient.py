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
from typing import Any, Protocol

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
from chat.private import BoxKey
from chat.protocol import (
    Event,
    Frame,
    ProtocolError,
    TextLine,
    name_problem,
    text_problem,
)

RECENT_LINES = 50  # chat lines replayed to a plain-text client that joins
# Their commands (§9); any other /word line is a message as typed.
COMMANDS = frozenset({"help", "peers", "names", "nick", "me", "msg", "reply", "quit", "exit"})
BANNER = "*** trio-chat: type /nick NAME, then chat; /help for commands"
TEXT_HELP = """\
*** commands:
***   /nick NAME       choose your name
***   /me ACTION       say what you do: * you waves
***   /msg NAME TEXT   a private message (sent to this node in clear, sealed from here on)
***   /reply TEXT      answer the last private message
***   /peers, /names   who is here
***   /quit, /exit     leave (closing the connection does too)
***   anything else is a message"""


class Host(Protocol):
    """What a text session needs of the node that hosts it."""

    @property
    def stopping(self) -> bool: ...

    def originate(self, author: Author, kind: str, **extra: Any) -> Event: ...

    def private(self, author: Author, name: str, text: str) -> str | None:
        """Send a private message as ``author``; the reason if it cannot be."""

    def reply(self, author: Author, text: str) -> str | None:
        """Answer ``author``'s last private message; the reason if it cannot be."""

    def names(self) -> list[str]:
        """Who is present, one line each."""

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

    def show_private(self, entry: Entry) -> None:
        """A private message, to the one client it is to (or from)."""
        reader = entry.origin if entry.outgoing else entry.to
        for session in self.sessions:
            if session.author.id == reader:
                session.conn.send(_line(entry, False))


def _line(entry: Entry, history: bool) -> bytes:
    if entry.history != history:
        entry = replace(entry, history=history)
    return (render.line(entry) + "\n").encode()


class TextSession:
    """One plain-text client: its author, its commands, its budget.

    It listens from the moment it is opened (the chat comes to it as text)
    and joins with its first words: a ``/nick NAME`` or a message (§9).
    """

    __slots__ = ("audience", "author", "box", "conn", "flood", "host", "joined", "left")

    def __init__(
        self, conn: Connection, flood: FloodControl, host: Host, audience: TextAudience
    ) -> None:
        self.conn = conn
        self.flood = flood
        self.host = host
        self.audience = audience
        # Its own run key, vouched for by ours (§2); named by its address until
        # /nick; its own box key, for the private messages it gets (§4).
        key = SigningKey()
        self.box = BoxKey()
        badge = {**voucher(host.run_key, key), **self.box.badge()}
        self.author = Author(self.where[-32:], key, badge)
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
        conn.send((BANNER + "\n").encode())
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
        if command not in COMMANDS:
            command = ""  # any other line is a message as typed, /word included (§9)
        if command in ("help", "peers", "names", "quit", "exit"):
            self._command(command)  # (no join: they said nothing to anyone)
            return
        if not self.joined:
            if command == "nick" and not name_problem(arg):
                self.author.name = arg  # its first words name it (§9)
                self._join()
                return
            self._join()  # its first words: named by its address
        if command == "nick":
            self._rename(arg)
        elif command == "me":
            self._say(arg, action=True)
        elif command == "msg":
            name, _, text = arg.partition(" ")
            problem = self.host.private(self.author, name, text.strip()) if name else "usage"
            if problem:
                self.note("usage: /msg NAME TEXT" if problem == "usage" else f"not sent: {problem}")
        elif command == "reply":
            problem = self.host.reply(self.author, arg)
            if problem:
                self.note(f"not sent: {problem}")
        else:
            self._say(line)

    def _command(self, command: str) -> None:
        if command in ("quit", "exit"):
            self.leave()
        elif command == "help":
            self.conn.send((TEXT_HELP + "\n").encode())
        else:
            for line in self.host.names():
                self.note(line)

    def _say(self, text: str, *, action: bool = False) -> None:
        problem = text_problem(text)
        if problem:
            self.note(f"not sent: {problem}")
        elif action:
            self.host.originate(self.author, "msg", text=text, me=True)
        else:
            self.host.originate(self.author, "msg", text=text)

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
