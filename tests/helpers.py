"""Helpers for in-process tests over real loopback TCP (127.0.0.1, port 0).

Two kinds of participant:

- :func:`start_peer` runs a real :class:`~chat.node.Node` with the mesh
  :class:`~chat.peer.PeerRole` inside the test's nursery and hands back a
  :class:`PeerHandle`. The handle records every :class:`~chat.state.Entry`
  the node shows and is woken whenever the node's state may have changed
  (an entry, a link up or down, a connection opened or closed, an event
  received), so tests wait on a predicate instead of sleeping.
- :class:`RawClient` speaks the wire protocol by hand: it sends whatever
  bytes a test wants, reads frames with :class:`chat.protocol.Decoder`, keeps
  the raw bytes of every line (for byte-for-byte checks) and reports EOF.

Nothing here sleeps to wait for something: waiting is on trio events, on
the socket, or (for "nothing more will happen") on
:func:`trio.testing.wait_all_tasks_blocked`.
"""

from __future__ import annotations

import secrets
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
import trio.testing

from chat.connection import Timing
from chat.node import Config, Link, Node
from chat.peer import PeerRole
from chat.protocol import (
    Decoder,
    Event,
    EventKind,
    Frame,
    Hello,
    TextLine,
    encode,
    make_event,
)
from chat.state import Entry

HOST = "127.0.0.1"

F = TypeVar("F")


# --------------------------------------------------------------------------
# Waiting on state changes


class Changes:
    """A broadcast "something changed" signal: waiters re-check a predicate.

    ``notify`` wakes every waiter; :meth:`until` returns as soon as its
    predicate holds, checking it once now and again after each notification.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._event.wait()


async def settle() -> None:
    """Return once every task has been blocked for a moment.

    Used only to assert that something does *not* happen (no duplicate, no
    extra line): loopback TCP hands bytes over inside the kernel, so when all
    tasks have been idle for the cushion nothing is still in flight.
    """
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)


# --------------------------------------------------------------------------
# Observed node and role


class ObservedRole(PeerRole):
    """The real mesh role, notifying ``changes`` after each of its hooks."""

    def __init__(self, changes: Changes) -> None:
        super().__init__()
        self.changes = changes

    def link_up(self, link: Link, replacing: Link | None = None) -> None:
        super().link_up(link, replacing)
        self.changes.notify()

    def link_down(self, link: Link, lost: bool) -> None:
        super().link_down(link, lost)
        self.changes.notify()

    def link_failed(self, link: Link) -> None:
        super().link_failed(link)
        self.changes.notify()

    def on_event(self, link: Link | None, event: Event) -> None:
        super().on_event(link, event)
        self.changes.notify()


class ObservedNode(Node):
    """A node that also reports every connection it opens and closes.

    The role hooks only see links that complete a handshake; tests of the
    one-connection-per-pair rule need the connections that were refused too.
    """

    def __init__(self, config: Config, role: ObservedRole, sink: Callable[[Entry], None]) -> None:
        super().__init__(config, role, sink)
        self.changes = role.changes
        self.opened: list[Link] = []  # every connection, accepted or dialled

    def _new_link(
        self, stream: trio.abc.Stream, remote: tuple[str, int] | None, outgoing: bool
    ) -> Link:
        link = super()._new_link(stream, remote, outgoing)
        self.opened.append(link)
        self.changes.notify()
        return link

    def _link_closed(self, link: Link) -> None:
        super()._link_closed(link)
        self.changes.notify()


# --------------------------------------------------------------------------
# A running peer


@dataclass(eq=False)
class PeerHandle:
    """A running peer: its node, its port, and what it has shown."""

    node: ObservedNode
    port: int
    scope: trio.CancelScope  # cancel it to make the node vanish (a crash)
    entries: list[Entry] = field(default_factory=list)
    finished: trio.Event = field(default_factory=trio.Event)  # run returned

    @property
    def id(self) -> str:
        return self.node.id

    @property
    def changes(self) -> Changes:
        return self.node.changes

    def record(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.changes.notify()

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate`` (over any state) holds."""
        await self.changes.until(predicate)

    async def wait_entry(self, match: Callable[[Entry], bool]) -> Entry:
        """The first entry shown that matches, waiting for it if need be."""
        await self.until(lambda: any(match(e) for e in self.entries))
        return next(e for e in self.entries if match(e))

    async def wait_text(self, text: str) -> Entry:
        """The ``msg`` entry with ``text``, waiting for it if need be."""
        return await self.wait_entry(lambda e: e.kind == "msg" and e.text == text)

    async def wait_links(self, count: int) -> None:
        """Wait until the node has exactly ``count`` active links."""
        await self.until(lambda: len(self.node.links) == count)

    async def wait_linked(self, *others: PeerHandle | str) -> None:
        """Wait until the node has an active link to each of ``others``."""
        ids = [o if isinstance(o, str) else o.id for o in others]
        await self.until(lambda: all(i in self.node.links for i in ids))

    async def wait_unlinked(self, other: PeerHandle | str) -> None:
        node_id = other if isinstance(other, str) else other.id
        await self.until(lambda: node_id not in self.node.links)

    def dial(self, other: PeerHandle | int, *, persistent: bool = True) -> None:
        port = other if isinstance(other, int) else other.port
        assert self.node.connect(HOST, port, persistent=persistent)

    def texts(self) -> list[str]:
        """Texts of the ``msg`` entries shown, in order."""
        return [e.text for e in self.entries if e.kind == "msg"]

    def about(self, kind: str, node_id: str) -> list[Entry]:
        """Entries of ``kind`` about ``node_id`` (for ``lost``: the vanished node)."""
        out = []
        for e in self.entries:
            if e.kind != kind:
                continue
            subject = e.event.node if e.event is not None and kind == "lost" else e.origin
            if subject == node_id:
                out.append(e)
        return out


