"""One connection: the outbox's bounds, flushing, and the writer hand-off.

Layers, after trio-websocket's tests: the :class:`~chat.outbox.Outbox`
alone (its bounds and batching need no I/O); a :class:`Connection` over a
real socket pair, where the outbox writes straight to the kernel and hands
over to a writer task only when the kernel will not take it all; and over
trio's memory and lockstep streams, which take the writer-task path from
the first byte. Timers run on ``autojump_clock``.
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from chat.config import Timing
from chat.connection import TEXT_IDLE, Connection
from chat.lifecycle import Closing, Reason
from chat.outbox import Flusher, Outbox
from chat.protocol import Error, Frame, Ping, TextLine, encode


class Recorder:
    """A connection's handler that keeps the frames read and notes drains."""

    def __init__(self) -> None:
        self.frames: list[object] = []
        self.drained = trio.Event()
        self.silent = False

    def on_frame(self, frame: Frame | TextLine) -> float:
        self.frames.append(frame)
        return 0.0

    def on_drained(self) -> None:
        self.drained.set()

    def on_silent(self) -> None:
        self.silent = True


# --------------------------------------------------------------------------
# The outbox alone


async def test_outbox_bounds_frames_and_bytes_but_always_takes_one() -> None:
    outbox = Outbox(max_frames=3, max_bytes=10)  # no fd, no flusher: nothing is written
    outbox.busy = True  # as if a writer owned the stream: put only queues
    assert outbox.put(b"a" * 25)  # alone, one frame always fits, whatever its size
    assert not outbox.put(b"b")  # over the byte bound now
    outbox.take(100)
    assert outbox.put(b"1234")
    assert outbox.put(b"5678")
    assert not outbox.put(b"90ab")  # 12 bytes would pass 10
    assert outbox.put(b"9")
    assert not outbox.put(b"")  # the frame bound: 3
    assert (len(outbox), outbox.size) == (3, 9)


async def test_outbox_take_batches_up_to_about_max_bytes_in_order() -> None:
    outbox = Outbox(max_frames=100, max_bytes=1000)
    outbox.busy = True
    for i in range(10):
        assert outbox.put(f"{i:02}".encode() * 5)  # 10 bytes each
    first = outbox.take(25)  # whole frames, stopping once 25 bytes are reached
    assert first == b"00" * 5 + b"01" * 5 + b"02" * 5
    assert outbox.size == 70
    assert outbox.take(1000) == b"".join(f"{i:02}".encode() * 5 for i in range(3, 10))
    assert (len(outbox), outbox.size, outbox.take(10)) == (0, 0, b"")


async def test_closed_outbox_takes_nothing() -> None:
    outbox = Outbox(max_frames=10, max_bytes=100)
    outbox.closed = True
    assert not outbox.put(b"x")


# --------------------------------------------------------------------------
# A connection over a real socket pair: the direct path


def socket_pair() -> tuple[trio.SocketStream, socket.socket]:
    """Our end as a trio stream, the remote's as a blocking stdlib socket."""
    ours, theirs = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(ours)), theirs


