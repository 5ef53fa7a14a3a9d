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

import logging
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
DUPLICATE = "duplicate connection"  # closed by the one-link-per-pair rule (§3)
ITSELF = "connected to itself"
log = logging.getLogger("chat")


class Flusher:
    """Hands every outbox filled during a scheduling step to the kernel, once.

    Fan-out puts a frame on each recipient's outbox; waking a writer task
    for each costs a task switch per recipient per message, which made a
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

    def flush_now(self) -> None:
        """Write what is marked now; a reader calls this after each read, so
        the frames of one read go out without waiting for the next step."""
        dirty, self._dirty = self._dirty, []
        if dirty:
            now = trio.current_time()
            for outbox in dirty:
                outbox.flush(now)

    async def run(self) -> None:
        """Flush what was marked outside a read (timers, the person's input)."""
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            self.flush_now()


class Outbox:
    """A bounded FIFO of frames, written directly when idle, else by a writer.

    Not a trio memory channel: fan-out puts one frame on every recipient's
    outbox, and a list append is a fraction of the cost of ``send_nowait``
    (docs/benchmarks.md). ``flush`` writes what is queued straight to the
    socket when no writer task is busy; only what the kernel will not take
    now is left to a writer task, started on demand (``start_writer``), so
    an idle connection costs no task of its own for writing.
    """

    __slots__ = (
        "_frames",
        "_marked",
        "busy",
        "closed",
        "fd",
        "flusher",
        "max_bytes",
        "max_frames",
        "said_at",
        "size",
        "start_writer",
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
        self.fd = fd  # the socket, for direct writes; None for other streams
        self.flusher = flusher
        self.size = 0  # bytes queued
        self.said_at = trio.current_time()  # when bytes last went to the kernel
        self.closed = False
        self.busy = False  # a writer task owns the stream's sending side
        self.start_writer: Callable[[], None] = lambda: None
        self._frames: list[bytes] = []
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
                self.flush(trio.current_time())
        return True

    def flush(self, now: float) -> None:
        """Write what is queued now if no writer is busy; else leave it to it."""
        self._marked = False
        frames = self._frames
        if self.busy or not frames:
            return
        if self.fd is not None:
            self.said_at = now
            data = b"".join(frames) if len(frames) > 1 else frames[0]
            try:
                sent = os.write(self.fd, data)
            except OSError:
                sent = 0  # would block, or broken: the writer finds out which
            self.size -= sent
            if sent == len(data):
                frames.clear()
                return
            frames[:] = [data[sent:]]
        self.busy = True
        self.start_writer()

    def take(self, max_bytes: int) -> bytes:
        """What is queued, up to about ``max_bytes``, as one string (b"" if empty)."""
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
    """A stream, the task that reads it, and a bounded outbox.

    The reading task is whoever calls :meth:`serve`. A writer task exists
    only while the kernel will not take what is queued. Timers are not
    kept per connection: the node's watchdog calls :meth:`check` a few
    times a second for all of them.
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_final",
        "_flushed",
        "_nonce",
        "_nursery",
        "_reader_scope",
        "_writer_scope",
        "born",
        "close_reason",
        "decoder",
        "established",
        "heard_at",
        "keepalive",
        "on_drained",
        "outbox",
        "outgoing",
        "remote",
        "stream",
        "timing",
        "writing_since",
    )

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
        seen: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.stream = stream
        self.remote = remote  # (ip, port) of the other end, when known
        self.outgoing = outgoing  # True if this side dialled
        self.timing = timing
        self.decoder = Decoder(seen=seen)
        sock = getattr(stream, "socket", None)
        fd = sock.fileno() if sock is not None else None
        self.outbox = Outbox(max_frames, max_bytes, fd, flusher)
        self.outbox.start_writer = self._start_writer
        # Set by the node once the handshake is done; a plain-text client
        # gets neither pings nor the dead-link rule (it cannot pong).
        self.established = False
        self.keepalive = False
        self.on_drained: Callable[[], None] | None = None
        self.close_reason = ""  # why it ended: "" while open
        self._closed: trio.Event | None = None  # made when first waited for
        self._final = b""
        self._nursery: trio.Nursery | None = None
        self._reader_scope = trio.CancelScope()
        self._writer_scope: trio.CancelScope | None = None
        self._flushed: trio.Event | None = None  # set when the writer ends
        # Watchdog bookkeeping (check): what changed since when.
        now = trio.current_time()
        self.born = now
        self.heard_at = now  # when bytes last arrived
        self.writing_since: float | None = None
        self._nonce = 0

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

    @property
    def closed(self) -> trio.Event:
        """Set once the stream is closed. Made on demand: an Event and its
        parking lot are some 400 bytes an idle connection need not carry."""
        if self._closed is None:
            self._closed = trio.Event()
        return self._closed

    # ---------------------------------------------------------------- sending

    def send(self, data: bytes) -> bool:
        """Queue ``data`` without waiting; False if the outbox is full or closed."""
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
        self.outbox.closed = True
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
        self._final = b""
        self.outbox.take(self.outbox.size)
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    # ---------------------------------------------------------------- timers

    def check(self, now: float) -> None:
        """Apply the link timers (§3, §7); the node's watchdog calls this."""
        if self.close_reason:
            return
        timing = self.timing
        if not self.established:
            if now - self.born >= timing.handshake:
                self._timed_out()
            return
        since = self.writing_since
        if since is not None and now - since >= timing.stall:
            # The cancelled send_all may have sent part of a frame: nothing
            # more may be written on this stream, last words included.
            self.abort(f"stopped reading for {timing.stall:g} s")
            return
        if not self.keepalive:
            return
        if now - self.heard_at >= timing.dead_after:
            self.finish(f"nothing received for {timing.dead_after:g} s")
            return
        outbox = self.outbox
        if now - outbox.said_at >= timing.ping_after and not outbox.busy and not len(outbox):
            self._nonce += 1
            self.send_frame(Ping(self._nonce))

    def _timed_out(self) -> None:
        timing = self.timing
        if self.outgoing:
            self.finish(f"no hello within {timing.handshake:g} s")
        else:
            why = f"no first line within {timing.handshake:g} s"
            self.fail(ProtocolError("handshake_timeout", why))

    # ---------------------------------------------------------------- running

    async def serve(self, on_frame: FrameHandler, nursery: trio.Nursery) -> None:
        """Read until the connection ends, then flush and close the stream.

        A writer task, when needed, runs in ``nursery``. Never raises for
        anything the remote does; ``close_reason`` says why it ended.
        """
        self._nursery = nursery
        try:
            with self._reader_scope:
                await self._read_loop(on_frame)
            if not self.close_reason:
                self.finish("closed")
            # Flush what is queued and the last word, within the grace period.
            with trio.move_on_after(self.timing.grace):
                if not self.outbox.busy:
                    self.outbox.busy = True
                    self._start_writer()
                if self._flushed is not None:
                    await self._flushed.wait()
        finally:
            self.outbox.closed = True  # also when cancelled from outside
            if self._writer_scope is not None:
                self._writer_scope.cancel()
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            self.closed.set()  # (made now if nobody waited: later waiters return)

    async def _read_loop(self, on_frame: FrameHandler) -> None:
        """Read and dispatch until the remote ends, breaks the rules or stalls.

        On a socket this reads with ``os.read`` and ``wait_readable``
        directly, inline: the SocketStream layers (conflict detector,
        error-translating context manager, socket wrapper) and a helper
        coroutine held some 2 KiB per idle connection while waiting
        (docs/benchmarks.md, W3). Other streams (tests' memory streams) go
        through ``receive_some``.
        """
        decoder = self.decoder
        fd = self.outbox.fd
        while True:
            try:
                if fd is None:
                    data = bytes(await self.stream.receive_some(READ_SIZE))
                else:
                    got = _read_or_none(fd)
                    if got is None:
                        # Not inside an except clause: awaiting there would
                        # keep an exception and its traceback alive while idle.
                        await trio.lowlevel.wait_readable(fd)
                        continue
                    # A read that never blocks must still let others run.
                    await trio.lowlevel.checkpoint()
                    data = got
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.finish(f"connection reset ({exc.__class__.__name__})")
                return
            self.heard_at = trio.current_time()
            frames = decoder.feed(data) if data else decoder.close()
            for frame in frames:
                if self.close_reason:
                    return
                pause = on_frame(self, frame)
                if pause > 0:
                    # Flood control: stop reading for a while; TCP pushes
                    # back on the sender (trio back-pressure, no buffering).
                    await trio.sleep(pause)
            if self.outbox.flusher is not None:
                self.outbox.flusher.flush_now()
            if decoder.error:
                self.fail(decoder.error)
                return
            if not data:
                self.finish(CLOSED_BY_REMOTE)
                return

    def _start_writer(self) -> None:
        if self._nursery is None:  # not serving yet: the first flush will do
            self.outbox.busy = False
            return
        self._flushed = trio.Event()
        self._nursery.start_soon(self._write_loop, self._flushed)

    async def _write_loop(self, flushed: trio.Event) -> None:
        outbox = self.outbox
        scope = self._writer_scope = trio.CancelScope()
        try:
            with scope:
                while data := outbox.take(BATCH_BYTES):
                    self.writing_since = trio.current_time()
                    await self.stream.send_all(data)
                    self.writing_since = None
                    outbox.said_at = trio.current_time()
                    if self.on_drained is not None and self.open and not outbox.size:
                        self.on_drained()
                if outbox.closed and self._final:
                    final, self._final = self._final, b""
                    await self.stream.send_all(final)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if not self.close_reason:
                self.finish(f"connection reset ({exc.__class__.__name__})")
        except Exception:
            # A bug of ours must not take the node down with this connection.
            log.exception("internal error writing to %r", self)
            self.abort("internal error")
        finally:
            self.writing_since = None
            outbox.busy = False
            flushed.set()


def _read_or_none(fd: int) -> bytes | None:
    """``os.read`` of a non-blocking socket; None when nothing is there yet."""
    try:
        return os.read(fd, READ_SIZE)
    except BlockingIOError:
        return None
