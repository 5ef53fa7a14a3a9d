"""W6 of ``make bench``: what checking relayed events costs (protocol 2, §4).

One peer process R sits in a mesh between a feeder and a reader, both
protocol-2 peers written here. The feeder sends R ``N`` messages as fast as
R takes them, in two runs on fresh processes:

- **own**: the feeder's own messages. First hop: R takes them on the
  handshake's word, without checking a signature.
- **relayed**: messages of 200 other origins, each signed by its origin's
  key, which the feeder relays. R checks every one (once: none repeats).

R forwards each to the reader, which counts them. The figures are R's CPU
seconds (from ``/proc``) per run, so events per CPU-second is events per
core (R is one thread), and their difference per event is the cost of a
check. A third relayed run is sampled by py-spy, attached to R, to show
where R's time goes. Signing happens before the timed part.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from chat.framing import Decoder
from chat.handshake import Handshake
from chat.keys import SigningKey
from chat.protocol import Event, TextLine, encode, make_event, make_hello

PY = sys.executable
SPY = shutil.which("py-spy", path=f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}")
ORIGINS = 200
CHUNK = 500  # events per send


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def handshake(stream: trio.SocketStream, key: SigningKey, name: str) -> None:
    """The dialler's side of §3 (nothing follows the node's proof until ours)."""
    shake = Handshake(
        key, outgoing=True, make_hello=lambda nonce: make_hello(key, nonce, name, "peer", None, {})
    )
    for frame in shake.start():
        await stream.send_all(encode(frame))
    decoder = Decoder()
    while not shake.done:
        data = await stream.receive_some(65536)
        if not data:
            raise ConnectionError(f"{name}: closed during the handshake")
        for received in decoder.feed(data):
            if isinstance(received, TextLine):
                raise ConnectionError(f"{name}: the node answered in plain text")
            for answer in shake.receive(received):
                await stream.send_all(encode(answer))
            if shake.done:
                break


def events(relayed: bool, count: int, feeder: SigningKey) -> list[bytes]:
    """``count`` messages, signed before anything is timed."""
    if not relayed:
        own = [make_event("join", feeder, 1, time.time(), "feeder").raw]
        return own + [
            make_event("msg", feeder, n + 2, time.time(), "feeder", text=f"w6 {n}").raw
            for n in range(count)
        ]
    keys = [SigningKey() for _ in range(ORIGINS)]
    out: list[bytes] = []
    for n in range(count):
        key = keys[n % ORIGINS]
        event: Event = make_event("msg", key, n // ORIGINS + 1, time.time(), "far", text=f"w6 {n}")
        out.append(event.raw)
    return out


def start_peer(home: Path) -> tuple[subprocess.Popen[bytes], int]:
    command = [PY, "-m", "chat", "peer", "0", "--host", "127.0.0.1", "--name", "R", "--json"]
    command += ["--rate", "0", "--link-rate", "0", "--origin-rate", "0", "--known-names", "none"]
    command += ["--history", "1000", "--identity", str(home / "r.key")]
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    found = re.search(rb"listening on 127\.0\.0\.1:(\d+)", line)
    if found is None:
        proc.kill()
        raise RuntimeError(f"R did not start: {line!r}")
    return proc, int(found[1])


async def feed(
    port: int, pid: int, feeder_key: SigningKey, lines: list[bytes], expected: int
) -> dict[str, float]:
    """Reader and feeder on R; R's CPU seconds and the wall time until all arrived."""
    reader = await trio.open_tcp_stream("127.0.0.1", port)
    await handshake(reader, SigningKey(), "reader")
    feeder = await trio.open_tcp_stream("127.0.0.1", port)
    await handshake(feeder, feeder_key, "feeder")
    got = 0
    done = trio.Event()

    async def count() -> None:
        nonlocal got
        tail = b""
        while got < expected:
            data = await reader.receive_some(1 << 20)
            if not data:
                break
            both = tail + data
            got += both.count(b'"type":"msg"') - tail.count(b'"type":"msg"')
            tail = data[-16:]
        done.set()

    cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(count)
        for i in range(0, len(lines), CHUNK):
            await feeder.send_all(b"".join(lines[i : i + CHUNK]))
        with trio.fail_after(300):
            await done.wait()
    wall, cpu = time.perf_counter() - wall0, cpu_seconds(pid) - cpu0
    await feeder.aclose()
    await reader.aclose()
    return {"received": got, "cpu_s": cpu, "wall_s": wall}


def one_run(relayed: bool, count: int, home: Path, profile: Path | None = None) -> dict[str, Any]:
    proc, port = start_peer(home)
    spy = None
    try:
        key = SigningKey()
        lines = events(relayed, count, key)
        if profile is not None:
            spy_args = ["record", "--pid", str(proc.pid), "--format", "raw", "--rate", "250"]
            spy = subprocess.Popen(
                [SPY or "py-spy", *spy_args, "--output", str(profile)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # let it attach before the feed begins
        result = trio.run(feed, port, proc.pid, key, lines, count)
    finally:
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes what it sampled
            spy.wait(timeout=30)
        proc.kill()
        proc.wait()
    result["events"] = count
    result["events_per_cpu_s"] = count / result["cpu_s"]
    return result


def hot_spots(profile: Path, top: int = 8) -> list[tuple[str, float]]:
    """The functions R spent its samples in (inclusive), largest share first."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in profile.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        n = int(samples)
        total += n
        seen = set()
        for frame in stack.split(";"):
            name = re.sub(r":\d+\)$", ")", frame.strip())
            if name not in seen:
                seen.add(name)
                inclusive[name] += n
    # The node's own work, below the frames every sample shares (main, run, serve...).
    interesting = (
        (name, n)
        for name, n in inclusive.most_common()
        if n < 0.85 * total and ("chat/" in name or "cryptography" in name or "json" in name)
    )
    return [(name, round(100 * n / max(total, 1), 1)) for name, n in list(interesting)[:top]]


def w6(quick: bool, logs: Path) -> dict[str, Any]:
    count = 20_000 if quick else 100_000
    home = logs / "w6-home"
    home.mkdir(exist_ok=True)
    own = one_run(False, count, home)
    relayed = one_run(True, count, home)
    result: dict[str, Any] = {"own": own, "relayed": relayed}
    per_event = (relayed["cpu_s"] - own["cpu_s"]) / count
    result["check_us_per_event"] = 1e6 * per_event
    if SPY:
        profile = logs / "w6-relayed.pyspy.txt"
        one_run(True, count, home, profile)
        result["profile"] = hot_spots(profile) if profile.exists() else "py-spy wrote nothing"
    else:
        result["profile"] = "py-spy not installed (pip install py-spy)"
    return result