async def start_peer(
    nursery: trio.Nursery,
    name: str,
    *,
    degree: int = 8,
    history: int = 1000,
    timing: Timing | None = None,
    hold_back: float = 5.0,
) -> PeerHandle:
    """Start a mesh peer listening on 127.0.0.1, port 0, inside ``nursery``.

    Returns once the node has created its ``join`` and accepts connections.
    """
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    config = Config(
        name=name,
        history=history,
        degree=degree,
        timing=timing or Timing(),
        hold_back=hold_back,
    )
    changes = Changes()
    scope = trio.CancelScope()
    entries: list[Entry] = []

    def sink(entry: Entry) -> None:
        entries.append(entry)
        changes.notify()

    node = ObservedNode(config, ObservedRole(changes), sink)
    handle = PeerHandle(node, port, scope, entries)

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with scope:
                await node.run(listeners, task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()
            handle.finished.set()

    await nursery.start(run)
    return handle


class Group:
    """The peers of one test, sharing a nursery.

    :meth:`aclose` ends them the way a person does, with :meth:`Node.stop`
    (a ``leave``, then a flush), and waits for each to finish; tests that
    want a crash cancel a handle's ``scope`` themselves.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.peers: list[PeerHandle] = []
        self.clients: list[RawClient] = []
        self.listeners: list[trio.SocketListener] = []

    async def start(
        self,
        name: str,
        *,
        degree: int = 8,
        history: int = 1000,
        timing: Timing | None = None,
        hold_back: float = 5.0,
    ) -> PeerHandle:
        handle = await start_peer(
            self.nursery, name, degree=degree, history=history, timing=timing, hold_back=hold_back
        )
        self.peers.append(handle)
        return handle

    async def client(self, port: int, node_id: str | None = None, name: str = "raw") -> RawClient:
        """A :class:`RawClient` connected to ``port``, closed with the group."""
        client = await RawClient.connect(port, node_id, name)
        self.clients.append(client)
        return client

    async def listener(self) -> tuple[trio.SocketListener, int]:
        """A listener on 127.0.0.1 (port 0) for a node to dial; closed with the group."""
        listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
        self.listeners.append(listener)
        return listener, listener.socket.getsockname()[1]

    async def aclose(self) -> None:
        for handle in self.peers:
            handle.node.stop()
        for handle in self.peers:
            await handle.finished.wait()
        for client in self.clients:
            await client.aclose()
        for listener in self.listeners:
            await listener.aclose()


# --------------------------------------------------------------------------
# A client speaking the wire protocol by hand


class Closed(Exception):
    """The other end closed the connection (EOF or reset)."""


def new_id() -> str:
    """A fresh random node id (§2)."""
    return secrets.token_hex(16)


class RawClient:
    """A TCP connection to a node, driven frame by frame from a test."""

    def __init__(
        self, stream: trio.SocketStream, node_id: str | None = None, name: str = "raw"
    ) -> None:
        self.stream = stream
        self.id = node_id or new_id()
        self.name = name
        self.seq = 0
        self.decoder = Decoder()
        self._buf = b""
        self.eof = False
        self.lines: list[bytes] = []  # every line received, raw, in order

    @classmethod
    async def connect(cls, port: int, node_id: str | None = None, name: str = "raw") -> RawClient:
        stream = await trio.open_tcp_stream(HOST, port)
        return cls(stream, node_id, name)

    @classmethod
    async def accept(
        cls, listener: trio.SocketListener, node_id: str | None = None, name: str = "raw"
    ) -> RawClient:
        """The next connection a node dials to ``listener``, as a raw client."""
        stream = await listener.accept()
        return cls(stream, node_id, name)

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
        proto: int = 1,
        node_id: str | None = None,
    ) -> Hello:
        return Hello(node_id or self.id, self.name, "peer", listen, dict(have or {}), proto)

    async def handshake(
        self, *, have: Mapping[str, int] | None = None, listen: int | None = None
    ) -> Hello:
        """Say hello as a peer and return the node's answering hello."""
        await self.send_frame(self.hello(have=have, listen=listen))
        return await self.expect(Hello)

    def event(self, kind: EventKind = "msg", *, text: str = "", node: str = "") -> Event:
        """This client's next event (seq counted here), with its wire bytes."""
        self.seq += 1
        return make_event(kind, self.id, self.seq, time.time(), self.name, text=text, node=node)

    async def say(self, text: str) -> Event:
        event = self.event("msg", text=text)
        await self.send_frame(event)
        return event

    async def join(self) -> Event:
        event = self.event("join")
        await self.send_frame(event)
        return event

    # ---------------------------------------------------------- receiving

    async def receive_line(self) -> bytes:
        """The next line received, raw, ``\\n`` included; :class:`Closed` at EOF."""
        while (end := self._buf.find(b"\n")) < 0:
            if self.eof:
                raise Closed("end of stream")
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError as exc:
                self.eof = True
                raise Closed(f"connection reset: {exc.__cause__!r}") from exc
            if not data:
                self.eof = True
                if self._buf:
                    raise Closed(f"end of stream after a partial line {self._buf[:80]!r}")
                raise Closed("end of stream")
            self._buf += data
        line, self._buf = self._buf[: end + 1], self._buf[end + 1 :]
        self.lines.append(line)
        return line

    async def receive_frame(self) -> Frame:
        """The next frame, parsed with :class:`chat.protocol.Decoder`."""
        line = await self.receive_line()
        frames = self.decoder.feed(line)
        if self.decoder.error is not None:
            raise AssertionError(f"the node sent a bad frame {line!r}: {self.decoder.error}")
        assert len(frames) == 1, (line, frames)
        frame = frames[0]
        assert not isinstance(frame, TextLine), f"the node sent plain text {line!r}"
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

    # ------------------------------------------------------------ closing

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def reset(self) -> None:
        """Close abruptly: SO_LINGER 0 makes the kernel send RST, not FIN."""
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()


def frame_types(frames: list[Frame]) -> list[str]:
    """A readable summary of ``frames`` for assertion messages."""
    out: list[str] = []
    for frame in frames:
        kind: Any = getattr(frame, "kind", None) or type(frame).__name__
        out.append(str(kind))
    return out
