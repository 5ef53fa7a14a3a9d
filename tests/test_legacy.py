"""The relay seed's own client, telnet and port probes against the real command.

The relay seed (``server.py`` + ``client.py``) is one of the systems
trio-chat replaces: a person who starts ``trio-chat hub`` in place of
``server.py`` keeps using ``client.py``. :class:`SeedClient` behaves on the
wire exactly as that client does (issue 12): it probes the port (connect,
close), connects again, waits 10 s before the person may type, sends each
message as UTF-8 with no line ending, one send per message, seconds apart,
prints whatever each ``recv(1024)`` returns, stripped, and leaves by closing
the socket. Its sleeps are the client's and its person's own pacing, not
waits for something to happen.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import trio
from procs import ChatProcess, ProcessGroup, joined, process_group
from programs import path_of

from chat.changes import Changes

HOST = "127.0.0.1"
SEED_WAIT = 10.5  # the seed client's wait before the person may type
BETWEEN = 2.0  # seconds between the person's messages
HUB_LISTENING = re.compile(r"hub listening on 127\.0\.0\.1:(\d+) \(identity SHA256:\S{12}\)$")
ADDRESS = r"127\.0\.0\.1:\d+"  # how the seed client is named: by its address (§9)


def from_seed(message: str) -> re.Pattern[str]:
    return re.compile(rf"<{ADDRESS}> {re.escape(message)}$")


SEED_LEFT = re.compile(rf"\*\*\* {ADDRESS} left$")
SEED_LOST = re.compile(rf"\*\*\* {ADDRESS} lost$")


class SeedClient:
    """``client.py`` of the relay seed, as it behaves on the wire."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[str] = []  # each recv, stripped, as it printed them
        self.raw = b""
        self.stream: trio.SocketStream | None = None
        self.changes = Changes()

    async def start(self, nursery: trio.Nursery) -> None:
        """Probe the port, connect, and wait as the client does before its prompt."""
        probe = await trio.open_tcp_stream(HOST, self.port)  # "is the server up?"
        await probe.aclose()
        self.stream = await trio.open_tcp_stream(HOST, self.port)
        nursery.start_soon(self._receive)
        await trio.sleep(SEED_WAIT)  # the client's own wait before the prompt

    async def say(self, message: str) -> None:
        """One message: UTF-8, no line ending, one send; the person's pause after."""
        assert self.stream is not None
        await self.stream.send_all(message.encode())
        await trio.sleep(BETWEEN)

    async def _receive(self) -> None:
        assert self.stream is not None
        try:
            while data := await self.stream.receive_some(1024):
                self.raw += data
                self.received.append(data.decode(errors="replace").strip())
                self.changes.notify()
        except trio.ClosedResourceError:
            pass  # it quit

    async def until(self, predicate: Callable[[str], bool]) -> None:
        """Until what it printed so far satisfies ``predicate``."""
        await self.changes.until(lambda: predicate(self.text()))

    async def quit(self) -> None:
        """``q``: close the socket."""
        assert self.stream is not None
        await self.stream.aclose()

    def text(self) -> str:
        return "\n".join(self.received)


async def start_hub(group: ProcessGroup) -> tuple[ChatProcess, int]:
    hub = await group.start("hub", "0", "--host", "127.0.0.1", label="hub")
    found = HUB_LISTENING.search(await hub.wait_stderr(HUB_LISTENING))
    assert found is not None
    return hub, int(found[1])


MESSAGES = ["hello from the seed client", "a second message, with no newline", "bye now"]


async def seed_chats(seed: SeedClient, others: list[ChatProcess], nursery: trio.Nursery) -> None:
    """The seed client's session: everyone hears it, it hears everyone, then it quits."""
    await seed.start(nursery)
    await seed.say(MESSAGES[0])
    for proc in others:
        await proc.wait_stdout(from_seed(MESSAGES[0]))
        await proc.send_line(f"hi seed, {proc.name} here")
    for proc in others:
        greeting = f"hi seed, {proc.name} here"
        await seed.until(lambda text: greeting in text)  # noqa: B023 - awaited at once
    for message in MESSAGES[1:]:
        await seed.say(message)
    for proc in others:
        for message in MESSAGES:
            await proc.wait_stdout(from_seed(message))
    await seed.quit()
    for proc in others:
        await proc.wait_stdout(SEED_LEFT)


def assert_seed_session(seed: SeedClient, others: list[ChatProcess]) -> None:
    assert b"{" not in seed.raw, seed.raw  # never JSON
    for proc in others:
        assert re.search(rf"<{proc.name}> hi seed, {proc.name} here", seed.text()), seed.text()
        for message in MESSAGES:
            assert proc.stdout.count(from_seed(message)) == 1, proc.describe()
        assert proc.stdout.count(SEED_LEFT) == 1, proc.describe()
        assert proc.stdout.count(SEED_LOST) == 0, proc.describe()


