"""One stream, its reader and writer tasks, and its bounded outbox.

A :class:`Connection` knows the wire format and the link-level timers
(handshake, keepalive, dead link, stalled writer) but nothing of the node:
frames it reads go to a callback, bytes to send come in through
:meth:`Connection.send`. Nobody else writes to the stream.

Back-pressure policy (docs/PROTOCOL.md §7 and the README): ``send`` never
waits. The outbox holds at most ``OUTBOX_FRAMES`` frames and
``OUTBOX_BYTES`` bytes; when it is full ``send`` answers False and the
caller keeps what it could not queue (the node keeps only event keys and
refills from its history when ``on_drained`` fires). A writer that cannot
hand its batch to the kernel for ``stall_timeout`` seconds means the remote
stopped reading: the connection is closed and reported as lost.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import trio

from chat.protocol import Decoder, Error, Frame, Ping, ProtocolError, TextLine, encode

READ_SIZE = 65536  # one large read; lines are split by bytes.find (protocol.py)
BATCH_BYTES = 256 * 1024  # coalesce queued frames into one send_all up to this
OUTBOX_FRAMES = 1024
OUTBOX_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Timing:
    """Link timers in seconds (§3, §7). Tests shorten them; users never do."""

    handshake: float = 10.0  # first line / answering hello
    ping_after: float = 15.0  # idle sending -> ping
    dead_after: float = 45.0  # idle receiving -> lost
    stall: float = 10.0  # writer blocked this long -> lost
    grace: float = 2.0  # flushing on close


# Called for each frame read; answers how long to stop reading (flood control).
FrameHandler = Callable[["Connection", "Frame | TextLine"], float]
CLOSED_BY_REMOTE = "closed by remote"


class Flusher:
    """Hands every outbox filled during a scheduling step to the kernel, once.

    Fan-out puts a frame on each recipient's outbox; waking each writer task
    for it costs a task switch per recipient per message, which made a
    quiet hub slower than a plain asyncio relay (docs/benchmarks.md, W2).
    Instead the outboxes mark themselves here and one task, running after
    the current step, writes each idle one straight to its socket: one
    write per recipient for a lone message, one per recipient per *read*
    under load (the read's frames coalesce). Busy writers keep their queue.
    """

    def __init__(self) -> None:
        self._dirty: list[Outbox] = []
        self._wakeup = trio.Event()

    def mark(self, outbox: Outbox) -> None:
        if not self._dirty:
            self._wakeup.set()
        self._dirty.append(outbox)

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            dirty, self._dirty = self._dirty, []
            for outbox in dirty:
                outbox.flush()


class Outbox:
    """A bounded FIFO of frames with one consumer, the connection's writer.

    Not a trio memory channel: fan-out puts one frame on every recipient's
    outbox, and a list append is a fraction of the cost of ``send_nowait``
    (docs/benchmarks.md). Without a :class:`Flusher` the writer is woken
    on the first put; with one, the flusher decides.
    """

    __slots__ = (
        "_frames",
        "_marked",
        "_wakeup",
        "closed",
        "fd",
        "flusher",
        "max_bytes",
        "max_frames",
        "size",
    )

    def __init__(
        self,
        max_frames: int,
        max_bytes: int,
        fd: int | None = None,
        flusher: Flusher | None = None,
    ) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.fd = fd  # the socket, for the flusher's direct writes
        self.flusher = flusher
        self.size = 0  # bytes queued
        self.closed = False
        self._frames: list[bytes] = []
        self._wakeup: trio.Event | None = None  # set while the writer waits
        self._marked = False

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, data: bytes) -> bool:
        """Queue ``data``; False if closed or full (one frame always fits)."""
        frames = self._frames
        if self.closed or len(frames) >= self.max_frames:
            return False
        if self.size + len(data) > self.max_bytes and frames:
            return False
        frames.append(data)
        self.size += len(data)
        if not self._marked:
            self._marked = True
            if self.flusher is not None:
                self.flusher.mark(self)
            else:
                self.flush()
        return True

    def flush(self) -> None:
        """Write what is queued now if the writer is idle; else leave it to it."""
        self._marked = False
        if not self._frames or self._wakeup is None:
            return  # nothing queued, or the writer is busy and will take it
        if self.fd is not None:
            # The writer waits in take(), not inside send_all: no write is
            # under way, so these bytes may go to the socket directly.
            data = b"".join(self._frames) if len(self._frames) > 1 else self._frames[0]
            try:
                sent = os.write(self.fd, data)
            except OSError:
                sent = 0  # would block, or broken: the writer finds out which
            self.size -= sent
            if sent == len(data):
                self._frames.clear()
                return
            self._frames[:] = [data[sent:]]
        self._wakeup.set()
        self._wakeup = None

    def close(self) -> None:
        """No more puts; the writer takes what is queued, then sees the end."""
        self.closed = True
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    async def take(self, max_bytes: int) -> bytes | None:
        """Wait for frames; all queued (up to ``max_bytes``) as one string.

        None once closed and empty.
        """
        while not self._frames:
            if self.closed:
                return None
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        self._wakeup = None
        frames = self._frames
        if self.size <= max_bytes:
            self._frames = []
            taken = frames
        else:
            count = size = 0
            for frame in frames:
                count += 1
                size += len(frame)
                if size >= max_bytes:
                    break
            taken = frames[:count]
            del frames[:count]
        data = b"".join(taken)
        self.size -= len(data)
        return data


class Connection:
    """A stream with a reader task, a writer task and a bounded outbox."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        remote: tuple[str, int] | None,
        *,
        outgoing: bool,
        timing: Timing = Timing(),
        max_frames: int = OUTBOX_FRAMES,
        max_bytes: int = OUTBOX_BYTES,
        flusher: Flusher | None = None,
    ) -> None:
        self.stream = stream
        self.remote = remote  # (ip, port) of the other end, when known
        self.outgoing = outgoing  # True if this side dialled
        self.timing = timing
        self.decoder = Decoder()
        sock = getattr(stream, "socket", None)
        fd = sock.fileno() if sock is not None else None
        self.outbox = Outbox(max_frames, max_bytes, fd, flusher)
        # Set by the node once the handshake is done; a plain-text client
        # gets neither pings nor the dead-link rule (it cannot pong).
        self.established = False
        self.keepalive = False
        self.on_drained: Callable[[], None] | None = None
        self.close_reason = ""  # why it ended: "" while open
        self.closed = trio.Event()
        self._reader_scope = trio.CancelScope()
        self._writer_scope = trio.CancelScope()
        self._nonce = 0
        self._final = b""

    def __repr__(self) -> str:
        way = "to" if self.outgoing else "from"
        return f"<Connection {way} {self.remote}>"

    @property
    def plain_text(self) -> bool:
        return bool(self.decoder.plain_text)

    @property
    def open(self) -> bool:
        return not self.close_reason

    @property
    def queued_bytes(self) -> int:
        return self.outbox.size

    # ---------------------------------------------------------------- sending

    def send(self, data: bytes) -> bool:
        """Queue ``data`` for the writer without waiting; False if it is full."""
        return self.outbox.put(data)

    def send_frame(self, frame: Frame) -> bool:
        return self.send(encode(frame))

    def finish(self, reason: str, final: bytes = b"") -> None:
        """Stop reading; send what is queued, then ``final``; then close.

        ``final`` is kept apart from the outbox, so a full outbox cannot
        make the last word (a ``leave``, an ``error``) go missing.
        """
        if self.close_reason:
            return
        self.close_reason = reason
        self._final = final
        self.outbox.close()  # the writer drains what is queued, then ends
        self._reader_scope.cancel()

    def fail(self, error: ProtocolError, before: bytes = b"") -> None:
        """Tell the remote what it did wrong, in its own dialect, and close."""
        if self.plain_text:
            final = f"*** error: {error.code}: {error.message}\n".encode()
        else:
            final = encode(Error(error.code, error.message))
        self.finish(f"protocol error: {error}", before + final)

    def abort(self, reason: str) -> None:
        """Close now, dropping whatever is queued."""
        self.finish(reason)
        self._writer_scope.cancel()

    # ---------------------------------------------------------------- running

    async def serve(self, on_frame: FrameHandler) -> None:
        """Run the reader and the writer until the connection ends.

        Never raises for anything the remote does; ``close_reason`` says why
        it ended. The stream is closed on return.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                with self._reader_scope:
                    await self._read_loop(on_frame)
                if not self.close_reason:
                    self.finish("closed")
                # The writer flushes what is queued, within the grace period.
                self._writer_scope.deadline = min(
                    self._writer_scope.deadline, trio.current_time() + self.timing.grace
                )
        finally:
            # Also when cancelled from outside: later sends answer False.
            self.outbox.close()
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            self.closed.set()

    async def _read_loop(self, on_frame: FrameHandler) -> None:
        timing = self.timing
        # The handshake deadline is fixed from the start, so a remote that
        # dribbles a byte at a time cannot hold a connection open (slowloris).
        handshake_deadline = trio.current_time() + timing.handshake
        while True:
            if not self.established:
                deadline = handshake_deadline
            elif self.keepalive:
                deadline = trio.current_time() + timing.dead_after
            else:
                deadline = math.inf
            data = None
            try:
                with trio.move_on_at(deadline):
                    data = await self.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.finish(f"connection reset ({exc.__class__.__name__})")
                return
            if data is None:
                self._timed_out()
                return
            frames = self.decoder.feed(bytes(data)) if data else self.decoder.close()
            for frame in frames:
                if self.close_reason:
                    return
                pause = on_frame(self, frame)
                if pause > 0:
                    # Flood control: stop reading for a while; TCP pushes
                    # back on the sender (trio back-pressure, no buffering).
                    await trio.sleep(pause)
            if self.decoder.error:
                self.fail(self.decoder.error)
                return
            if not data:
                self.finish(CLOSED_BY_REMOTE)
                return

    def _timed_out(self) -> None:
        timing = self.timing
        if self.established:
            self.finish(f"nothing received for {timing.dead_after:g} s")
        elif self.outgoing:
            self.finish(f"no hello within {timing.handshake:g} s")
        else:
            why = f"no first line within {timing.handshake:g} s"
            self.fail(ProtocolError("handshake_timeout", why))

    async def _write_loop(self) -> None:
        with self._writer_scope:
            try:
                await self._drain()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                if not self.close_reason:
                    self.finish(f"connection reset ({exc.__class__.__name__})")
                self._reader_scope.cancel()

    async def _drain(self) -> None:
        outbox = self.outbox
        timing = self.timing
        while True:
            data = None
            with trio.move_on_after(timing.ping_after):
                data = await outbox.take(BATCH_BYTES)
                if data is None:
                    if self._final:
                        with trio.move_on_after(timing.stall):
                            await self.stream.send_all(self._final)
                    return
            if data is None:  # idle for ping_after
                if not self.keepalive:
                    continue
                self._nonce += 1
                data = encode(Ping(self._nonce))
            # One send_all for everything queued (coalescing), not one system
            # call per frame: the cost that dominates a relay.
            with trio.move_on_after(timing.stall) as stall:
                await self.stream.send_all(data)
            if stall.cancelled_caught:
                self.finish(f"stopped reading for {timing.stall:g} s")
                self._reader_scope.cancel()
                return
            if self.on_drained is not None and self.open and not outbox.size:
                self.on_drained()
