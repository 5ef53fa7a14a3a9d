"""``make demo``: three local peers show the mesh working, no typing needed.

A starts alone, B dials A, C dials B; each says something and C meets A
through peer exchange; B leaves; A and C keep talking; D joins late and
sees the history. Then every peer's transcript is printed. Each step waits
for what it needs to see (a line in a transcript), never for a fixed time.

Run: ``python -m chat.demo`` (``PORTS=9000,9001,9002,9003`` to choose ports).
Exits 0 when every peer saw what it should; no process is left behind, also
when interrupted.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

STEP_TIMEOUT = 15.0  # seconds any one step may take before the demo gives up
NAMES = ("A", "B", "C", "D")


@dataclass
class Peer:
    """One ``trio-chat peer`` subprocess with its transcript and status lines."""

    name: str
    port: int
    process: trio.Process
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    async def pump(self, stream: trio.abc.ReceiveStream, lines: list[str]) -> None:
        buf = b""
        async for chunk in stream:
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines.extend(line.decode("utf-8", "replace") for line in done)
            self.changed.set()
            self.changed = trio.Event()

    async def wait_for(self, pattern: str, lines: list[str] | None = None) -> str:
        """The first line matching ``pattern``, once it has been written."""
        lines = self.stdout if lines is None else lines
        regex = re.compile(pattern)
        with trio.fail_after(STEP_TIMEOUT):
            while True:
                for line in lines:
                    if regex.search(line):
                        return line
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited before printing {pattern!r}")
                await self.changed.wait()

    async def say(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode() + b"\n")

    async def quit(self) -> int:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()  # end of input means /exit
        with trio.fail_after(STEP_TIMEOUT):
            return await self.process.wait()


def free_ports(count: int, preferred: int = 8080) -> list[int]:
    """``preferred``, ``preferred+1``... when free, else ports the OS picks."""
    wanted = os.environ.get("PORTS")
    if wanted:
        ports = [int(p) for p in re.split(r"[,\s]+", wanted.strip()) if p]
        if len(ports) < count:
            raise SystemExit(f"PORTS needs {count} ports, got {len(ports)}")
        return ports[:count]
    ports = list(range(preferred, preferred + count))
    if all(_free(p) for p in ports):
        return ports
    out = []
    for _ in range(count):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            out.append(sock.getsockname()[1])
    return out


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def start_peer(
    nursery: trio.Nursery, name: str, port: int, dial: Sequence[int] = (), home: str = ""
) -> Peer:
    command = [sys.executable, "-m", "chat", "peer", str(port), "--host", "127.0.0.1"]
    command += [f"127.0.0.1:{p}" for p in dial] + ["--name", name]
    if home:
        # Each demo peer is a person of its own, and leaves nothing behind
        # in the person's own config directory (their identity, their
        # known names).
        command += ["--identity", os.path.join(home, f"{name}.key"), "--known-names", "none"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = await trio.lowlevel.open_process(
        command,
        stdin=-1,  # subprocess.PIPE
        stdout=-1,
        stderr=-1,
        env=env,
        start_new_session=True,  # Ctrl+C reaches the demo, which cleans up
    )
    peer = Peer(name, port, process)
    assert process.stdout is not None and process.stderr is not None
    nursery.start_soon(peer.pump, process.stdout, peer.stdout)
    nursery.start_soon(peer.pump, process.stderr, peer.stderr)
    await peer.wait_for(r"listening on", peer.stderr)
    return peer


async def scenario(
    peers: dict[str, Peer], ports: list[int], nursery: trio.Nursery, home: str = ""
) -> None:
    """The story the demo tells; raises if any peer misses its part."""
    step = _stepper()
    a, b, c = (peers[n] for n in "ABC")
    step(f"A, B, C on ports {ports[0]}, {ports[1]}, {ports[2]}: B dials A, C dials B")
    await a.wait_for(r"\*\*\* C joined")
    await c.wait_for(r"connected to A", c.stderr)
    step("C found A by peer exchange: a full mesh")
    for peer in (a, b, c):
        await peer.say(f"hello from {peer.name}")
    for peer in (a, b, c):
        for other in "ABC":
            await peer.wait_for(f"<{other}> hello from {other}")
    step("everyone heard everyone; now B leaves")
    assert await b.quit() == 0
    await a.wait_for(r"\*\*\* B left")
    await c.wait_for(r"\*\*\* B left")
    await a.say("B has gone, C; still there?")
    await c.say("still here, A")
    await a.wait_for(r"<C> still here, A")
    await c.wait_for(r"<A> B has gone")
    step(f"A and C kept talking; D joins late on port {ports[3]}, dialling C")
    d = peers["D"] = await start_peer(nursery, "D", ports[3], dial=[ports[2]], home=home)
    await d.wait_for(r"\[history\] <C> still here, A")
    await d.say("hi all, I read the history")
    await a.wait_for(r"<D> hi all")
    step("D saw the history; everyone leaves")
    for peer in (a, c, d):
        assert await peer.quit() == 0


def _stepper() -> Callable[[str], None]:
    count = 0

    def step(text: str) -> None:
        nonlocal count
        count += 1
        print(f"demo: {count}. {text}", flush=True)

    return step


def show(peers: dict[str, Peer], colour: bool) -> None:
    for name in NAMES:
        peer = peers.get(name)
        if peer is None:
            continue
        title = f"--- transcript of {name} (port {peer.port}) ---"
        print(f"\n\x1b[1m{title}\x1b[0m" if colour else f"\n{title}")
        for line in peer.stdout:
            print(f"\x1b[2m{line}\x1b[0m" if colour and "***" in line else line)


async def main() -> int:
    ports = free_ports(4)
    peers: dict[str, Peer] = {}
    ok = False
    home = tempfile.TemporaryDirectory(prefix="trio-chat-demo-")
    try:
        async with trio.open_nursery() as nursery:
            peers["A"] = await start_peer(nursery, "A", ports[0], home=home.name)
            peers["B"] = await start_peer(nursery, "B", ports[1], dial=[ports[0]], home=home.name)
            peers["C"] = await start_peer(nursery, "C", ports[2], dial=[ports[1]], home=home.name)
            await scenario(peers, ports, nursery, home.name)
            ok = True
    except* (trio.TooSlowError, RuntimeError, AssertionError) as group:
        for exc in group.exceptions:
            print(f"demo: failed: {exc!r}", file=sys.stderr)
    finally:
        for peer in peers.values():
            if peer.process.returncode is None:
                peer.process.send_signal(signal.SIGKILL)
                with trio.CancelScope(shield=True):
                    await peer.process.wait()
        home.cleanup()
    show(peers, colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    if ok:
        print("\ndemo: done; every peer saw what it should. Try it yourself: README.md")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(trio.run(main))
    except KeyboardInterrupt:
        sys.exit(130)
