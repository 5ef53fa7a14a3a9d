"""A lightweight protocol client of a hub, for tests with many of them.

A :class:`HubClient` is one TCP stream on 127.0.0.1 speaking JSON lines
with :mod:`chat.protocol`: it says ``hello`` as a peer, creates its own
events with :func:`chat.protocol.make_event`, and a reader task
(:meth:`HubClient.read_all`) decodes everything the hub sends with
:class:`chat.protocol.Decoder` into :attr:`HubClient.frames`. Each new
frame wakes the waiters, which re-check their condition, so tests wait on
what arrives, never on a sleep. Anything the hub sends that is not a
well-formed frame (plain text, bad JSON) fails the test at once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping

import trio

from chat.protocol import (
    PROTO,
    Decoder,
    Error,
    Event,
    EventKind,
    Frame,
    Hello,
    TextLine,
    encode,
    make_event,
)

HOST = "127.0.0.1"
READ_SIZE = 65536


class HubClient:
    """One protocol connection to a hub, handshaking as a ``peer``."""

    def __init__(self, stream: trio.SocketStream, name: str, *, listen: int | None = None) -> None:
        self.stream = stream
        self.name = name
        self.id = secrets.token_hex(16)
        self.listen = listen
        self.seq = 0
        self.decoder = Decoder()
        self.frames: list[Frame] = []
        self.ended = trio.Event()
        self.end_reason = ""
        self._changed = trio.Event()

    @classmethod
    async def connect(cls, port: int, name: str, *, listen: int | None = None) -> HubClient:
        stream = await trio.open_tcp_stream(HOST, port)
        return cls(stream, name, listen=listen)

    # -------------------------------------------------------------- sending

    async def send(self, frame: Frame) -> None:
        await self.stream.send_all(encode(frame))

    async def hello(self, have: Mapping[str, int] | None = None) -> None:
        """Our hello, the first frame a dialling node sends (§3)."""
        await self.send(Hello(self.id, self.name, "peer", self.listen, dict(have or {}), PROTO))

    def event(self, kind: EventKind, *, text: str = "") -> Event:
        """This client's next own event: its origin, the next seq."""
        self.seq += 1
        return make_event(kind, self.id, self.seq, time.time(), self.name, text=text)

    async def join(self) -> Event:
        event = self.event("join")
        await self.send(event)
        return event

    async def say(self, text: str) -> Event:
        event = self.event("msg", text=text)
        await self.send(event)
        return event

    async def aclose(self) -> None:
        await self.stream.aclose()

    # ------------------------------------------------------------ receiving

    async def read_all(self) -> None:
        """Decode what arrives into :attr:`frames` until the hub closes.

        Run it as a background task; it returns at the end of the stream (or
        when this side closed it), with :attr:`end_reason` saying which.
        """
        try:
            while True:
                try:
                    data = await self.stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self.end_reason = f"{exc.__class__.__name__}: {exc}"
                    return
                frames = self.decoder.feed(data) if data else self.decoder.close()
                if self.decoder.error is not None:
                    raise AssertionError(f"{self.name}: the hub sent {self.decoder.error}")
                for frame in frames:
                    assert not isinstance(frame, TextLine), f"{self.name}: plain text {frame!r}"
                    self.frames.append(frame)
                if frames:
                    self._wake()
                if not data:
                    self.end_reason = "end of stream"
                    return
        finally:
            self.ended.set()
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, done: Callable[[], bool]) -> None:
        """Return once ``done()`` holds; re-checked on every new frame."""
        while not done():
            if self.ended.is_set():
                raise AssertionError(
                    f"{self.name}: the stream ended ({self.end_reason}) before the"
                    f" awaited frames; got {summary(self.frames)}"
                )
            await self._changed.wait()

    async def wait_frame(self, match: Callable[[Frame], bool], *, since: int = 0) -> Frame:
        """The first frame from index ``since`` on that matches, once it is there."""
        index = since

        def done() -> bool:
            nonlocal index
            while index < len(self.frames):
                if match(self.frames[index]):
                    return True
                index += 1
            return False

        await self.wait_until(done)
        return self.frames[index]

    async def handshake(self) -> Hello:
        """Say hello and wait for the hub's answering hello."""
        await self.hello()
        await self.wait_until(lambda: bool(self.frames))
        first = self.frames[0]
        assert isinstance(first, Hello), f"{self.name}: first frame {first!r}"
        return first

    # -------------------------------------------------------------- reading

    @property
    def events(self) -> list[Event]:
        return [frame for frame in self.frames if isinstance(frame, Event)]

    def msgs(self) -> list[Event]:
        return [event for event in self.events if event.kind == "msg"]

    def errors(self) -> list[Error]:
        return [frame for frame in self.frames if isinstance(frame, Error)]


def summary(frames: list[Frame]) -> list[str]:
    """Frame kinds for assertion messages: ``hello``, ``msg``, ``Peers``..."""
    out: list[str] = []
    for frame in frames:
        if isinstance(frame, Event):
            out.append(f"{frame.kind}({frame.name}#{frame.seq})")
        elif isinstance(frame, Error):
            out.append(f"error({frame.code})")
        else:
            out.append(type(frame).__name__)
    return out
