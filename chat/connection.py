"""One stream, the task that reads it, its writer, and its link timers.

A :class:`Connection` knows the wire format and the link-level timers
(handshake, keepalive, dead link, stalled writer) but nothing of the node:
frames it reads go to its :attr:`~Connection.handler`, bytes to
send come in through :meth:`Connection.send`. Nobody else writes to the
stream. The back-pressure policy is the :class:`~chat.outbox.Outbox`'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import trio

from chat import timers
from chat.config import Timing
from chat.framing import Decoder
from chat.lifecycle import Closing, Reason
from chat.outbox import OUTBOX_BYTES, OUTBOX_FRAMES, Flusher, Outbox
from chat.protocol import Error, Frame, ProtocolError, TextLine, encode
from chat.sockets import READ_SIZE, read_or_none

if TYPE_CHECKING:
    from chat.tls import Sealer

TEXT_IDLE = 0.5  # seconds of silence after a partial plain-text line: it is a line
_NO_TIMER = contextlib.nullcontext()  # (reusable: it holds nothing)
# A read of at most this many frames is written at once; a larger one (load)
# when the step's other readers have run too (chat.outbox.Flusher).
FLUSH_NOW_UP_TO = 4

log = logging.getLogger("chat")


class Handler(Protocol):
    """Who a connection reports to: the node's first-frame step, then the
    link or text session that it chose."""

    def on_frame(self, frame: Frame | TextLine) -> float:
        """A frame read; answers how long to stop reading (flood control)."""
        ...

    def on_drained(self) -> None:
        """The writer emptied the outbox: room for more."""
        ...

    def on_silent(self) -> None:
        """An accepted connection said nothing in the handshake time."""
        ...


class _Nobody:
    def on_frame(self, frame: Frame | TextLine) -> float:
        return 0.0

    def on_drained(self) -> None:
        pass

    def on_silent(self) -> None:
        pass


NOBODY: Handler = _Nobody()


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
        "_flushed",
        "_nursery",
        "_reader_scope",
        "_writer_scope",
        "born",
        "closing",
        "decoder",
        "established",
        "handler",
        "heard_at",
        "keepalive",
        "outbox",
        "outgoing",
        "ping_nonce",
        "probe_at",
        "refusal",
        "remote",
        "stream",
        "timing",
        "unread_since",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        remote: tuple[str, int] | None,
        *,
        outgoing: bool,
        timing: Timing | None = None,
        max_frames: int = OUTBOX_FRAMES,
        max_bytes: int = OUTBOX_BYTES,
        flusher: Flusher | None = None,
        seen: Callable[[str, int], bool] | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        self.stream = stream
        self.remote = remote  # (ip, port) of the other end, when known
        self.outgoing = outgoing  # True if this side dialled
        self.timing = timing or Timing()
        self.decoder = Decoder(seen=seen)
        sock = getattr(stream, "socket", None)
        fd = sock.fileno() if sock is not None else None
        self.outbox = Outbox(max_frames, max_bytes, fd, flusher, sealer)
        self.outbox.start_writer = self._start_writer
        # Who handles the frames read. An object, not a callable: a bound
        # method or partial kept per connection is some 100 bytes (W3).
        self.handler: Handler = NOBODY
        # Set once the handshake is done; a plain-text client gets neither
        # pings nor the dead-link rule (it cannot pong).
        self.established = False
        self.keepalive = False
        self.closing: Closing | None = None  # why it ended; None while open
        self._closed: trio.Event | None = None  # made when first waited for
        self._nursery: trio.Nursery | None = None
        self._reader_scope = trio.CancelScope()
        self._writer_scope: trio.CancelScope | None = None
        self._flushed: trio.Event | None = None  # set when the writer ends
        # Watchdog bookkeeping (check): what changed since when.
        now = trio.current_time()
        self.born = now
        self.heard_at = now  # when bytes last arrived
        self.ping_nonce = 0
        # A connection refused at accept is told why in its own dialect,
        # once its first byte shows it (or REFUSE_WAIT passes): no JSON to
        # a person, no text to a node (§9).
        self.refusal: ProtocolError | None = None
        # Plain-text keepalive: when the unread check next runs, and since
        # when bytes sent have stayed unacknowledged.
        self.probe_at = 0.0
        self.unread_since: float | None = None

    def __repr__(self) -> str:
        way = "to" if self.outgoing else "from"
        return f"<Connection {way} {self.remote}>"

    @property
    def plain_text(self) -> bool:
        return bool(self.decoder.plain_text)

    @property
    def open(self) -> bool:
        return self.closing is None

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

    def finish(self, closing: Closing, final: bytes = b"") -> None:
        """Stop reading; send what is queued, then ``final``; then close.

        ``final`` is kept apart from the outbox, so a full outbox cannot
        make the last word (a ``leave``, an ``error``) go missing.
        """
        if self.closing is not None:
            return
        self.closing = closing
        self.outbox.final = final
        self.outbox.closed = True
        self._reader_scope.cancel()

    def fail(self, error: ProtocolError, before: bytes = b"", *, text: bool | None = None) -> None:
        """Tell the remote what it did wrong, in its own dialect, and close.

        The dialect is the decoder's (the first byte's), unless ``text``
        says it for a remote that has sent nothing yet.
        """
        if text if text is not None else self.plain_text:
            final = f"*** error: {error.code}: {error.message}\n".encode()
        else:
            final = encode(Error(error.code, error.message))
        self.finish(Closing(Reason.PROTOCOL_ERROR, f"protocol error: {error}"), before + final)

    def refuse(self, error: ProtocolError) -> None:
        """Close with ``error`` as soon as the remote's dialect is known."""
        self.refusal = error

    def abort(self, closing: Closing) -> None:
        """Close now, dropping whatever is queued."""
        self.finish(closing)
        self.outbox.final = b""
        self.outbox.take(self.outbox.size)
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    # ---------------------------------------------------------------- timers

    def check(self, now: float) -> None:
        """Apply the link timers (§3, §7); the node's watchdog calls this."""
        timers.check(self, now)

    # ---------------------------------------------------------------- running

    async def serve(self, nursery: trio.Nursery) -> None:
        """Read until the connection ends, then flush and close the stream.

        A writer task, when needed, runs in ``nursery``. Never raises for
        anything the remote does; :attr:`closing` says why it ended.
        """
        self._nursery = nursery
        if len(self.outbox):  # queued before serving (a dialler's hello): send it now
            self.outbox.flush(trio.current_time())
        try:
            with self._reader_scope:
                await self._read_loop()
            if self.closing is None:
                self.finish(Closing(Reason.CLOSED))
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
            self._say_goodbye()
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            self.closed.set()  # (made now if nobody waited: later waiters return)

    def _say_goodbye(self) -> None:
        """Under TLS, a close_notify: the other side sees a clean end, not a
        cut (best effort, never waited for)."""
        sealer, fd = self.outbox.sealer, self.outbox.fd
        if sealer is not None and fd is not None and not self.outbox:
            with contextlib.suppress(OSError):
                os.write(fd, sealer.goodbye())

    async def _read_loop(self) -> None:
        """Read and dispatch until the remote ends, breaks the rules or stalls.

        On a socket this reads with ``os.read`` and ``wait_readable``
        directly, inline: the SocketStream layers (conflict detector,
        error-translating context manager, socket wrapper) and a helper
        coroutine held some 2 KiB per idle connection while waiting
        (docs/benchmarks.md, W3). Other streams (tests' memory streams) go
        through ``receive_some``.
        """
        decoder = self.decoder
        fd, sealer = self.outbox.fd, self.outbox.sealer
        early = b""  # TLS: what came with the handshake's last flight, read with it
        if sealer is not None:
            try:
                early = sealer.open(b"")
            except trio.BrokenResourceError as exc:
                self.finish(_reset(exc))
                return
        while True:
            try:
                # A plain-text line begun and left without its end is taken
                # as it is after a moment's silence (a client that sends
                # each message without a newline, as the relay seed's does).
                # Only then a timer: a cancel scope held by every idle
                # connection costs some 600 bytes each (W3).
                waited = trio.move_on_after(TEXT_IDLE) if decoder.partial else _NO_TIMER
                with waited:
                    opened = bool(early)  # (already through the sealer)
                    if early:
                        data, early = early, b""
                        await trio.lowlevel.checkpoint()
                    elif fd is None:
                        data = bytes(await self.stream.receive_some(READ_SIZE))
                    else:
                        got = read_or_none(fd)
                        if got is None:
                            # Not inside an except clause: awaiting there would
                            # keep an exception and its traceback alive while idle.
                            await trio.lowlevel.wait_readable(fd)
                            continue
                        # A read that never blocks must still let others run.
                        await trio.lowlevel.checkpoint()
                        data = got
                    if data and sealer is not None and not opened:
                        data = sealer.open(data)  # (TLS, chat.tls)
                        if not data and not sealer.ended:
                            self.heard_at = trio.current_time()
                            continue  # part of a record: more to come
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.finish(_reset(exc))
                return
            if isinstance(waited, trio.CancelScope) and waited.cancelled_caught:
                await self._dispatch(decoder.flush())
                continue
            self.heard_at = trio.current_time()
            frames = decoder.feed(data) if data else decoder.close()
            if self.refusal is not None:
                self.fail(self.refusal, text=None if data else True)  # in its dialect
                return
            if not await self._dispatch(frames):
                return
            if decoder.error:
                self.fail(decoder.error)
                return
            if not data:
                self.finish(Closing(Reason.CLOSED_BY_REMOTE))
                return

    async def _dispatch(self, frames: list[Frame | TextLine]) -> bool:
        """Hand ``frames`` to the handler; False once the connection is closing."""
        flusher = self.outbox.flusher
        try:
            for frame in frames:
                if self.closing is not None:
                    return False
                pause = self.handler.on_frame(frame)
                if pause > 0:
                    if flusher is not None:
                        flusher.read_done()  # (nothing of this read waits)
                    # Flood control: stop reading for a while; TCP pushes
                    # back on the sender (trio back-pressure, no buffering).
                    await trio.sleep(pause)
        finally:
            # A full read is load: its writes wait for the other readers of
            # this step, and each recipient gets one write for all; a lone
            # message goes out at once.
            if flusher is not None and len(frames) > FLUSH_NOW_UP_TO:
                flusher.read_done()
            elif flusher is not None:
                flusher.flush_now()
        return self.closing is None

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
                await outbox.drain(self.stream, self._drained)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if self.closing is None:
                self.finish(_reset(exc))
        except Exception:
            # A bug of ours must not take the node down with this connection.
            log.exception("internal error writing to %r", self)
            self.abort(Closing(Reason.INTERNAL))
        finally:
            outbox.writing_since = None
            outbox.busy = False
            flushed.set()

    def _drained(self) -> None:
        self.handler.on_drained()  # (the handler of now: it changes at the handshake)


def _reset(exc: BaseException) -> Closing:
    return Closing(Reason.RESET, f"connection reset ({exc.__class__.__name__})")
