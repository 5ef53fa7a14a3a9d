"""``trio-chat bench``: a load tool for hubs and peers, after redis-benchmark.

It connects N protocol-2 clients, has S of them send M messages each, and
has every client count what it receives. The tool must not be the
bottleneck of its own measurement: one thread reads for every client
(chat.benchrecv) and decodes no JSON, and a message's latency runs from
its send to its arrival at each client's socket. Its own CPU use is
reported, and flagged when near 100%.
"""

from __future__ import annotations

import gc
import math
import resource
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial

import trio

from chat.benchclient import Client, client_context, secure
from chat.benchrecv import Receiver, stamp_arrivals
from chat.group import Binding, proof_key
from chat.handshake import Handshake
from chat.parse import parse_frame
from chat.protocol import Hello, ProtocolError, encode, make_event, make_hello

WINDOW = 512  # messages in flight (sent, not yet seen by the probe)
QUIET = 3.0  # seconds without progress after sending ends: the run is over
SETTLE = 0.2  # seconds of no more deliveries once every reader has its count


@dataclass
class Options:
    host: str
    port: int
    clients: int = 50
    senders: int = 10
    messages: int = 1000
    rate: float = 0.0  # total messages a second; 0: as fast as the window allows
    window: int = WINDOW
    silent: int = 0  # clients that never read (a slow-consumer workload)
    connect_concurrency: int = 200
    secret: bytes | None = None  # a closed group's: TLS, and its proofs (§8)
    # More hubs of one group (joined by a bus): clients go round-robin over
    # (host, port) and these, so senders and receivers are spread.
    more: tuple[tuple[str, int], ...] = ()
    # Messages each sender sends before its ``messages``: delivered and
    # counted like them, but not timed. The node and this tool sit idle
    # between the joins and the first message, and the first round after
    # that pause is slow on a shared machine (docs/benchmarks.md, W2).
    warmup: int = 0

    @property
    def each(self) -> int:
        """Messages each sender sends: the warm-up, then the timed ones."""
        return self.warmup + self.messages


@dataclass
class Result:
    clients: int
    senders: int
    messages: int
    expected: int
    received: int
    lost: int
    duplicates: int
    seconds: float
    deliveries_per_s: float
    latency_ms: dict[str, float]  # send to arrival at the client's socket (chat.benchrecv)
    connect_s: float
    tool_cpu_percent: float
    tool_saturated: bool
    samples: int = 0
    read_latency_ms: dict[str, float] = field(default_factory=dict)  # send to this tool's read
    stamped: int = 0  # samples whose arrival is the kernel's stamp (the rest: the read)
    warmup: int = 0  # messages each sender sent first, not timed

    def table(self) -> str:
        lat, read = self.latency_ms, self.read_latency_ms
        lines = [
            f"clients {self.clients}, senders {self.senders}, {self.messages} messages each"
            + (f" (after {self.warmup} not timed)" if self.warmup else ""),
            f"connect time for all clients: {self.connect_s * 1000:.0f} ms",
            f"deliveries: {self.received} of {self.expected} expected"
            f" ({self.lost} lost, {self.duplicates} duplicates) in {self.seconds:.2f} s",
            f"throughput: {self.deliveries_per_s:,.0f} deliveries/s",
            f"latency ms: p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}"
            f"  max {lat['max']:.2f}  ({self.samples} samples, {self.stamped} at the"
            " kernel's arrival stamp)",
            f"latency ms to this tool's read: p50 {read['p50']:.2f}  p99 {read['p99']:.2f}",
            f"bench tool CPU: {self.tool_cpu_percent:.0f}%"
            + (
                "  (saturated: the tool may have limited these figures)"
                if self.tool_saturated
                else ""
            ),
        ]
        return "\n".join(lines)


