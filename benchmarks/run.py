"""``make bench``: the trio-chat hub against the asyncio reference relay.

Every workload runs both servers in this one run on this one machine, each
freshly started, and reports ratios, never absolute limits. Results are
printed as a table and written to docs/benchmarks.md.

    python benchmarks/run.py [--quick] [--out docs/benchmarks.md]

W1 throughput   100 clients, 10 senders, as fast as possible; also against a
                relay that only copies bytes (ceiling_relay.py): the most any shows
W2 latency      200 clients, each 1 message/s for 10 s
W3 idle         2000 idle clients: RSS per connection; then 10000 clients
W4 slow reader  50 clients, one never reads: the others vs. the same without it
W5 mesh         20 peer processes, full mesh: time for a message to reach all
closed          W1 and W2 on a closed group (TLS 1.3 and a secret): the cost of TLS
W6 relayed      one peer checks 100000 relayed signed events: events per CPU-second,
                the cost of a check, where the time goes (py-spy); see relayed.py
bus             W1 and W2 through two hubs on one Redis beside one hub alone; see bus.py

Every client speaks protocol 2: it completes the handshake, and its
messages are signed before the timed part (``trio-chat bench`` signs them
all first, then stamps each message's send time as its bytes go to the
kernel, so the latency is from the moment it is sent to the moment each
copy arrives at its client's socket: chat/benchrecv.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from chat.bench import Bench, Options
from chat.benchcli import raise_fd_limit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relayed import w6
from report import machine, report

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
FD_LIMIT = 20000


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    def rss_kib(self) -> int:
        return rss_kib(self.process.pid)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextmanager
def server(
    kind: str, log: Path, secret: Path | None = None, extra: tuple[str, ...] = ()
) -> Iterator[Server]:
    """A fresh hub or reference relay on a free port, stopped afterwards.

    ``secret``: the hub's group secret file (a closed group: TLS, §8).
    """
    if kind == "hub":
        command = [PY, "-m", "chat", "hub", "0", "--host", "127.0.0.1", "--quiet", "--rate", "0"]
        if secret is not None:
            command += ["--secret-file", str(secret)]
        command += extra
        command += ["--link-rate", "0", "--max-connections", "15000", "--origin-rate", "0"]
        # Every bench client comes from 127.0.0.1: no per-address limits.
        command += ["--max-per-address", "0", "--max-text-per-address", "0", "--join-rate", "0"]
        pattern = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
    else:
        command = [PY, str(ROOT / "benchmarks" / f"{kind}_relay.py"), "0"]
        pattern = re.compile(rb"listening on (\d+)")
    with log.open("wb") as out:
        stream = subprocess.PIPE
        process = subprocess.Popen(command, stdout=stream, stderr=stream, cwd=ROOT)
        try:
            assert process.stdout is not None and process.stderr is not None
            source = process.stderr if kind == "hub" else process.stdout
            line = source.readline()
            out.write(line)
            match = pattern.search(line)
            if not match:
                raise RuntimeError(f"{kind} did not start: {line!r}")
            # Keep draining its output so it never blocks on a full pipe.
            drain = subprocess.Popen(["cat"], stdin=source, stdout=out)
            yield Server(kind, process, int(match.group(1)))
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            drain.wait(timeout=5)


def bench(port: int, **kw: Any) -> dict[str, Any]:
    args = [PY, "-m", "chat", "bench", f"127.0.0.1:{port}", "--json"]
    for key, value in kw.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(args, capture_output=True, check=False, timeout=600)
    lines = done.stdout.decode().strip().splitlines()
    if not lines:
        raise RuntimeError(f"bench failed: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# ---------------------------------------------------------------- workloads


# W1 and W2 (open and closed) run ROUNDS times, the servers of a workload
# taking turns; each figure reported is the median round's, with every
# round's figure beside it. One W1 run of the hub lasts about a second:
# one pause of this shared machine's could decide a single run.
ROUNDS = 3


def _throughput(result: dict[str, Any]) -> float:
    return float(result["deliveries_per_s"])


def _p99(result: dict[str, Any]) -> float:
    return float(result["latency_ms"]["p99"])


def median_round(
    runs: list[dict[str, Any]], figure: Callable[[dict[str, Any]], float]
) -> dict[str, Any]:
    """The run whose ``figure`` is the median, with ``rounds``: every run's, in order."""
    chosen = dict(sorted(runs, key=figure)[len(runs) // 2])
    chosen["rounds"] = [figure(run) for run in runs]
    return chosen


def _rounds(
    quick: bool,
    logs: Path,
    name: str,
    kinds: tuple[str, ...],
    *,
    figure: Callable[[dict[str, Any]], float],
    secret: Path | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """``kinds`` of server take turns at one workload, ROUNDS times (once if quick)."""
    if secret is not None:
        kw["secret_file"] = secret
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for n in range(1 if quick else ROUNDS):
        for kind in kinds:
            with server(kind, logs / f"{name}-{kind}-{n}.log", secret) as srv:
                runs[kind].append(bench(srv.port, **kw))
    return {kind: median_round(found, figure) for kind, found in runs.items()}


def w1_load(quick: bool) -> dict[str, Any]:
    """W1's load: 100 clients, 10 of them sending as fast as the window allows."""
    return {"clients": 100, "senders": 10, "messages": 1000 if quick else 4000}


def w2_load(quick: bool) -> dict[str, Any]:
    """W2's load: 200 clients, each sending a message a second for 10 s,
    after one second of the same load that is not timed (the warm-up: the
    first round after the idle joins is slow on a shared machine)."""
    return {
        "clients": 200,
        "senders": 200,
        "messages": 3 if quick else 10,
        "rate": 200,
        "warmup": 1,
    }


def w1(quick: bool, logs: Path) -> dict[str, Any]:
    # The ceiling: a relay that only copies bytes (what this machine and
    # this load tool allow any relay to show).
    kinds = ("hub", "reference", "ceiling")
    return _rounds(quick, logs, "w1", kinds, figure=_throughput, **w1_load(quick))


def closed(quick: bool, logs: Path) -> dict[str, Any]:
    """W1 and W2 again on a closed group: the hub with a secret, every
    client over TLS with it. Beside the open figures of the same run, they
    give the cost of TLS."""
    secret = logs / "bench.secret"
    secret.unlink(missing_ok=True)
    subprocess.run(
        [PY, "-m", "chat", "secret", "new", str(secret)], check=True, capture_output=True
    )
    hub = ("hub",)
    w1 = _rounds(quick, logs, "w1-closed", hub, figure=_throughput, secret=secret, **w1_load(quick))
    w2 = _rounds(quick, logs, "w2-closed", hub, figure=_p99, secret=secret, **w2_load(quick))
    return {"W1": w1["hub"], "W2": w2["hub"]}


def w2(quick: bool, logs: Path) -> dict[str, Any]:
    return _rounds(quick, logs, "w2", ("hub", "reference"), figure=_p99, **w2_load(quick))


async def _idle(srv: Server, count: int) -> tuple[int, int]:
    """Hold ``count`` idle clients: how many completed the handshake, and the
    server's RSS (KiB) while they were connected."""
    b = Bench(Options("127.0.0.1", srv.port, clients=count, senders=1))
    limit = trio.Semaphore(200)
    clients = []

    async def one(i: int) -> None:
        clients.append(await b.connect(i, limit))

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    rss = srv.rss_kib()
    for client in clients:
        await client.stream.aclose()
    return len(clients), rss


def w3(quick: bool, logs: Path) -> dict[str, Any]:
    idle = 2000
    many = 2000 if quick else 10000
    out: dict[str, Any] = {}
    for kind in ("hub", "reference"):
        with server(kind, logs / f"w3-{kind}.log") as srv:
            before = srv.rss_kib()
            _, after = trio.run(_idle, srv, idle)
            out[kind] = {
                "idle_clients": idle,
                "rss_before_kib": before,
                "rss_after_kib": after,
                "kib_per_connection": (after - before) / idle,
            }
    with server("hub", logs / "w3-hub-many.log") as srv:
        out["hub"]["concurrent_clients"], _ = trio.run(_idle, srv, many)
        out["hub"]["concurrent_wanted"] = many
    return out


def w4(quick: bool, logs: Path) -> dict[str, Any]:
    # Long enough (about 18 s at full speed) for the hub's 10 s stall rule to
    # cut the silent client off while the others are still being served
    # (13 s was too close: the run could end first).
    messages = 4000 if quick else 60000
    out: dict[str, Any] = {}
    for kind in ("hub", "reference"):
        with server(kind, logs / f"w4-{kind}.log") as srv:
            base = bench(srv.port, clients=50, senders=10, messages=messages)
        log = logs / f"w4-{kind}-silent.log"
        with server(kind, log) as srv:
            peak = [srv.rss_kib()]
            start_rss = peak[0]
            silent = _bench_sampling(srv, peak, clients=50, senders=10, messages=messages, silent=1)
        out[kind] = {
            "base": base,
            "silent": silent,
            "throughput_kept": silent["deliveries_per_s"] / base["deliveries_per_s"],
            "rss_start_kib": start_rss,
            "rss_peak_kib": max(peak),
            "silent_client_cut": "stopped reading" in log.read_text(),
        }
    return out


def _bench_sampling(srv: Server, peak: list[int], **kw: Any) -> dict[str, Any]:
    """Run a bench while sampling the server's RSS every 0.2 s."""
    args = [PY, "-m", "chat", "bench", f"127.0.0.1:{srv.port}", "--json"]
    for key, value in kw.items():
        args += [f"--{key}", str(value)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while process.poll() is None:
        peak.append(srv.rss_kib())
        time.sleep(0.2)
    stdout, stderr = process.communicate()
    lines = stdout.decode().strip().splitlines()
    if not lines:
        # The reference relay blocks on the silent client: nothing arrives.
        return {
            "deliveries_per_s": 0.0,
            "latency_ms": {},
            "lost": None,
            "note": stderr.decode()[-300:],
        }
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def _mesh(peers: int, messages: int) -> dict[str, Any]:
    procs: list[trio.Process] = []
    ports: list[int] = []
    arrivals: dict[str, dict[int, float]] = {}  # text -> peer index -> arrival time
    linked = [0] * peers
    changed = trio.Event()

    async def pump_err(i: int, stream: trio.abc.ReceiveStream) -> None:
        nonlocal changed
        buf = b""
        async for chunk in stream:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if match := re.search(rb"listening on 127\.0\.0\.1:(\d+)", line):
                    ports.append(int(match.group(1)))
                if b"connected to" in line:
                    linked[i] += 1
                changed.set()
                changed = trio.Event()

    async def pump_out(i: int, stream: trio.abc.ReceiveStream) -> None:
        nonlocal changed
        buf = b""
        async for chunk in stream:
            now = time.monotonic()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if b"w5 " in line:
                    text = json.loads(line)["text"]
                    arrivals.setdefault(text, {})[i] = now
                    changed.set()
                    changed = trio.Event()

    async with trio.open_nursery() as nursery:
        try:
            for i in range(peers):
                command = [PY, "-m", "chat", "peer", "0", "--host", "127.0.0.1", "--json"]
                command += ["--name", f"m{i}", "--degree", str(peers), "--rate", "0"]
                if ports:
                    command.append(f"127.0.0.1:{ports[0]}")
                proc = await trio.lowlevel.open_process(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
                procs.append(proc)
                assert proc.stdout is not None and proc.stderr is not None
                nursery.start_soon(pump_err, i, proc.stderr)
                nursery.start_soon(pump_out, i, proc.stdout)
                with trio.fail_after(20):
                    while len(ports) <= i:
                        await changed.wait()
            with trio.fail_after(60):  # full mesh: everyone linked to everyone
                while min(linked) < peers - 1:
                    await changed.wait()
            latencies = []
            for n in range(messages):
                sender = procs[n % peers]
                text = f"w5 {n} {time.monotonic_ns()}"
                sent = time.monotonic()
                assert sender.stdin is not None
                await sender.stdin.send_all(text.encode() + b"\n")
                with trio.fail_after(10):
                    while len(arrivals.get(text, {})) < peers:
                        await changed.wait()
                latencies.append(max(arrivals[text].values()) - sent)
        finally:
            for proc in procs:
                proc.kill()
            nursery.cancel_scope.cancel()
    ordered = sorted(latencies)
    return {
        "peers": peers,
        "messages": messages,
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max_ms": 1000 * ordered[-1],
    }


def w5(quick: bool, logs: Path) -> dict[str, Any]:
    return trio.run(_mesh, 20, 50 if quick else 200)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, for a check")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    every = ["W1", "W2", "closed", "W3", "W4", "W5", "W6", "bus"]
    parser.add_argument("--only", nargs="*", default=every)
    args = parser.parse_args()
    raise_fd_limit(FD_LIMIT)  # children inherit it: 10000 clients need as many fds
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    logs = ROOT / "benchmarks" / "logs"
    logs.mkdir(exist_ok=True)
    # Every node started here keeps its identity and known names in the logs
    # directory, never in the person's own config directory.
    os.environ["XDG_CONFIG_HOME"] = str(logs / "config")
    from bus import bus  # noqa: PLC0415 (it imports this module: server, bench)

    workloads = {"W1": w1, "W2": w2, "closed": closed, "W3": w3, "W4": w4, "W5": w5, "W6": w6}
    workloads["bus"] = bus
    results: dict[str, Any] = {"machine": machine(), "fd_limit": soft}
    for name in args.only:
        print(f"bench: running {name} ...", file=sys.stderr, flush=True)
        results[name] = workloads[name](args.quick, logs)
        print(json.dumps(results[name])[:400], file=sys.stderr, flush=True)
        # Every figure, also of a partial run (--only): the report shows some.
        (logs / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if all(k in results for k in workloads):
        text = report(results, args.quick)
        print(text)
        Path(args.out).write_text(text)
        print(f"bench: written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
