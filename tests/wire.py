"""One protocol client for the tests: a stream to a node, driven by hand.

A :class:`WireClient` speaks the wire protocol as a peer would, with
:mod:`chat.protocol` (it creates its own events with ``make_event``) and
reads with :class:`chat.framing.Decoder`. Two ways to read, freely mixed:

- pull: :meth:`WireClient.receive_frame`, :meth:`~WireClient.expect`,
  :meth:`~WireClient.expect_eof` return the next frames in order, reading
  the stream when nothing is waiting;
- push: :meth:`WireClient.read_all`, run as a background task, decodes
  everything into :attr:`~WireClient.frames` and counters (messages per
  origin, ``lost`` and ``leave`` seen) and wakes :meth:`~WireClient.until`.

Anything the node sends that is not a well-formed frame fails the test at
once, and so does an origin's events arriving out of order or twice
(``check_order``). Options trade detail for memory in tests that move
megabytes: ``keep_msgs=False`` counts ``msg`` events without keeping them,
``keep_events=False`` keeps no event at all; ``stamps=True`` notes when each
event arrived (trio time), for rate checks on the virtual clock.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TypeVar

import trio

from chat.changes import Changes
from chat.framing import Decoder
from chat.group import Binding
from chat.handshake import Handshake
from chat.keys import SigningKey
from chat.protocol import (
    NONCE_BYTES,
    Error,
    Event,
    Frame,
    Hello,
    TextLine,
    encode,
    make_event,
    make_hello,
)
from chat.tls import make_tls

HOST = "127.0.0.1"
READ_SIZE = 65536

F = TypeVar("F")


class Closed(Exception):
    """The other end closed the connection (EOF or reset)."""


def new_id() -> str:
    """A node id nobody holds the key of (§2): for what names an absent node."""
    return SigningKey().node_id


class Origin:
    """Someone whose events a test makes up: a run key, a name, a seq counter.

    For events a client relays on behalf of others (a relay, or an attacker
    making up origins): each is signed with this origin's own key.
    """

    def __init__(self, name: str = "far", key: SigningKey | None = None) -> None:
        self.name = name
        self.key = key or SigningKey()
        self.id = self.key.node_id
        self.seq = 0

    def event(self, kind: str = "msg", text: str = "", node: str = "", **extra: str) -> Event:
        """This origin's next event (seq counted here), signed, with its wire bytes."""
        self.seq += 1
        return make_event(
            kind, self.key, self.seq, time.time(), self.name, text=text, node=node, extra=extra
        )