class Bench:
    """One run: connect, send, count, report."""

    def __init__(self, options: Options) -> None:
        self.o = options
        self.tag = f"b{secrets.token_hex(4)} ".encode()  # marks this run's texts
        self.marker = b'"text":"' + self.tag
        self.clients: list[Client] = []
        # When message n went out (monotonic); its text carries n, so a
        # receiver's latency is measured from the send, not from the signing.
        self.sent_at: list[float] = []
        self.first_send = 0.0
        self.receiver = Receiver(self.marker, self.sent_at)
        self.counted_at: tuple[float, float] | None = None  # (monotonic, CPU s)
        self._tls_context = client_context()  # one for every client (closed groups)

    # -------------------------------------------------------------- connect

    async def connect(self, index: int, limit: trio.Semaphore) -> Client:
        """Open one client and complete its handshake (docs/PROTOCOL.md §3)."""
        async with limit:
            targets = ((self.o.host, self.o.port), *self.o.more)
            host, port = targets[index % len(targets)]
            stream = await trio.open_tcp_stream(host, port)
            stamp_arrivals(stream.socket)
            client = Client(index, stream)
            key = client.key
            group = None
            if self.o.secret is not None:
                client.tls, cert = await secure(stream, self._tls_context)
                group = Binding(proof_key(self.o.secret), cert)

            def hello(nonce: bytes) -> Hello:
                return make_hello(key, nonce, f"bench{index}", "peer", None, {})

            handshake = Handshake(key, outgoing=True, make_hello=hello, group=group)
            await client.send(b"".join(encode(f) for f in handshake.start()))
            buf = b""
            while not handshake.done:
                while b"\n" not in buf:
                    chunk = await client.receive()
                    if not chunk:
                        raise ConnectionError(f"client {index}: closed during the handshake")
                    buf += chunk
                line, _, buf = buf.partition(b"\n")
                try:
                    answer = handshake.receive(parse_frame(line))
                except ProtocolError as exc:
                    raise ConnectionError(
                        f"client {index}: refused: {line[:200].decode(errors='replace')} ({exc})"
                    ) from None
                await client.send(b"".join(encode(f) for f in answer))
            client.pending = buf
            return client

    def sign(self, senders: list[Client]) -> None:
        """Each sender's join and messages, signed before the run (not timed)."""
        each = self.o.each
        self.sent_at[:] = [0.0] * (len(senders) * each)  # (the receiver's list)
        for number, client in enumerate(senders):
            name = f"bench{client.index}"
            key = client.key
            client.frames = [encode(make_event("join", key, 1, time.time(), name))]
            for n in range(each):
                text = f"{self.tag.decode()}{number * each + n}"
                event = make_event("msg", key, n + 2, time.time(), name, text=text)
                client.frames.append(encode(event))

    # ----------------------------------------------------------------- send

    async def _send(self, client: Client, probe: Client, senders: list[Client]) -> None:
        o = self.o
        await client.send(client.frames[0])  # its join
        each = o.each
        first = senders.index(client) * each  # the number of its first message
        interval = len(senders) / o.rate if o.rate else 0.0
        # Senders are spread evenly over the interval, not all at its start:
        # a paced workload is a steady stream, not synchronised bursts.
        next_at = trio.current_time() + interval * client.index / len(senders)
        while client.sent < each:
            if interval:
                next_at += interval
                await trio.sleep_until(next_at)
                batch = 1
            else:
                # The window: stop while too much is in flight (sent, not yet
                # seen by the probe client), so the node's buffers hold it.
                since, seen = time.monotonic(), probe.received
                while self._in_flight(probe, senders) >= o.window:
                    await trio.sleep(0.0005)  # the receivers run in a thread
                    if probe.received != seen:
                        since, seen = time.monotonic(), probe.received
                    elif time.monotonic() - since > QUIET:
                        return  # nothing moves (a relay blocked): stop sending
                batch = min(64, each - client.sent, max(1, o.window // len(senders)))
            frames = b"".join(client.frames[1 + client.sent : 1 + client.sent + batch])
            wire = client.wire(frames)
            # The send time is taken as the bytes go to the kernel: not the
            # sealing, nor waiting for the event loop or for the GIL (the
            # receiving thread holds it most of the time) before that.
            now = time.monotonic()
            # (A warm-up message keeps its 0.0: the receiver takes no sample.)
            for n in range(first + max(client.sent, o.warmup), first + client.sent + batch):
                self.sent_at[n] = now
            client.sent += batch
            await client.write(wire)

    def _in_flight(self, probe: Client, senders: list[Client]) -> int:
        sent_to_probe = sum(s.sent for s in senders if s is not probe)
        return sent_to_probe - probe.received

    # ------------------------------------------------------------------ run

    async def run(self, progress_bar: bool = False) -> Result:
        o = self.o
        cpu0 = _cpu()
        t0 = time.monotonic()
        limit = trio.Semaphore(o.connect_concurrency)
        async with trio.open_nursery() as nursery:
            results: list[Client] = []

            async def connect(i: int) -> None:
                results.append(await self.connect(i, limit))

            for i in range(o.clients):
                nursery.start_soon(connect, i)
        self.clients = sorted(results, key=lambda c: c.index)
        connect_s = time.monotonic() - t0
        senders = self.clients[: o.senders]
        self.sign(senders)
        probe = self.clients[-1]
        # Silent clients sit just before the probe; they never read.
        silent = set(self.clients[len(self.clients) - 1 - o.silent : -1]) if o.silent else set()
        readers = [c for c in self.clients if c not in silent]
        # What exists now lives for the whole run: frozen, the collector
        # leaves it alone. A full collection of this process walked its
        # 50,000 objects in 15-28 ms, holding the GIL: the senders stalled,
        # then caught up in a burst the paced workload does not have.
        gc.freeze()
        try:
            expected_each = await self._timed(senders, probe, readers, progress_bar)
        finally:
            gc.unfreeze()
        expected = sum(expected_each.values())
        receiver = self.receiver
        for client in self.clients:
            await client.stream.aclose()
        if progress_bar:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)
        received = sum(c.received for c in self.clients)
        seconds = max(receiver.last_receive - self.first_send, 1e-9)
        # The tool's load up to the last count, not over the idle settling.
        end, cpu1 = self.counted_at or (time.monotonic(), _cpu())
        wall = end - t0
        cpu = 100.0 * (cpu1 - cpu0) / wall if wall else 0.0
        return Result(
            clients=o.clients,
            senders=len(senders),
            messages=o.messages,
            expected=expected,
            received=received,
            lost=sum(max(0, expected_each[c.index] - c.received) for c in readers),
            duplicates=sum(max(0, c.received - expected_each[c.index]) for c in readers),
            seconds=seconds,
            deliveries_per_s=received / seconds,
            latency_ms=_percentiles(receiver.latencies),
            connect_s=connect_s,
            tool_cpu_percent=cpu,
            tool_saturated=cpu >= 90.0,
            samples=len(receiver.latencies),
            read_latency_ms=_percentiles(receiver.read_latencies),
            stamped=receiver.stamped,
            warmup=o.warmup,
        )

    async def _timed(
        self, senders: list[Client], probe: Client, readers: list[Client], progress_bar: bool
    ) -> dict[int, int]:
        """Send and receive until every reader has its count; what each expects."""
        stop = threading.Event()
        # One thread reads for every client, TLS or not: a second one (tried)
        # takes a core from the node measured on a two-core machine, and
        # arrival times do not depend on how fast this tool reads.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.to_thread.run_sync, self.receiver.run, readers, stop))
            if progress_bar:
                nursery.start_soon(self._progress_bar)
            self.first_send = time.monotonic()
            try:
                async with trio.open_nursery() as sending:
                    for client in senders:
                        sending.start_soon(self._send, client, probe, senders)
                expected_each = {
                    c.index: sum(s.sent for s in senders if s is not c) for c in readers
                }
                await self._wait_done(readers, expected_each)
            finally:
                stop.set()  # also when cancelled: the receiving thread ends with it
            nursery.cancel_scope.cancel()
        return expected_each

    async def _wait_done(self, readers: list[Client], expected_each: dict[int, int]) -> None:
        """Until every reader has its own count, or nothing moves for QUIET s.

        Counts are per reader, not a total: duplicates on one reader must not
        make the sum come out right while another still waits. A reader's
        count can also be made up by duplicates while a message is still on
        its way, so once every count is reached, wait for SETTLE s without a
        delivery: a late copy is then a duplicate, not a loss. (The run's
        figures end at the last delivery, so this wait is not measured.)
        """
        last, since = -1, time.monotonic()
        counted = False
        while True:
            received = sum(c.received for c in self.clients)
            if received != last:
                last, since = received, time.monotonic()
            elif time.monotonic() - since > (SETTLE if counted else QUIET):
                return  # settled, or no progress: what is missing is lost
            if not counted and all(c.received >= expected_each[c.index] for c in readers):
                counted, self.counted_at = True, (time.monotonic(), _cpu())
            await trio.sleep(0.01)

    async def _progress_bar(self) -> None:
        o = self.o
        total = o.senders * o.each * (o.clients - 1) or 1
        while True:
            received = sum(c.received for c in self.clients)
            width = 30
            done = min(width, width * received // total)
            bar = "#" * done + "-" * (width - done)
            print(
                f"\r[{bar}] {100 * received / total:5.1f}% {received}/{total}",
                end="",
                file=sys.stderr,
                flush=True,
            )
            await trio.sleep(0.2)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": 1000 * ordered[-1]}