async def test_idle_outbox_goes_straight_to_the_socket_once_per_flush(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        stream, remote = socket_pair()
        flusher = Flusher()
        conn = Connection(stream, None, outgoing=False, flusher=flusher)
        nursery.start_soon(conn.serve, nursery)
        with remote:
            frames = [encode(Ping(i)) for i in range(5)]
            for frame in frames:
                assert conn.send(frame)
            assert len(conn.outbox) == 5  # marked, not yet written: one write per step
            flusher.flush_now()
            assert len(conn.outbox) == 0
            assert not conn.outbox.busy  # no writer task was needed
            remote.setblocking(False)
            assert remote.recv(65536) == b"".join(frames)
            conn.finish(Closing(Reason.CLOSED))
            await conn.closed.wait()


async def test_what_the_kernel_refuses_goes_to_a_writer_that_drains_it(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        stream, remote = socket_pair()
        remote.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        flusher = Flusher()
        conn = Connection(stream, None, outgoing=False, flusher=flusher, max_bytes=8 << 20)
        recorder = Recorder()
        conn.handler = recorder
        drained = recorder.drained
        nursery.start_soon(conn.serve, nursery)
        await trio.testing.wait_all_tasks_blocked()  # serving: a writer can be started
        payload = b"x" * 65535 + b"\n"
        for _ in range(40):  # 2.5 MiB: far more than the socket buffers hold
            assert conn.send(payload)
        flusher.flush_now()
        assert conn.outbox.busy  # the kernel took part: the rest is the writer's
        since = conn.outbox.writing_since
        assert since is None or since <= trio.current_time()

        received = 0

        def read_all() -> int:
            total = 0
            while total < 40 * len(payload):
                total += len(remote.recv(1 << 20))
            return total

        with remote:
            received = await trio.to_thread.run_sync(read_all)
            await drained.wait()
            assert received == 40 * len(payload)
            assert not conn.outbox.busy and conn.queued_bytes == 0
            conn.finish(Closing(Reason.CLOSED))
            await conn.closed.wait()


async def test_last_words_survive_a_full_outbox(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        stream, remote = socket_pair()
        conn = Connection(stream, None, outgoing=False, max_frames=2)
        conn.outbox.busy = True  # nothing goes out until serve's close
        assert conn.send(b"one\n") and conn.send(b"two\n")
        assert not conn.send(b"three\n")  # full
        conn.finish(Closing(Reason.SHUTTING_DOWN), b"last words\n")
        conn.outbox.busy = False
        with remote:
            await conn.serve(nursery)
            remote.setblocking(False)
            assert remote.recv(65536) == b"one\ntwo\nlast words\n"
        assert conn.closing == Closing(Reason.SHUTTING_DOWN)


async def test_abort_drops_what_is_queued(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        stream, remote = socket_pair()
        conn = Connection(stream, None, outgoing=False)
        conn.outbox.busy = True
        assert conn.send(b"never sent\n")
        conn.abort(Closing(Reason.STALLED, "stopped reading for 10 s"))
        conn.outbox.busy = False
        with remote:
            await conn.serve(nursery)
            remote.setblocking(False)
            assert remote.recv(65536) == b""  # EOF, nothing before it
        assert str(conn.closing) == "stopped reading for 10 s"


# --------------------------------------------------------------------------
# Memory streams: the writer-task path


async def test_memory_stream_frames_go_through_a_writer_in_order(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        ours, theirs = trio.testing.memory_stream_pair()
        conn = Connection(theirs, None, outgoing=True)
        nursery.start_soon(conn.serve, nursery)
        frames = [encode(Ping(i)) for i in range(100)]
        for frame in frames:
            assert conn.send(frame)
        got = b""
        while len(got) < len(b"".join(frames)):
            got += await ours.receive_some()
        assert got == b"".join(frames)
        await ours.aclose()
        await conn.closed.wait()
        assert conn.closing is not None and conn.closing.reason in (
            Reason.CLOSED_BY_REMOTE,
            Reason.RESET,
        )


async def test_lockstep_writer_hands_over_a_batch_at_a_time(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        # Lockstep: each send_all waits for the reader, as a slow remote makes it.
        ours, theirs = trio.testing.lockstep_stream_pair()
        conn = Connection(theirs, None, outgoing=True)
        recorder = Recorder()
        conn.handler = recorder
        drained = recorder.drained
        nursery.start_soon(conn.serve, nursery)
        for i in range(3):
            conn.send(encode(Ping(i)))
        got = b""
        while len(got) < 3 * len(encode(Ping(0))):
            got += await ours.receive_some()
        assert got == b"".join(encode(Ping(i)) for i in range(3))
        await drained.wait()
        await ours.aclose()
        await conn.closed.wait()


async def test_frames_read_go_to_the_handler_and_errors_close_in_the_remotes_dialect(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        ours, theirs = trio.testing.memory_stream_pair()
        conn = Connection(theirs, None, outgoing=False)
        recorder = Recorder()
        conn.handler = recorder
        seen = recorder.frames
        nursery.start_soon(conn.serve, nursery)
        await ours.send_all(b"hello there\r\nsecond")
        await ours.send_all(b"\n" + b"x" * 70000)  # an endless line: frame_too_long
        got = b""
        while data := await ours.receive_some():
            got += data
        assert seen == [TextLine("hello there"), TextLine("second")]
        assert got.startswith(b"*** error: frame_too_long: ")  # plain text, never JSON
        assert conn.closing is not None and conn.closing.reason is Reason.PROTOCOL_ERROR


# --------------------------------------------------------------------------
# Timers (the node's watchdog calls check)


@pytest.mark.parametrize("case", ["dialled", "half a hello", "silent"])
async def test_handshake_deadline(autojump_clock: trio.testing.MockClock, case: str) -> None:
    with trio.fail_after(100):  # virtual seconds
        ours, theirs = trio.testing.memory_stream_pair()
        recorder = Recorder()
        async with trio.open_nursery() as nursery:
            conn = Connection(theirs, None, outgoing=case == "dialled", timing=Timing(handshake=10))
            conn.handler = recorder
            nursery.start_soon(conn.serve, nursery)
            if case == "half a hello":
                await ours.send_all(b'{"type":"hel')  # a node, by its first byte
            await trio.sleep(9.9)
            conn.check(trio.current_time())
            assert conn.open
            await trio.sleep(0.1)
            conn.check(trio.current_time())
            if case == "silent":
                # Nothing at all: not a node (a node speaks first), so a person
                # who listens first. Its handler is told; nothing is cut.
                assert recorder.silent and conn.open and conn.plain_text
                nursery.cancel_scope.cancel()
                return
            await conn.closed.wait()
            got = b""
            while data := await ours.receive_some():
                got += data
        assert conn.closing is not None
        if case == "dialled":
            assert conn.closing.reason is Reason.NO_HELLO and got == b""
        else:
            why = "the handshake did not complete within 10 s"
            assert got == encode(Error("handshake_timeout", why))


async def test_a_partial_text_line_is_a_line_after_a_moments_silence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        ours, theirs = trio.testing.memory_stream_pair()
        recorder = Recorder()
        async with trio.open_nursery() as nursery:
            conn = Connection(theirs, None, outgoing=False)
            conn.handler = recorder
            nursery.start_soon(conn.serve, nursery)
            await ours.send_all(b"hel")
            await trio.sleep(TEXT_IDLE / 2)
            await ours.send_all(b"lo")  # within the idle time: the same line
            await trio.sleep(TEXT_IDLE / 2)
            assert recorder.frames == []
            await trio.sleep(TEXT_IDLE)  # silent long enough: the line is taken
            assert recorder.frames == [TextLine("hello")]
            await ours.send_all(b"second\r")  # a lone CR ends a line at once
            await trio.testing.wait_all_tasks_blocked()
            assert recorder.frames == [TextLine("hello"), TextLine("second")]
            nursery.cancel_scope.cancel()


async def test_keepalive_pings_then_dead_link(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):  # virtual seconds
        ours, theirs = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            conn = Connection(
                theirs, None, outgoing=True, timing=Timing(ping_after=15, dead_after=45)
            )
            conn.established = conn.keepalive = True
            nursery.start_soon(conn.serve, nursery)
            await trio.sleep(15)
            conn.check(trio.current_time())
            assert await ours.receive_some() == encode(Ping(1))
            await trio.sleep(30)
            conn.check(trio.current_time())
            await conn.closed.wait()
        assert conn.closing == Closing(Reason.DEAD, "nothing received for 45 s")