class WireClient:
    """One stream to a node, speaking the wire protocol as a peer."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        name: str = "client",
        *,
        key: SigningKey | None = None,
        keep_msgs: bool = True,
        keep_events: bool = True,
        stamps: bool = False,
        check_order: bool = True,
    ) -> None:
        self.stream = stream
        self.name = name
        self.key = key or SigningKey()  # its run key: its node id is the key's (§2)
        self.id = self.key.node_id
        self.seq = 0
        self.keep_msgs = keep_msgs
        self.keep_events = keep_events
        self.stamps = stamps
        self.check_order = check_order
        self.decoder = Decoder()
        self.frames: list[Frame] = []  # every frame received (msgs only if keep_msgs)
        self.arrivals: list[tuple[float, Event]] = []  # (trio time, event) if stamps
        self.msgs: Counter[str] = Counter()  # msg events received, per origin
        self.last_seq: dict[str, int] = {}
        self.last_event: Event | None = None  # kept or not
        self.lost: set[str] = set()  # nodes a lost event was about
        self.left: set[str] = set()  # origins whose leave came
        self.bytes_received = 0
        self.ended = trio.Event()  # EOF or reset
        self.ended_at = 0.0  # trio time of the end
        self.was_reset = False  # ended by a reset rather than EOF
        self.end_reason = ""
        self.changes = Changes()
        self.group: Binding | None = None  # a closed group's proofs (secure())
        self._cursor = 0  # the next frame for the pull methods
        self._reading = False  # a background reader owns the stream's receiving side
        self._pulling = False  # a pull method is reading the stream right now

    @classmethod
    async def connect(
        cls,
        port: int,
        name: str = "client",
        *,
        keep_msgs: bool = True,
        keep_events: bool = True,
        check_order: bool = True,
    ) -> WireClient:
        """A client over a fresh TCP connection to 127.0.0.1:``port``."""
        stream = await trio.open_tcp_stream(HOST, port)
        return cls(
            stream, name, keep_msgs=keep_msgs, keep_events=keep_events, check_order=check_order
        )

    @classmethod
    async def accept(
        cls, listener: trio.SocketListener, name: str = "client", key: SigningKey | None = None
    ) -> WireClient:
        """The next connection a node dials to ``listener``, as a client."""
        return cls(await listener.accept(), name, key=key)

    async def secure(self, secret: bytes) -> None:
        """TLS over this client's stream, as a member of the closed group of
        ``secret`` would dial (§8); the handshake then proves the secret."""
        tls = make_tls(self.key, secret)
        stream = trio.SSLStream(self.stream, tls.client, server_side=False)
        await stream.do_handshake()
        cert = hashlib.sha256(stream.getpeercert(binary_form=True) or b"").digest()
        self.stream, self.group = stream, tls.binding(cert)

    # ------------------------------------------------------------ sending

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_frame(self, frame: Frame) -> None:
        await self.send(encode(frame))

    def hello(
        self,
        *,
        have: Mapping[str, int] | None = None,
        listen: int | None = None,
        nonce: bytes | None = None,
    ) -> Hello:
        """This client's hello as a peer, with a fresh nonce unless given."""
        nonce = nonce or secrets.token_bytes(NONCE_BYTES)
        return make_hello(self.key, nonce, self.name, "peer", listen, dict(have or {}))

    async def handshake(
        self, *, have: Mapping[str, int] | None = None, listen: int | None = None
    ) -> Hello:
        """The handshake as a dialling peer (§3); the node's hello."""
        shake = Handshake(
            self.key,
            outgoing=True,
            make_hello=lambda nonce: self.hello(have=have, listen=listen, nonce=nonce),
            group=self.group,
        )
        for frame in shake.start():
            await self.send_frame(frame)
        while not shake.done:
            frame = await self.receive_frame()
            for answer in shake.receive(frame):
                await self.send_frame(answer)
        assert shake.theirs is not None
        return shake.theirs

    async def answer(
        self, *, have: Mapping[str, int] | None = None, listen: int | None = None
    ) -> Hello:
        """The handshake as the accepting side, to a node that dialled us; its hello."""
        shake = Handshake(
            self.key,
            outgoing=False,
            make_hello=lambda nonce: self.hello(have=have, listen=listen, nonce=nonce),
        )
        while not shake.done:
            frame = await self.receive_frame()
            for reply in shake.receive(frame):
                await self.send_frame(reply)
        assert shake.theirs is not None
        return shake.theirs

    def event(self, kind: str = "msg", text: str = "", node: str = "", **extra: str) -> Event:
        """This client's next event (seq counted here), signed, with its wire bytes."""
        self.seq += 1
        return make_event(
            kind, self.key, self.seq, time.time(), self.name, text=text, node=node, extra=extra
        )

    async def say(self, text: str) -> Event:
        event = self.event("msg", text)
        await self.send(event.raw)
        return event

    async def join(self) -> Event:
        event = self.event("join")
        await self.send(event.raw)
        return event

    # ---------------------------------------------------------- receiving

    async def read_all(self) -> None:
        """Read and decode until EOF or reset (run it as a background task)."""
        self._reading = True
        while self._pulling:  # let a read under way finish first
            await self.changes.wait()
        while not self.ended.is_set():
            await self._read_some()

    async def _read_some(self) -> None:
        try:
            data = bytes(await self.stream.receive_some(READ_SIZE))
        except trio.BrokenResourceError as exc:
            data, self.was_reset = b"", True
            self.end_reason = f"connection reset: {exc.__cause__!r}"
        except trio.ClosedResourceError:
            data, self.end_reason = b"", "closed by the test"
        if not data:
            self.end_reason = self.end_reason or "end of stream"
            self.ended_at = trio.current_time()
            self.ended.set()
            self.changes.notify()
            return
        self.bytes_received += len(data)
        frames = self.decoder.feed(data)
        if self.decoder.error is not None:
            raise AssertionError(
                f"the node sent {self.name} a bad frame: {self.decoder.error}"
                f" (in {len(data)} bytes beginning {data[:200]!r})"
            )
        for frame in frames:
            assert not isinstance(frame, TextLine), f"the node sent plain text: {frame.text!r}"
            if isinstance(frame, Event):
                self._count(frame)
                if not self.keep_events or (frame.kind == "msg" and not self.keep_msgs):
                    continue
            self.frames.append(frame)
        self.changes.notify()

    def _count(self, event: Event) -> None:
        if self.check_order:
            # The node forwards each origin's events in order, once (§5).
            last = self.last_seq.get(event.origin, 0)
            assert event.seq > last, f"{self.name}: {event.key} after seq {last}"
            self.last_seq[event.origin] = event.seq
        self.last_event = event
        if self.stamps:
            self.arrivals.append((trio.current_time(), event))
        if event.kind == "msg":
            self.msgs[event.origin] += 1
        elif event.kind == "lost":
            self.lost.add(event.node)
        elif event.kind == "leave":
            self.left.add(event.origin)

    async def _more(self) -> None:
        """Wait for more frames: from the background reader, or by reading."""
        if self._reading or self._pulling:
            await self.changes.wait()
            return
        self._pulling = True
        try:
            await self._read_some()
        finally:
            self._pulling = False

    async def receive_frame(self) -> Frame:
        """The next frame not yet taken by a pull method; :class:`Closed` at the end."""
        while self._cursor == len(self.frames):
            if self.ended.is_set():
                raise Closed(self.end_reason)
            await self._more()
        frame = self.frames[self._cursor]
        self._cursor += 1
        return frame

    async def expect(self, kind: type[F], skipped: list[Frame] | None = None) -> F:
        """The next frame of class ``kind``; earlier ones go to ``skipped``."""
        while True:
            frame = await self.receive_frame()
            if isinstance(frame, kind):
                return frame
            if skipped is not None:
                skipped.append(frame)

    async def expect_event(
        self, match: Callable[[Event], bool], skipped: list[Frame] | None = None
    ) -> Event:
        """The next event frame that matches; earlier frames go to ``skipped``."""
        while True:
            event = await self.expect(Event, skipped)
            if match(event):
                return event
            if skipped is not None:
                skipped.append(event)

    async def expect_eof(self) -> list[Frame]:
        """Read to the end of the stream; the frames that came before it."""
        frames: list[Frame] = []
        while True:
            try:
                frames.append(await self.receive_frame())
            except Closed:
                return frames

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate`` holds, re-checked as frames arrive."""
        while not predicate():
            if self.ended.is_set():
                raise AssertionError(
                    f"{self.name}: the stream ended ({self.end_reason}) before the"
                    f" awaited frames; got {summary(self.frames)}"
                )
            await self._more()

    async def wait_frame(self, match: Callable[[Frame], bool], *, since: int = 0) -> Frame:
        """The first frame from index ``since`` on that matches, once it is there."""
        await self.until(lambda: any(match(f) for f in self.frames[since:]))
        return next(f for f in self.frames[since:] if match(f))

    async def wait_msgs(self, count: int, *origins: str) -> None:
        """Wait until ``count`` messages from each of ``origins`` have come."""
        await self.until(lambda: all(self.msgs[origin] >= count for origin in origins))

    async def wait_lost(self, node_id: str) -> None:
        """Wait for a ``lost`` event about ``node_id``."""
        await self.until(lambda: node_id in self.lost)

    def events(self, kind: str | None = None, origin: str | None = None) -> list[Event]:
        return [
            f
            for f in self.frames
            if isinstance(f, Event)
            and (kind is None or f.kind == kind)
            and (origin is None or f.origin == origin)
        ]

    def errors(self) -> list[str]:
        """The codes of the ``error`` frames received."""
        return [f.code for f in self.frames if isinstance(f, Error)]

    # ------------------------------------------------------------ closing

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def abort(self) -> None:
        """Close abruptly: SO_LINGER 0 makes the kernel send RST, not FIN."""
        assert isinstance(self.stream, trio.SocketStream)
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()


async def open_stalled(port: int, rcvbuf: int = 4096) -> trio.SocketStream:
    """A TCP connection with a tiny receive buffer, for a client that stops reading.

    SO_RCVBUF has to be set before connecting (it fixes the window offered
    in the handshake); with the default the kernel absorbs far more before
    the node's ``send_all`` blocks.
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((HOST, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def summary(frames: list[Frame]) -> list[str]:
    """Frame kinds for assertion messages: ``Hello``, ``msg(bob#2)``, ``error(code)``."""
    out: list[str] = []
    for frame in frames:
        if isinstance(frame, Event):
            out.append(f"{frame.kind}({frame.name}#{frame.seq})")
        elif isinstance(frame, Error):
            out.append(f"error({frame.code})")
        else:
            out.append(type(frame).__name__)
    return out
