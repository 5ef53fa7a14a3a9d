"""The ``bus`` workload of ``make bench``: hubs joined through one Redis.

W1 (as fast as possible) and W2 (200 clients x 1 message/s) against one hub
alone, then against two hubs on one redis-server with the clients split
between them (``trio-chat bench --also``), in the same run. Through two
hubs every event of one hub's senders crosses the bus once and is checked
(a relayed event, §4) by the other hub: W1's rate of distinct events through
two hubs is where the bus path saturates, in events/s through Redis.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from run import bench, server, w1_load, w2_load


@contextmanager
def redis_server(where: Path) -> Iterator[str]:
    """A redis-server of its own on a free port: its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(where)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def _two_hubs(logs: Path, url: str, name: str, **kw: Any) -> dict[str, Any]:
    bus = ("--bus", f"{url}?group={name}")
    with (
        server("hub", logs / f"bus-{name}-a.log", extra=bus) as a,
        server("hub", logs / f"bus-{name}-b.log", extra=bus) as b,
    ):
        time.sleep(0.5)  # (both read the stream before the clients come)
        result = bench(a.port, also=f"127.0.0.1:{b.port}", **kw)
    events = kw["senders"] * kw["messages"]
    result["events_through_bus_per_s"] = events / result["seconds"]
    return result


def bus(quick: bool, logs: Path) -> dict[str, Any]:
    if shutil.which("redis-server") is None:
        return {"skipped": "redis-server not found (Debian: apt-get install redis-server)"}
    w1, w2 = w1_load(quick), w2_load(quick)
    out: dict[str, Any] = {}
    with server("hub", logs / "bus-w1-alone.log") as alone:
        out["W1 one hub"] = bench(alone.port, **w1)
    with server("hub", logs / "bus-w2-alone.log") as alone:
        out["W2 one hub"] = bench(alone.port, **w2)
    with redis_server(logs) as url:
        out["W1 two hubs"] = _two_hubs(logs, url, "w1", **w1)
        out["W2 two hubs"] = _two_hubs(logs, url, "w2", **w2)
    return out
