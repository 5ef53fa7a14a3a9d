"""``trio-chat bench`` measures what it claims: counts, loss, duplicates, JSON.

Against an in-process hub it must count every delivery and no loss; against
relays that lose or duplicate on purpose (written here, speaking just enough
of the protocol) it must say so and exit 1. The figures themselves (speed,
latency) are the benchmark's business, never asserted here.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from harness import start_node
from wire import HOST

from chat.bench import Bench, Options
from chat.benchclient import Client
from chat.benchrecv import Receiver
from chat.config import Config, Timing
from chat.handshake import Handshake
from chat.hub import HubRole
from chat.keys import SigningKey
from chat.parse import parse_frame
from chat.protocol import encode, make_hello

Policy = Callable[[int, bytes], int]  # (message number, line) -> copies to pass on; -1: cut


async def relay(nursery: trio.Nursery, policy: Policy) -> int:
    """A relay that completes handshakes and passes lines on as ``policy`` says."""
    streams: dict[trio.SocketStream, trio.Lock] = {}  # one writer at a time per stream
    count = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal count
        streams[stream] = trio.Lock()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await relay_lines(stream)

    async def relay_lines(stream: trio.SocketStream) -> None:
        nonlocal count
        buf = b""
        key = SigningKey()
        shake = Handshake(
            key,
            outgoing=False,
            make_hello=lambda nonce: make_hello(key, nonce, "relay", "hub", None, {}),
        )
        while data := await stream.receive_some(65536):
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not shake.done:  # the handshake first (§3), then relay
                    answers = shake.receive(parse_frame(line))
                    async with streams[stream]:
                        await stream.send_all(b"".join(encode(frame) for frame in answers))
                    continue
                copies = 1
                if b'"type":"msg"' in line:
                    count += 1
                    copies = policy(count, line)
                    if copies < 0:  # cut the sender off, as a node may
                        await stream.aclose()
                        return
                for other, lock in list(streams.items()):
                    if other is not stream:
                        # A reader that left is no concern of the relay's.
                        with contextlib.suppress(
                            trio.BrokenResourceError, trio.ClosedResourceError
                        ):
                            async with lock:
                                await other.send_all((line + b"\n") * copies)

    listeners = await trio.open_tcp_listeners(0, host=HOST)
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return int(listeners[0].socket.getsockname()[1])


def options(port: int) -> Options:
    return Options(HOST, port, clients=6, senders=2, messages=50)


async def test_every_delivery_is_counted_against_a_hub(nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        hub = await start_node(nursery, Config(name="hub", rate=0), HubRole(quiet=True))
        result = await Bench(options(hub.port)).run()
        # 2 senders x 50: each sender gets the other's 50, the 4 others all 100.
        assert result.expected == 2 * 50 + 4 * 100
        assert (result.received, result.lost, result.duplicates) == (result.expected, 0, 0)
        assert result.samples > 0
        assert result.deliveries_per_s > 0
        await hub.stop()


async def test_readers_answer_the_hubs_pings_and_stay(nursery: trio.Nursery) -> None:
    # Messages 0.5 s apart, a hub that pings after 0.1 s of saying nothing
    # and drops a link it has not heard from for 0.3 s: readers only read,
    # so each of them stays only by answering every ping (the tool looks
    # for one at the start of a read, where the node's timer puts it).
    timing = Timing(ping_after=0.1, dead_after=0.3)
    with trio.fail_after(30):
        config = Config(name="hub", rate=0, timing=timing)
        hub = await start_node(nursery, config, HubRole(quiet=True))
        o = Options(HOST, hub.port, clients=4, senders=1, messages=5, rate=2.0)
        result = await Bench(o).run()
        assert (result.received, result.lost) == (3 * 5, 0), result
        await hub.stop()


async def test_latency_runs_to_the_arrival_not_to_the_tools_read(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The receiving thread starts reading a second late, as one thread
    # reading for 200 clients gets round to the last of them late. The
    # copies arrived long before: the latency is the kernel's arrival stamp,
    # and the late read is reported apart (chat.benchrecv).
    late = 1.0
    run = Receiver.run

    def run_late(receiver: Receiver, readers: list[Any], stop: threading.Event) -> None:
        time.sleep(late)  # (the delay under test, not a wait for something)
        run(receiver, readers, stop)

    monkeypatch.setattr(Receiver, "run", run_late)
    with trio.fail_after(30):
        hub = await start_node(nursery, Config(name="hub", rate=0), HubRole(quiet=True))
        bench = Bench(Options(HOST, hub.port, clients=4, senders=1, messages=3))
        result = await bench.run()
        assert (result.received, result.lost) == (3 * 3, 0)
        assert result.samples > 0
        assert result.stamped == result.samples  # every one from the kernel (Linux)
        pairs = zip(bench.receiver.latencies, bench.receiver.read_latencies, strict=True)
        # Sent at once, so read about a second after arriving; the hub's
        # relaying takes milliseconds of that second.
        assert all(read - arrived > late / 2 for arrived, read in pairs)
        assert result.latency_ms["max"] < result.read_latency_ms["p50"]
        await hub.stop()


async def test_warm_up_messages_are_delivered_and_counted_but_not_timed(
    nursery: trio.Nursery,
) -> None:
    # 1 sender, 2 warm-up messages then 3 timed ones, 50 ms apart: each of
    # the 3 readers gets all 5, and samples come from the timed 3 only.
    with trio.fail_after(30):
        hub = await start_node(nursery, Config(name="hub", rate=0), HubRole(quiet=True))
        o = Options(HOST, hub.port, clients=4, senders=1, messages=3, rate=20.0, warmup=2)
        bench = Bench(o)
        result = await bench.run()
        assert (result.expected, result.received, result.lost) == (3 * 5, 3 * 5, 0), result
        assert bench.sent_at[:2] == [0.0, 0.0]  # no send time: no sample (Receiver._sample)
        assert all(sent > 0 for sent in bench.sent_at[2:])
        # At most one sample per read: 3 readers x 3 timed messages (15 if
        # the warm-up were timed, reads being 50 ms apart).
        assert 0 < result.samples <= 3 * 3
        assert (result.messages, result.warmup) == (3, 2)
        assert "3 messages each (after 2 not timed)" in result.table()
        await hub.stop()


async def test_the_tools_heap_is_frozen_while_it_times(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full collection of the tool's start-up heap held the GIL for 15-28
    # ms, stalling the senders into bursts: while it times, that heap is
    # frozen, and afterwards given back to the collector.
    frozen: list[int] = []
    run = Receiver.run

    def run_counting(receiver: Receiver, readers: list[Client], stop: threading.Event) -> None:
        frozen.append(gc.get_freeze_count())
        run(receiver, readers, stop)

    monkeypatch.setattr(Receiver, "run", run_counting)
    gc.unfreeze()
    with trio.fail_after(30):
        hub = await start_node(nursery, Config(name="hub", rate=0), HubRole(quiet=True))
        result = await Bench(options(hub.port)).run()
        assert result.lost == 0
        assert frozen and frozen[0] > 1000
        assert gc.get_freeze_count() == 0
        await hub.stop()


async def test_a_clients_write_larger_than_the_kernel_takes_arrives_whole() -> None:
    # Senders hand the kernel what it takes at once (the send time is taken
    # just before), and wait for the socket for the rest: 8 MiB is more than
    # the socket buffers hold, so both parts are used.
    data = bytes(range(256)) * (32 * 1024)
    got = bytearray()
    with trio.fail_after(30):
        listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
        client = Client(0, await trio.open_tcp_stream(HOST, listener.socket.getsockname()[1]))
        server = await listener.accept()

        async def read_all() -> None:
            while len(got) < len(data):
                got.extend(await server.receive_some(65536))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.write, data)  # (runs first: its os.write is partial)
            nursery.start_soon(read_all)
        assert bytes(got) == data
        for stream in (client.stream, server):
            await stream.aclose()
        await listener.aclose()


async def test_losses_and_duplicates_are_found(nursery: trio.Nursery) -> None:
    with trio.fail_after(60):
        lossy = await relay(nursery, lambda n, line: 0 if n % 10 == 0 else 1)
        lost = await Bench(options(lossy)).run()
        assert lost.lost > 0
        assert lost.duplicates == 0
        assert lost.received == lost.expected - lost.lost

        doubling = await relay(nursery, lambda n, line: 2 if n % 10 == 0 else 1)
        doubled = await Bench(options(doubling)).run()
        assert doubled.duplicates > 0
        assert doubled.lost == 0
        nursery.cancel_scope.cancel()


async def test_duplicates_on_one_reader_do_not_hide_a_shortfall_on_another() -> None:
    # Reader a has two copies too many, reader b two messages still on their
    # way: the total is right, but the run is not over until b has its own.
    bench = Bench(options(1))
    a: Any = SimpleNamespace(index=0, received=12)
    b: Any = SimpleNamespace(index=1, received=8)
    bench.clients = [a, b]
    done = trio.Event()

    async def wait() -> None:
        await bench._wait_done([a, b], {0: 10, 1: 10})
        done.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            b.received = 10
            await done.wait()


async def run_bench_command(port: int, messages: int = 20) -> tuple[int, str, str]:
    command = [sys.executable, "-m", "chat", "bench", f"{HOST}:{port}"]
    command += ["--clients", "4", "--senders", "1", "--messages", str(messages), "--json"]
    done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_the_command_prints_one_json_line_and_exits_1_on_loss(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(60):
        hub = await start_node(nursery, Config(name="hub", rate=0), HubRole(quiet=True))
        code, out, _ = await run_bench_command(hub.port)
        assert code == 0, out
        (line,) = out.splitlines()
        figures = json.loads(line)
        assert figures["expected"] == figures["received"] == 3 * 20
        assert figures["lost"] == figures["duplicates"] == 0

        lossy = await relay(nursery, lambda n, line: 0 if n == 5 else 1)
        code, out, _ = await run_bench_command(lossy)
        assert code == 1
        assert json.loads(out)["lost"] == 3  # message 5 reached none of the 3 readers

        # A sender cut off mid-run, still sending (its writes then fail):
        # a line that says so and exit 1, no traceback.
        cutting = await relay(nursery, lambda n, line: -1 if n == 5 else 1)
        code, out, err = await run_bench_command(cutting, messages=100_000)
        assert code == 1 and out == "", out
        assert err.startswith("trio-chat bench: ") and "Traceback" not in err, err
        await hub.stop()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["nowhere"], "invalid address 'nowhere' (expected HOST:PORT)"),
        (["127.0.0.1:9", "--messages", "0"], "need --messages >= 1 and --warmup >= 0"),
        (["127.0.0.1:9", "--warmup", "-1"], "need --messages >= 1 and --warmup >= 0"),
        (["127.0.0.1:9", "--senders", "0"], "need 1 <= senders and senders + silent < clients"),
    ],
)
async def test_the_command_refuses_a_bad_load_in_one_line(arguments: list[str], says: str) -> None:
    command = [sys.executable, "-m", "chat", "bench", *arguments]
    with trio.fail_after(30):
        done = await trio.run_process(command, capture_stderr=True, check=False)
    assert done.returncode == 2
    assert done.stderr.decode() == f"trio-chat bench: {says}\n"