@pytest.mark.needs("nc")
async def test_the_seed_client_chats_through_the_hub_with_a_peer_and_netcat() -> None:
    with trio.fail_after(60):
        async with process_group() as group, trio.open_nursery() as nursery:
            hub, port = await start_hub(group)
            alice = await group.peer("alice", f"127.0.0.1:{port}")
            nc = await group.start("127.0.0.1", str(port), command=(path_of("nc"),), label="netty")
            nc.name = "netty"  # (a peer's name is read from its output; nc's is set here)
            await nc.send_line("/nick netty")
            await alice.wait_stdout(joined("netty", history=None))
            seed = SeedClient(port)
            await seed_chats(seed, [alice, nc], nursery)
            await nc.close_stdin()
            await alice.close_stdin()
            assert await alice.wait() == 0, alice.describe()
            hub.signal(2)
            assert await hub.wait() == 0, hub.describe()

    assert_seed_session(seed, [alice, nc])
    log = hub.stderr.lines
    assert not [line for line in log if "[ERROR]" in line], hub.describe()
    probes = [line for line in log if "closed before saying anything" in line]
    assert len(probes) == 1, hub.describe()  # the probe: one quiet line, no event
    for message in MESSAGES:
        assert sum("[RECEIVED] From 127.0.0.1:" in line and message in line for line in log) == 1
    print("the seed client printed:")
    print("\n".join(f"[RECEIVED] {chunk}" for chunk in seed.received if chunk))
    print("the hub logged:")
    print("\n".join(log))


async def test_the_seed_client_chats_with_a_mesh_peer() -> None:
    with trio.fail_after(60):
        async with process_group() as group, trio.open_nursery() as nursery:
            alice = await group.peer("alice")
            bob = await group.peer("bob", alice.address)
            await bob.wait_stdout(joined("alice", history=None))
            seed = SeedClient(int(alice.address.rpartition(":")[2]))
            await seed_chats(seed, [alice, bob], nursery)
            for proc in (alice, bob):
                await proc.close_stdin()
                assert await proc.wait() == 0, proc.describe()
    assert_seed_session(seed, [alice, bob])


async def test_a_port_probe_leaves_no_trace() -> None:
    with trio.fail_after(20):
        async with process_group() as group:
            hub, port = await start_hub(group)
            alice = await group.peer("alice", f"127.0.0.1:{port}")
            for _ in range(3):
                probe = await trio.open_tcp_stream(HOST, port)
                await probe.aclose()
            await hub.wait_stderr(re.compile(r"closed before saying anything"))
            await alice.send_line("after the probes")
            await alice.close_stdin()
            assert await alice.wait() == 0
            hub.signal(2)
            assert await hub.wait() == 0
    log = hub.stderr.lines
    assert not [line for line in log if "[ERROR]" in line], hub.describe()
    assert len([line for line in log if "closed before saying anything" in line]) == 3
    assert not [line for line in log if "NEW CONNECTION] 127.0.0.1" in line], hub.describe()
    # No join, leave or lost for anyone but alice and the hub.
    names = re.findall(r"\*\*\* (\S+) (?:joined|left|lost)", "\n".join(alice.stdout.lines))
    assert set(names) <= {"alice", "hub"}, alice.describe()


@pytest.mark.needs("telnet")
async def test_telnet_sends_lines_renames_and_leaves_with_quit() -> None:
    with trio.fail_after(30):
        async with process_group() as group:
            hub, port = await start_hub(group)
            alice = await group.peer("alice", f"127.0.0.1:{port}")
            telnet = await group.start(
                "127.0.0.1", str(port), command=(path_of("telnet"),), label="telnet"
            )
            await telnet.send_line("/nick tel")  # telnet sends CR LF
            await alice.wait_stdout(joined("tel", history=False))
            await telnet.send_line("hello via telnet")
            await alice.wait_stdout(re.compile(r"<tel> hello via telnet$"))
            await alice.send_line("hi tel")
            await telnet.wait_stdout(re.compile(r"<alice> hi tel$"))
            await telnet.send_line("/nick telly")
            await alice.wait_stdout(re.compile(r"\*\*\* tel is now known as telly$"))
            # Ctrl+] then quit: telnet closes the connection, which is a leave.
            assert telnet.process.stdin is not None
            await telnet.process.stdin.send_all(b"\x1d")
            await telnet.send_line("quit")
            await alice.wait_stdout(re.compile(r"\*\*\* telly left$"))
            await alice.close_stdin()
            assert await alice.wait() == 0
    assert alice.stdout.count(re.compile(r"\*\*\* telly lost$")) == 0
    assert not [line for line in telnet.stdout.lines if line.startswith("{")], telnet.describe()
    assert not [line for line in hub.stderr.lines if "[ERROR]" in line], hub.describe()
