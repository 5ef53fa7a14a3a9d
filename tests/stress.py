"""Helpers for the reliability and fuzz tests: a watched node, protocol clients.

- :func:`start_node` runs a real :class:`~chat.node.Node` with any
  :class:`~chat.node.Config` and :class:`~chat.node.Role` (the helpers of
  ``helpers.py`` fix both) on 127.0.0.1, port 0, inside the test's nursery.
  The node is a :class:`WatchedNode`: it wakes waiters on every connection
  opened or closed, event received and entry shown, and records the largest
  outbox and backlog each connection ever had (the back-pressure bound).
- :class:`Client` is one stream (a TCP connection, or one end of a memory
  stream pair given to :meth:`Node.add_stream`) speaking the wire protocol.
  After :meth:`Client.handshake`, a background task
  (:meth:`Client.read_all`) decodes everything the node sends with
  :class:`chat.protocol.Decoder`, checks each origin's events arrive in
  ``seq`` order without duplicates, and wakes the waiters of
  :meth:`Client.until`. Anything that is not a well-formed frame fails the
  test at once.

Nothing here sleeps to wait for something: waiting is on these wake-ups or
on the stream.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import trio
from helpers import HOST, Changes

__all__ = ["HOST", "Client", "NodeHandle", "Peak", "WatchedNode", "open_stalled", "start_node"]

from chat.connection import Connection
from chat.node import Config, Link, Node, Role
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
from chat.state import Entry

F = TypeVar("F")

READ_SIZE = 65536


# --------------------------------------------------------------------------
# A watched node


@dataclass
class Peak:
    """The most a connection ever held queued at the node."""

    queued_bytes: int = 0  # Connection.queued_bytes: frames in the outbox
    backlog: int = 0  # len(Link.backlog): event keys waiting for a refill (None: none)


class WatchedNode(Node):
    """A :class:`Node` that reports its state changes and queue sizes.

    Only observes: its sink records entries, and the two overrides (also
    used by ``helpers.ObservedNode``) call the node's own method first.
    """

    def __init__(self, config: Config, role: Role | None = None) -> None:
        self.changes = Changes()
        self.entries: list[Entry] = []  # what it showed (see forget)
        self.opened: list[Link] = []  # every connection, accepted or dialled (see forget)
        self.peaks: dict[Connection, Peak] = {}
        super().__init__(config, role, self._show)

    def _show(self, entry: Entry) -> None:
        # Shown right after the event went to every outbox (or backlog):
        # the moment the queues are at their fullest.
        self._measure()
        self.entries.append(entry)
        self.changes.notify()

    def forget(self) -> None:
        """Drop the record of closed connections and of entries (long runs)."""
        self.entries.clear()
        self.opened = [link for link in self.opened if link.conn in self.sessions]
        self.peaks = {conn: peak for conn, peak in self.peaks.items() if conn in self.sessions}

    def _new_link(
        self, stream: trio.abc.Stream, remote: tuple[str, int] | None, outgoing: bool
    ) -> Link:
        link = super()._new_link(stream, remote, outgoing)
        self.opened.append(link)
        self.peaks[link.conn] = Peak()
        self.changes.notify()
        return link

    def _link_closed(self, link: Link) -> None:
        super()._link_closed(link)
        self.changes.notify()

    def _measure(self) -> None:
        for conn, link in self.sessions.items():
            peak = self.peaks.get(conn)
            if peak is not None:
                peak.queued_bytes = max(peak.queued_bytes, conn.queued_bytes)
                peak.backlog = max(peak.backlog, len(link.backlog or ()))

    def link_to(self, node_id: str) -> Link:
        """The open connection whose remote said hello as ``node_id``."""
        for link in self.sessions.values():
            if link.node == node_id:
                return link
        raise LookupError(f"no connection from {node_id}")


@dataclass(eq=False)
class NodeHandle:
    """A running node: the node, its port, and an event set when run returns."""

    node: WatchedNode
    port: int
    scope: trio.CancelScope
    finished: trio.Event = field(default_factory=trio.Event)

    @property
    def id(self) -> str:
        return self.node.id

    async def until(self, predicate: Callable[[], bool]) -> None:
        await self.node.changes.until(predicate)


async def start_node(
    nursery: trio.Nursery, config: Config, role: Role | None = None, *, listen: bool = True
) -> NodeHandle:
    """Start a node listening on 127.0.0.1, port 0, inside ``nursery``.

    Returns once the node has created its ``join`` and accepts connections.
    With ``listen=False`` it has no listener (port 0): tests hand it memory
    streams with :meth:`Node.add_stream`. If the node's ``run`` ever raises,
    the exception reaches ``nursery`` and fails the test: that is how "the
    node stays up" is checked.
    """
    listeners = await trio.open_tcp_listeners(0, host=HOST) if listen else []
    port = listeners[0].socket.getsockname()[1] if listeners else 0
    node = WatchedNode(config, role)
    handle = NodeHandle(node, port, trio.CancelScope())

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with handle.scope:
                await node.run(listeners, task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()
        handle.finished.set()

    await nursery.start(run)
    return handle


# --------------------------------------------------------------------------
# A protocol client


def new_id() -> str:
    return secrets.token_hex(16)


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


class Client:
    """One stream to a node, speaking the wire protocol as a peer.

    ``keep_msgs=False`` counts ``msg`` events (per origin, in
    :attr:`msgs`) without keeping them, for tests that move megabytes
    (``keep_events=False``: no event at all, only counts, ``lost`` and
    ``left``);
    ``stamps=True`` notes when each event arrived (:attr:`arrivals`), for
    rate checks on the virtual clock. ``check_order=False`` accepts an
    origin's events out of order, as a node forwards them when a remote
    sent them so (the receiver orders them, §5).
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        name: str = "client",
        *,
        node_id: str | None = None,
        keep_msgs: bool = True,
        keep_events: bool = True,
        stamps: bool = False,
        check_order: bool = True,
    ) -> None:
        self.stream = stream
        self.name = name
        self.id = node_id or new_id()
        self.seq = 0
        self.keep_msgs = keep_msgs
        self.keep_events = keep_events
        self.stamps = stamps
        self.check_order = check_order
        self.arrivals: list[tuple[float, Event]] = []  # (trio time, event) if stamps
        self.decoder = Decoder()
        self.frames: list[Frame] = []  # every frame received (msgs only if keep_msgs)
        self.msgs: Counter[str] = Counter()  # msg events received, per origin
        self.last_seq: dict[str, int] = {}
        self.last_event: Event | None = None  # kept or not
        self.lost: set[str] = set()  # nodes a lost event was about
        self.left: set[str] = set()  # origins whose leave came
        self.bytes_received = 0
        self.ended = trio.Event()  # EOF or reset
        self.ended_at = 0.0  # trio time of the end
        self.reset = False  # ended by a reset rather than EOF
        self.changes = Changes()

    @classmethod
    async def connect(
        cls,
        port: int,
        name: str = "client",
        *,
        keep_msgs: bool = True,
        keep_events: bool = True,
        check_order: bool = True,
    ) -> Client:
        stream = await trio.open_tcp_stream(HOST, port)
        return cls(
            stream, name, keep_msgs=keep_msgs, keep_events=keep_events, check_order=check_order
        )

    # ------------------------------------------------------------ sending

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_frame(self, frame: Frame) -> None:
        await self.send(encode(frame))

    def hello(self, have: Mapping[str, int] | None = None) -> Hello:
        return Hello(self.id, self.name, "peer", None, dict(have or {}), PROTO)

    def event(self, kind: EventKind = "msg", text: str = "", node: str = "") -> Event:
        """This client's next event (seq counted here), with its wire bytes."""
        self.seq += 1
        return make_event(kind, self.id, self.seq, time.time(), self.name, text=text, node=node)

    async def say(self, text: str) -> Event:
        event = self.event("msg", text)
        await self.send(event.raw)
        return event

    async def handshake(self, have: Mapping[str, int] | None = None) -> Hello:
        """Say hello and read up to the node's answering hello."""
        await self.send_frame(self.hello(have))
        while True:
            if self.ended.is_set():
                raise AssertionError(f"the node closed the connection: {self.frames}")
            await self._read_some()
            for frame in self.frames:
                if isinstance(frame, Hello):
                    return frame

    # ---------------------------------------------------------- receiving

    async def read_all(self) -> None:
        """Read and decode until EOF or reset (run it as a background task)."""
        while not self.ended.is_set():
            await self._read_some()

    async def _read_some(self) -> None:
        try:
            data = bytes(await self.stream.receive_some(READ_SIZE))
        except trio.BrokenResourceError:
            data, self.reset = b"", True
        except trio.ClosedResourceError:
            data = b""  # the test closed this end
        if not data:
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
                if self.check_order:
                    self._check_order(frame)
                self.last_event = frame
                if self.stamps:
                    self.arrivals.append((trio.current_time(), frame))
                if frame.kind == "msg":
                    self.msgs[frame.origin] += 1
                elif frame.kind == "lost":
                    self.lost.add(frame.node)
                elif frame.kind == "leave":
                    self.left.add(frame.origin)
                if not self.keep_events or (frame.kind == "msg" and not self.keep_msgs):
                    continue
            self.frames.append(frame)
        self.changes.notify()

    def _check_order(self, event: Event) -> None:
        # The node forwards each origin's events in order, once (§5).
        last = self.last_seq.get(event.origin, 0)
        assert event.seq > last, f"{self.name}: {event.key} after seq {last}"
        self.last_seq[event.origin] = event.seq

    async def until(self, predicate: Callable[[], bool]) -> None:
        await self.changes.until(predicate)

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
        return [f.code for f in self.frames if isinstance(f, Error)]

    def saw_lost(self, node_id: str) -> bool:
        return node_id in self.lost

    async def aclose(self) -> None:
        await self.stream.aclose()
