"""A connection's outbox, and the flusher that writes outboxes once per step.

Back-pressure policy (docs/PROTOCOL.md, "Back-pressure"): putting never
waits. An :class:`Outbox` holds at most ``max_frames`` frames and
``max_bytes`` bytes; when it is full ``put`` answers False and the caller
keeps what it could not queue (the node keeps event keys in a
:class:`chat.flow.Cursor` into the history). What is queued is written straight to the
socket when no write is under way; only what the kernel will not take at
once is left to a writer task, started on demand, whose work is
:meth:`Outbox.drain`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from chat.tls import Sealer

OUTBOX_FRAMES = 1024
OUTBOX_BYTES = 2 * 1024 * 1024
IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX"))  # buffers one writev may take
SEAL_BATCH = 256 * 1024  # bytes sealed at a time under TLS (one write's worth)
BATCH_BYTES = 256 * 1024  # coalesce queued frames into one send_all up to this
EARLY_SEAL = 1024 * 1024  # bytes a flush seals before its first write (Flusher.flush_now)


class Flusher:
    """Hands every outbox filled during a scheduling step to the kernel, once.

    Fan-out puts a frame on each recipient's outbox; waking a writer task
    for each costs a task switch per recipient per message, which made a
    quiet hub slower than a plain asyncio relay (docs/benchmarks.md, W2).
    Instead the outboxes mark themselves here and one task, running after
    the current step, writes each idle one straight to its socket. A read
    of a few frames is written at once when it is handled (flush_now: one
    write per recipient for a lone message); a larger read only puts its
    frames (read_done), and this task writes them after the step's other
    readers, one write per recipient for all of them (chat.connection).
    Busy writers keep their queue.
    """

    def __init__(self, *, sealing: bool = False) -> None:
        self.sealing = sealing  # some outboxes seal (a closed group): see flush_now
        self._dirty: list[Outbox] = []
        self._wakeup = trio.Event()
        self.before: Callable[[], None] = lambda: None  # what must be put first

    def mark(self, outbox: Outbox) -> None:
        if not self._dirty:
            self._wakeup.set()
        self._dirty.append(outbox)

    def read_done(self) -> None:
        """A read's frames are handled: what they put is marked, and the
        flushing task writes it once the readers of this step have run, so
        each recipient gets one write for all of them."""
        self.before()

    def flush_now(self) -> None:
        """Write what is marked now; a reader calls this after each read, so
        the frames of one read go out without waiting for the next step."""
        self.before()
        dirty, self._dirty = self._dirty, []
        if dirty:
            now = trio.current_time()
            # Under TLS, copies are sealed before any is written: writes
            # back to back cost the kernel less than writes a seal apart,
            # each of which wakes a reader that had gone back to sleep (a
            # fan-out to 199: 4.5-5.7 against 6.8-8.2 µs a copy in
            # benchmarks/fanout.py; in closed W2 the hub's CPU -10%, the
            # spread of a message's arrivals halved, its first copy out
            # 0.3 ms later). Up to EARLY_SEAL bytes: sealed copies are each
            # their own, where queued frames are shared by every outbox.
            if self.sealing:  # (an open group's flush skips this pass)
                budget = EARLY_SEAL
                for outbox in dirty:
                    if outbox.sealer is not None and budget > 0:
                        budget -= outbox.seal_queued()
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
        "_sealed",
        "busy",
        "closed",
        "fd",
        "final",
        "flusher",
        "max_bytes",
        "max_frames",
        "said_at",
        "sealer",
        "size",
        "start_writer",
        "writing_since",
    )

    def __init__(
        self,
        max_frames: int,
        max_bytes: int,
        fd: int | None = None,
        flusher: Flusher | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.fd = fd  # the socket, for direct writes; None for other streams
        self.flusher = flusher
        self.size = 0  # bytes queued
        self.said_at = trio.current_time()  # when bytes last went to the kernel
        self.closed = False
        self.busy = False  # a writer task owns the stream's sending side
        self.writing_since: float | None = None  # a write waits on the kernel since
        # The last word (a leave, an error), written after the rest once
        # closed: kept apart, so a full outbox cannot make it go missing.
        self.final = b""
        self.start_writer: Callable[[], None] = lambda: None
        self._frames: list[bytes] = []
        self._marked = False
        # TLS (a closed group, chat.tls): frames are sealed as they go out;
        # what is sealed but not yet written waits here.
        self.sealer = sealer
        self._sealed = b""

    def __len__(self) -> int:
        return len(self._frames) + bool(self._sealed)

    def __iter__(self) -> Iterator[bytes]:
        """The frames queued, oldest first (the same bytes objects as put)."""
        return iter(self._frames)

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
        if self.busy or not (self._frames or self._sealed):
            return
        if self.fd is not None:
            self.said_at = now
            try:
                if self.write_to(self.fd):
                    return
            except OSError:
                pass  # would block, or broken: the writer finds out which
        self.busy = True
        self.start_writer()

    def seal(self, data: bytes) -> bytes:
        """``data`` as it goes on the wire (sealed under TLS)."""
        return self.sealer.seal(data) if self.sealer is not None and data else data

    def seal_queued(self) -> int:
        """Seal what is queued now (a batch), for the flush to write, unless
        a writer task owns the stream or sealed bytes wait; bytes sealed."""
        if self.busy or self._sealed or not self._frames:
            return 0
        assert self.sealer is not None  # (the flusher asks only under TLS)
        self._sealed = self.sealer.seal(self._take_plain(SEAL_BATCH))
        return len(self._sealed)

    def write_to(self, fd: int) -> bool:
        if self.sealer is not None:
            return self._write_sealed(fd)
        return self._write_frames(fd)

    def _write_sealed(self, fd: int) -> bool:
        """Seal what is queued (a batch at a time) and hand it to the kernel."""
        sealer = self.sealer
        assert sealer is not None  # (write_to: only under TLS)
        while True:
            sealed = self._sealed
            if not sealed:
                if not self._frames:
                    return True
                # Kept before writing: a record sealed is never sealed again,
                # and the write may take none of it (BlockingIOError).
                sealed = self._sealed = sealer.seal(self._take_plain(SEAL_BATCH))
            sent = os.write(fd, sealed)
            if sent < len(sealed):
                self._sealed = sealed[sent:]
                return False
            self._sealed = b""

    def _write_frames(self, fd: int) -> bool:
        """Hand the kernel what it takes now; True once nothing is left.

        ``os.writev`` takes the frames as they are, so a slow reader's
        outbox holds references to bytes shared with the history and the
        other outboxes, never a joined copy: at most one frame's rest is
        copied when the kernel takes part of it.
        """
        frames = self._frames
        sent = os.writev(fd, frames if len(frames) <= IOV_MAX else frames[:IOV_MAX])
        self.size -= sent
        done = 0
        for frame in frames:
            if sent < len(frame):
                break
            sent -= len(frame)
            done += 1
        del frames[:done]
        if sent:
            frames[0] = frames[0][sent:]
        return not frames

    def take(self, max_bytes: int) -> bytes:
        """What is queued, up to about ``max_bytes``, as one string (b"" if
        empty), sealed under TLS."""
        if self.sealer is None:
            return self._take_plain(max_bytes)
        data, self._sealed = self._sealed + self.seal(self._take_plain(max_bytes)), b""
        return data

    def _take_plain(self, max_bytes: int) -> bytes:
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

    # ------------------------------------------------------- the writer task

    async def drain(self, stream: trio.abc.Stream, on_drained: Callable[[], None]) -> None:
        """A writer task's work: write what the kernel would not take at
        once, as it takes it (``on_drained`` each time it empties while
        open); once closed, the last word after it."""
        if self.fd is not None:
            await self._drain_socket(self.fd, on_drained)
        else:
            await self._drain_stream(stream, on_drained)

    async def _drain_socket(self, fd: int, on_drained: Callable[[], None]) -> None:
        while len(self):
            self.writing_since = trio.current_time()
            await trio.lowlevel.wait_writable(fd)
            try:
                emptied = self.write_to(fd)
            except BlockingIOError:
                continue
            self.writing_since = None
            self.said_at = trio.current_time()
            if emptied and not self.closed:
                on_drained()
        if self.closed and self.final:
            final, self.final = self.seal(self.final), b""
            while final:
                self.writing_since = trio.current_time()
                await trio.lowlevel.wait_writable(fd)
                try:
                    final = final[os.write(fd, final) :]
                except BlockingIOError:
                    continue

    async def _drain_stream(self, stream: trio.abc.Stream, on_drained: Callable[[], None]) -> None:
        """The same for streams without a socket (tests' memory streams)."""
        while data := self.take(BATCH_BYTES):
            self.writing_since = trio.current_time()
            await stream.send_all(data)
            self.writing_since = None
            self.said_at = trio.current_time()
            if not self.closed and not self.size:
                on_drained()
        if self.closed and self.final:
            final, self.final = self.seal(self.final), b""
            await stream.send_all(final)
