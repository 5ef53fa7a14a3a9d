"""The demo's script, run as ``make demo`` runs it (without make)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent


def _ports(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    ports = [s.getsockname()[1] for s in socks]
    for sock in socks:
        sock.close()
    return ports


def _peers_on(ports: list[int]) -> list[str]:
    """Command lines of live processes that run a peer on any of ``ports``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if "chat" in words and "peer" in words and any(str(p) in words for p in ports):
            stat = (entry / "stat").read_text()
            if stat.split(") ", 1)[-1].startswith("Z"):
                continue  # a zombie has exited; it only awaits its parent
            found.append(" ".join(words))
    return found


def _transcripts(output: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if match := re.match(r"--- transcript of (\w) ", line):
            current = out[match.group(1)] = []
        elif current is not None and re.match(r"\d\d:\d\d:\d\d ", line):
            current.append(line[9:])
    return out


async def test_demo_tells_its_story() -> None:
    ports = _ports(4)
    env = dict(os.environ, PORTS=",".join(map(str, ports)), NO_COLOR="1")
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "chat.demo"],
            cwd=ROOT,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = result.stdout.decode()
    assert result.returncode == 0, output + result.stderr.decode()
    assert "demo: 5. D saw the history" in output
    seen = _transcripts(output)
    assert set(seen) == {"A", "B", "C", "D"}
    greetings = {f"<{n}> hello from {n}" for n in "ABC"}
    for name in "ABC":
        assert greetings <= set(seen[name]), name
        for greeting in greetings:
            assert seen[name].count(greeting) == 1, (name, greeting)
    for name in "AC":
        assert seen[name].count("*** B left") == 1
        assert "<D> hi all, I read the history" in seen[name]
    # The late joiner saw the earlier conversation as history.
    assert "[history] <A> hello from A" in seen["D"]
    assert "[history] <C> still here, A" in seen["D"]
    assert "<D> hi all, I read the history" in seen["D"]
    assert not any(line.startswith("[history] <D>") for line in seen["D"])
    assert _peers_on(ports) == []


async def test_demo_interrupted_leaves_no_process() -> None:
    ports = _ports(4)
    env = dict(os.environ, PORTS=",".join(map(str, ports)), NO_COLOR="1")
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "chat.demo"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        buf = b""
        # Interrupt once the peers are running and talking.
        while b"demo: 2." not in buf:
            chunk = await process.stdout.receive_some()
            assert chunk, buf
            buf += chunk
        process.send_signal(signal.SIGINT)
        async for _ in process.stdout:
            pass
        code = await process.wait()
    assert code != 0
    assert _peers_on(ports) == []
