"""End-to-end tests of hub mode: the real ``trio-chat hub`` as a subprocess.

Peers are real ``trio-chat peer`` subprocesses (see :mod:`procs`), netcat is
the real ``nc``, and where many clients are needed they are in-test protocol
clients (:mod:`wire`). Everything listens on 127.0.0.1 with port 0; the
one exception is the hub restarted on the port its first run reported.
Tests wait on output lines, frames and process exits, never on sleeps, and
every test has a ``fail_after`` deadline. § refers to docs/PROTOCOL.md.
"""

from __future__ import annotations

import io
import json
import logging
import re
import resource
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager

import pytest
import trio
from procs import (
    CLOCK,
    PYTHON_M,
    SCRIPT,
    ChatProcess,
    ProcessGroup,
    assert_busy_port,
    assert_usage_errors,
    joined,
    left,
    lost,
    process_group,
    said,
)
from programs import path_of
from wire import WireClient, summary

from chat.logs import HubFormatter, wants_colour
from chat.options import RESERVED_FDS, config_from, parse_args
from chat.protocol import Auth, CaughtUp, Error, Event, Hello, Peers
from chat.textclient import BANNER

TRANSCRIPT_LINE = re.compile(rf"^{CLOCK} (\[history\] )?(<[^>]+> .+|\*\*\* .+)$")
MSG_LINE = re.compile(rf"^{CLOCK} (?:\[history\] )?<(?P<name>[^>]+)> (?P<text>.*)$")
HUB_LISTENING = re.compile(
    rf"^{CLOCK} \[SUCCESS\] hub listening on (?P<host>.+):(?P<port>\d+)"
    r" \(identity SHA256:[A-Za-z0-9+/]{12}\)$"
)
# Parametrised tests run again in a closed group (§8), the secret in the
# environment of every process they start.
CLOSED_TOO = pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
SECRET = "the hub tests' secret, 32 bytes."
PLAIN_PORT = re.compile(r"plain-text clients on 127\.0\.0\.1:(\d+)")
HUB_LOG_LINE = re.compile(rf"^{CLOCK} \[[A-Z ]+\] ")
ERROR_LINE = re.compile(r"^\*\*\* error: [a-z_]+: .+$")  # §9: how an error reaches nc


# ------------------------------------------------------------ line patterns


def logged(tag: str, body: str) -> re.Pattern[str]:
    """A hub log line ``HH:MM:SS [TAG] body``; ``body`` is a regex."""
    return re.compile(rf"^{CLOCK} \[{re.escape(tag)}\] {body}$")


def new_connection(name: str, *, hub: bool = False) -> re.Pattern[str]:
    kind = r" \[hub\]" if hub else ""
    return logged("NEW CONNECTION", rf"{re.escape(name)}{kind} \(127\.0\.0\.1:\d+\)")


def active(count: int) -> re.Pattern[str]:
    return logged("ACTIVE CONNECTIONS", str(count))


def disconnected(name: str, why: str) -> re.Pattern[str]:
    """``why`` is a regex for the reason in parentheses."""
    return logged("DISCONNECTED", rf"{re.escape(name)} \({why}\)")


def received(name: str, text: str) -> re.Pattern[str]:
    return logged("RECEIVED", rf"From {re.escape(name)}: {re.escape(text)}")


def status(text: str) -> re.Pattern[str]:
    """A peer's stderr status line containing ``text``."""
    return re.compile(rf"^trio-chat: .*{re.escape(text)}")


# ----------------------------------------------------------------- helpers


@asynccontextmanager
async def watched_group() -> AsyncIterator[ProcessGroup]:
    """:func:`procs.process_group` that prints every output if the test fails.

    Mainly for a ``fail_after`` deadline, whose error alone does not say what
    the processes were doing; pytest shows the print with the failure.
    """
    async with process_group() as group:
        try:
            yield group
        except BaseException:
            print(group.describe())
            raise


async def start_hub(
    group: ProcessGroup,
    *args: str,
    port: int = 0,
    name: str = "hub",
    command: Sequence[str] = PYTHON_M,
) -> ChatProcess:
    """``trio-chat hub PORT args... --host 127.0.0.1 --name NAME``, once listening."""
    proc = await group.start(
        "hub", str(port), *args, "--host", "127.0.0.1", "--name", name, command=command, label=name
    )
    found = HUB_LISTENING.match(await proc.wait_stderr(HUB_LISTENING))
    assert found is not None
    proc.host, proc.port, proc.name = found["host"], int(found["port"]), name
    return proc


async def wait_next_line(proc: ChatProcess, line: str) -> str:
    """The stderr line right after ``line`` (the first such line), once it is there."""
    index = proc.stderr.lines.index(line) + 1
    await proc.wait_stderr(".*", since=index)
    return proc.stderr.lines[index]


async def leave_by_eof(*procs: ChatProcess) -> None:
    """Close every stdin and expect each to leave and exit 0."""
    for proc in procs:
        await proc.close_stdin()
    for proc in procs:
        assert await proc.wait() == 0, proc.describe()


def messages(proc: ChatProcess) -> dict[str, list[str]]:
    """What each name said in ``proc``'s transcript, in the order shown."""
    out: dict[str, list[str]] = {}
    for line in proc.stdout.lines:
        found = MSG_LINE.match(line)
        if found:
            out.setdefault(found["name"], []).append(found["text"])
    return out


def assert_no_duplicates(proc: ChatProcess, *, allowed: re.Pattern[str] | None = None) -> None:
    twice = [
        line
        for line, count in Counter(proc.stdout.lines).items()
        if count > 1 and not (allowed and allowed.search(line))
    ]
    assert not twice, (twice, proc.describe())


def assert_clean(
    group: ProcessGroup,
    *,
    hubs: Sequence[ChatProcess] = (),
    plain: Sequence[ChatProcess] = (),
    json_out: Sequence[ChatProcess] = (),
) -> None:
    """No traceback anywhere, no ANSI escape in any output (none is a terminal),
    transcripts hold only transcript lines and hub logs only log lines.

    ``plain`` (netcat) may also begin with the banner and end with the §9
    error line; ``json_out`` (--json) print one JSON object a line.
    """
    for proc in group.processes:
        for line in proc.stdout.lines + proc.stderr.lines:
            assert "Traceback" not in line, group.describe()
            assert "\x1b" not in line, (line, proc.describe())
        if proc in hubs:
            assert proc.stdout.lines == [], proc.describe()
            for line in proc.stderr.lines:
                assert HUB_LOG_LINE.match(line), (line, proc.describe())
        elif proc in json_out:
            for line in proc.stdout.lines:
                assert isinstance(json.loads(line), dict), (line, proc.describe())
        else:
            for line in proc.stdout.lines:
                ok = TRANSCRIPT_LINE.match(line) or (
                    proc in plain and (ERROR_LINE.match(line) or line == BANNER)
                )
                assert ok, (line, proc.describe())


def assert_in_order_once(events: list[Event], sent: dict[str, list[str]], who: str) -> None:
    """``events`` hold each origin's ``sent`` texts exactly once, in order."""
    got: dict[str, list[str]] = {}
    for event in events:
        if event.kind == "msg":
            got.setdefault(event.origin, []).append(event.text)
    assert got == sent, (who, got, sent)


@contextmanager
def open_files_allowed(need: int) -> Iterator[None]:
    """Raise this process's soft RLIMIT_NOFILE to ``need`` if it is lower.

    Children started meanwhile (the hub) inherit the raised limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        yield
        return
    assert hard == resource.RLIM_INFINITY or hard >= need, (
        f"this test needs {need} open files; the hard limit is {hard}"
    )
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ------------------------------------------------------------ one hub, peers


async def test_one_hub_five_peers_every_message_once_and_the_server_log() -> None:
    names = ["p1", "p2", "p3", "p4", "p5"]
    rounds = 3
    with trio.fail_after(30), socket.socket() as bait:
        # The watcher's listen port: a hub that leaked peers (§7) would make
        # the peers dial it.
        bait.bind(("127.0.0.1", 0))
        bait.listen()
        bait.setblocking(False)
        async with watched_group() as group, trio.open_nursery() as readers:
            hub = await start_hub(group)
            watcher = await WireClient.connect(hub.port, "watcher")
            readers.start_soon(watcher.read_all)
            hello = await watcher.handshake(listen=bait.getsockname()[1])
            assert (hello.role, hello.name, hello.listen) == ("hub", "hub", hub.port), hello
            line = await hub.wait_stderr(new_connection("watcher"))
            assert active(1).match(await wait_next_line(hub, line)), hub.describe()

            peers: list[ChatProcess] = []
            for count, name in enumerate(names, start=2):
                peers.append(await group.peer(name, hub.address))
                line = await hub.wait_stderr(new_connection(name))
                assert active(count).match(await wait_next_line(hub, line)), hub.describe()
            for proc in peers:
                for other in peers:
                    await proc.wait_stdout(joined(other.name, history=None))

            sent: dict[str, list[str]] = {name: [] for name in names}
            for turn in range(rounds):
                for proc in peers:
                    text = f"{proc.name} says {turn}"
                    sent[proc.name].append(text)
                    await proc.send_line(text)
            for proc in peers:
                for name, texts in sent.items():
                    for text in texts:
                        await proc.wait_stdout(said(name, text))
            total = len(names) * rounds
            await watcher.until(lambda: len(watcher.events("msg")) >= total)
            before_leaving = len(hub.stderr)

            await leave_by_eof(*peers)
            for proc in peers:
                await hub.wait_stderr(disconnected(proc.name, "left"))
            await hub.wait_stderr(active(1), since=before_leaving)
            hub.signal(signal.SIGINT)
            assert await hub.wait() == 0, hub.describe()
            await watcher.ended.wait()
            await watcher.aclose()

        # Every peer showed every message once, each sender's in order.
        for proc in peers:
            assert messages(proc) == sent, proc.describe()
            assert_no_duplicates(proc)
            # Linked to the hub only: the hub told nobody about anybody.
            assert proc.stderr.count(status("connected to")) == 1, proc.describe()
            assert proc.stderr.count(status("connected to hub (hub) at ")) == 1, proc.describe()
            assert proc.stderr.count(status("dialling")) == 0, proc.describe()
        with pytest.raises(BlockingIOError):
            bait.accept()

        # The watcher, a protocol peer: hello and auth, then events, never peers.
        frames = watcher.frames
        assert isinstance(frames[0], Hello), summary(frames)
        assert isinstance(frames[1], Auth), summary(frames)
        assert not any(isinstance(frame, Peers) for frame in frames), summary(frames)
        assert all(isinstance(frame, (Event, CaughtUp)) for frame in frames[2:-1]), summary(frames)
        assert isinstance(frames[-1], Error), summary(frames)
        assert frames[-1].code == "shutting_down", frames[-1]
        by_name = {event.origin: event.name for event in watcher.events()}
        assert_in_order_once(
            watcher.events(),
            {origin: sent[name] for origin, name in by_name.items() if name in sent},
            "watcher",
        )
        for name in names:
            joins = [e for e in watcher.events() if e.kind == "join" and e.name == name]
            assert len(joins) == 1, summary(frames)

        # The server log, line by line.
        for proc in peers:
            assert hub.stderr.count(new_connection(proc.name)) == 1, hub.describe()
            assert hub.stderr.count(disconnected(proc.name, "left")) == 1, hub.describe()
            for text in sent[proc.name]:
                assert hub.stderr.count(received(proc.name, text)) == 1, hub.describe()
        assert hub.stderr.count(logged("RECEIVED", ".*")) == total, hub.describe()
        assert hub.stderr.count(logged("ERROR", ".*")) == 0, hub.describe()
        assert_clean(group, hubs=[hub])


async def test_a_peer_killed_is_shown_lost_exactly_once() -> None:
    with trio.fail_after(20):
        async with watched_group() as group:
            hub = await start_hub(group)
            # A relayed lost about a node heard from in the dead-link time is
            # held until that time has passed (chat/screen.py): 3 s here.
            quick = ("--keepalive", "1")
            alice = await group.peer("alice", hub.address, *quick)
            bob = await group.peer("bob", hub.address, *quick)
            victim = await group.peer("victim", hub.address)
            watcher = await group.peer("watcher", hub.address, *quick, json=True)
            for proc in (alice, bob):
                await proc.wait_stdout(joined("victim", history=None))
            # A netcat user on the victim goes with it: its events were the
            # victim's to make, and nobody else will say it left.
            nc = await trio.open_tcp_stream("127.0.0.1", victim.port)
            await nc.send_all(b"/nick xena\nxena here\n")
            for proc in (alice, bob):
                await proc.wait_stdout(said("xena", "xena here"))
            await watcher.wait_stdout("xena here")

            victim.kill()
            assert await victim.wait() == -signal.SIGKILL
            await hub.wait_stderr(disconnected("victim", "connection lost: .+"))
            for proc in (alice, bob):
                await proc.wait_stdout(lost("victim"))
                await proc.wait_stdout(lost("xena"))
            await nc.aclose()
            # In --json, one lost line each, by node id (a lost event's name is
            # its reporter's); xena's says which host took it along.
            await watcher.wait_stdout('"hosted_by"')
            objs = [json.loads(line) for line in watcher.stdout.lines]
            ids = {o["name"]: o["origin"] for o in objs if o["type"] == "join"}
            gone = {o["node"]: o for o in objs if o["type"] == "lost"}
            assert sorted(gone) == sorted([ids["victim"], ids["xena"]]), objs
            assert gone[ids["xena"]]["hosted_by"] == ids["victim"]
            assert "hosted_by" not in gone[ids["victim"]]

            await alice.send_line("after the loss")
            await bob.wait_stdout(said("alice", "after the loss"))
            await bob.send_line("still here")
            await alice.wait_stdout(said("bob", "still here"))
            await leave_by_eof(bob)
            await alice.wait_stdout(left("bob"))
            await leave_by_eof(alice)

            for proc in (alice, bob):
                assert proc.stdout.count(lost("victim")) == 1, proc.describe()
                assert proc.stdout.count(lost("xena")) == 1, proc.describe()
                assert proc.stdout.count(left("victim")) == 0, proc.describe()
            assert hub.stderr.count(logged("DISCONNECTED", "victim .*")) == 1, hub.describe()
            assert_clean(group, hubs=[hub], json_out=[watcher])


# ------------------------------------------------------------- 200 clients


async def test_hub_fans_out_every_message_to_200_clients() -> None:
    clients_wanted = 200
    senders_wanted = 10
    per_sender = 20  # with its join, well inside the default burst of 50
    with open_files_allowed(4 * clients_wanted + 256), trio.fail_after(45):
        async with watched_group() as group, trio.open_nursery() as readers:
            # 200 clients from one address: the per-address limits lifted.
            hub = await start_hub(
                group, "--quiet", "--max-per-address", "0", "--join-rate", "0", "--log-rate", "0"
            )
            clients: list[WireClient] = []

            async def connect(index: int) -> None:
                client = await WireClient.connect(hub.port, f"c{index}")
                readers.start_soon(client.read_all)
                await client.handshake()
                clients.append(client)

            async with trio.open_nursery() as connecting:
                for index in range(clients_wanted):
                    connecting.start_soon(connect, index)
            await hub.wait_stderr(active(clients_wanted))

            senders = clients[:senders_wanted]
            sent: dict[str, list[str]] = {client.id: [] for client in senders}

            async def speak(client: WireClient) -> None:
                await client.join()
                for number in range(per_sender):
                    text = f"{client.name} message {number}"
                    sent[client.id].append(text)
                    await client.say(text)

            async with trio.open_nursery() as speaking:
                for client in senders:
                    speaking.start_soon(speak, client)

            def expected_for(client: WireClient) -> dict[str, list[str]]:
                return {origin: texts for origin, texts in sent.items() if origin != client.id}

            async def receive_all(client: WireClient) -> None:
                want = sum(map(len, expected_for(client).values()))
                await client.until(lambda: len(client.events("msg")) >= want)

            async with trio.open_nursery() as receiving:
                for client in clients:
                    receiving.start_soon(receive_all, client)

            hub.signal(signal.SIGTERM)
            assert await hub.wait() == 0, hub.describe()
            for client in clients:
                await client.ended.wait()
                await client.aclose()

        for client in clients:
            events = client.events()
            assert_in_order_once(events, expected_for(client), client.name)
            for sender in senders:
                if sender is not client:
                    first = next(e for e in events if e.origin == sender.id)
                    assert first.kind == "join", (client.name, summary(client.frames))
            assert not any(isinstance(f, Peers) for f in client.frames), client.name
            assert client.errors() == ["shutting_down"], client.name
        assert (
            hub.stderr.count(logged("NEW CONNECTION", r"c\d+ \(127\.0\.0\.1:\d+\)"))
            == clients_wanted
        ), hub.describe()
        assert hub.stderr.count(logged("RECEIVED", ".*")) == 0, hub.describe()
        assert_clean(group, hubs=[hub])


# ----------------------------------------------------------------- netcat


@pytest.mark.needs("nc")
@CLOSED_TOO
async def test_netcat_chats_with_peers_through_the_hub(
    closed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Closed (§8): the peers and the hub share a secret; netcat comes in by
    # the hub's plain-text port.
    if closed:
        monkeypatch.setenv("TRIO_CHAT_SECRET", SECRET)
    with trio.fail_after(20):
        async with watched_group() as group:
            hub = await start_hub(group, *(("--plain-port", "0") if closed else ()))
            port = hub.port
            if closed:
                line = await hub.wait_stderr(PLAIN_PORT)
                port = int(PLAIN_PORT.search(line)[1])  # type: ignore[index]
            alice = await group.peer("alice", hub.address)
            carol = await group.peer("carol", hub.address)
            await alice.wait_stdout(joined("carol", history=None))
            await carol.wait_stdout(joined("alice", history=None))

            nc = await group.start("127.0.0.1", str(port), command=(path_of("nc"),), label="nc")
            await nc.send_line("/nick bob")
            await nc.send_line("hello from netcat")
            for proc in (alice, carol):
                await proc.wait_stdout(joined("bob", history=False))
                await proc.wait_stdout(said("bob", "hello from netcat"))
            # Named by its /nick from the start, not by its address (§9).
            await hub.wait_stderr(new_connection("bob"))
            await hub.wait_stderr(received("bob", "hello from netcat"))

            await alice.send_line("hi bob")
            await nc.wait_stdout(said("alice", "hi bob"))
            await carol.send_line("bob, carol here")
            await nc.wait_stdout(said("carol", "bob, carol here"))
            await nc.send_line("/exit")
            for proc in (alice, carol):
                await proc.wait_stdout(left("bob"))
            await hub.wait_stderr(disconnected("bob", "left"))
            await nc.close_stdin()
            assert await nc.wait() == 0, nc.describe()
            await leave_by_eof(alice, carol)

        # nc got the recent chat as history, then the live chat, as plain text.
        await_lines = [
            joined("alice", history=True),
            joined("carol", history=True),
            said("alice", "hi bob"),
            said("carol", "bob, carol here"),
        ]
        for pattern in await_lines:
            assert nc.stdout.count(pattern) == 1, (pattern, nc.describe())
        assert nc.stdout.lines[0] == BANNER, nc.describe()  # the greeting, once
        for line in nc.stdout.lines[1:]:
            assert TRANSCRIPT_LINE.match(line), (line, nc.describe())
            assert "{" not in line, (line, nc.describe())
        assert nc.stdout.count("<bob>") == 0, nc.describe()  # no echo of its own
        for proc in (alice, carol):
            assert proc.stdout.count(said("bob", "hello from netcat")) == 1, proc.describe()
            assert proc.stdout.count(left("bob")) == 1, proc.describe()
            assert proc.stdout.count(lost("bob")) == 0, proc.describe()
            # The first line was the /nick: nobody ever saw an address name.
            assert proc.stdout.count(r"127\.0\.0\.1") == 0, proc.describe()
        assert_clean(group, hubs=[hub], plain=[nc])


# ----------------------------------------------------- linked hubs, restart


@CLOSED_TOO
async def test_linked_hubs_survive_a_killed_hub_restarted_on_its_port(
    closed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if closed:  # every hub and peer of the run shares the secret (§8)
        monkeypatch.setenv("TRIO_CHAT_SECRET", SECRET)
    with trio.fail_after(40):
        async with watched_group() as group:
            hub1 = await start_hub(group, name="hub1")
            hub2 = await start_hub(group, hub1.address, name="hub2")
            await hub1.wait_stderr(new_connection("hub2", hub=True))
            # Relayed lost reports are held for the dead-link time: 3 s here.
            quick = ("--keepalive", "1")
            a1 = await group.peer("a1", hub1.address, *quick)
            a2 = await group.peer("a2", hub1.address, *quick)
            b1 = await group.peer("b1", hub2.address, *quick)
            b2 = await group.peer("b2", hub2.address, *quick)
            peers = [a1, a2, b1, b2]
            sent: dict[str, list[str]] = {proc.name: [] for proc in peers}

            async def say(proc: ChatProcess, text: str) -> None:
                sent[proc.name].append(text)
                await proc.send_line(text)

            async def everyone_sees(texts: dict[str, str], among: list[ChatProcess]) -> None:
                for proc in among:
                    for name, text in texts.items():
                        await proc.wait_stdout(said(name, text))

            for proc in peers:
                for other in peers:
                    await proc.wait_stdout(joined(other.name, history=None))
            first = {proc.name: f"first from {proc.name}" for proc in peers}
            for proc in peers:
                await say(proc, first[proc.name])
            await everyone_sees(first, peers)

            # The second hub vanishes: both sides see it lost.
            hub2.kill()
            assert await hub2.wait() == -signal.SIGKILL
            await hub1.wait_stderr(disconnected("hub2", "connection lost: .+"))
            for proc in peers:
                await proc.wait_stdout(lost("hub2"))

            # The first hub's peers keep chatting; b1, cut off, talks alone.
            outage = {"a1": "while hub2 is down (a1)", "a2": "while hub2 is down (a2)"}
            for proc in (a1, a2):
                await say(proc, outage[proc.name])
            await everyone_sees(outage, [a1, a2])
            await say(b1, "alone on b1")
            await b1.wait_stdout(said("b1", "alone on b1"))
            # Their first re-dial (1 s after the drop) finds nobody listening.
            for proc in (b1, b2):
                await proc.wait_stderr(status("connection to hub2 lost"))
                await proc.wait_stderr(status(f"cannot reach {hub2.address}"))

            # Restarted on its port; it dials hub1, its peers re-dial it.
            mark = len(hub1.stderr)
            marks = {proc.name: len(proc.stderr) for proc in peers}
            hub2 = await start_hub(group, hub1.address, port=hub2.port, name="hub2")
            await hub1.wait_stderr(new_connection("hub2", hub=True), since=mark)
            await hub2.wait_stderr(new_connection("hub1", hub=True))
            for proc in (b1, b2):
                await hub2.wait_stderr(new_connection(proc.name))
                await proc.wait_stderr(status("connected to hub2 (hub)"), since=marks[proc.name])

            # Caught up both ways: what each side said during the outage.
            await everyone_sees(outage, [b1, b2])
            await everyone_sees({"b1": "alone on b1"}, [a1, a2, b2])
            last = {proc.name: f"last from {proc.name}" for proc in peers}
            for proc in peers:
                await say(proc, last[proc.name])
            await everyone_sees(last, peers)
            await leave_by_eof(*peers)

        hub2_joined = re.compile(rf"^{CLOCK} (\[history\] )?\*\*\* hub2 joined$")
        for proc in peers:
            assert messages(proc) == sent, proc.describe()
            assert proc.stdout.count(lost("hub2")) == 1, proc.describe()
            assert proc.stdout.count(r"\*\*\* .* lost$") == 1, proc.describe()
            # Two hub2s joined (the first run and the restart), maybe in one second.
            assert_no_duplicates(proc, allowed=hub2_joined)
        for proc in (b1, b2):
            # One warning for the whole outage, however many tries it took.
            assert proc.stderr.count(status("cannot reach")) == 1, proc.describe()
        assert_clean(group, hubs=[hub1, *(p for p in group.processes if p.name == "hub2")])


# --------------------------------------------------- the command, its log


@pytest.mark.needs("nc")
async def test_hub_exits_0_on_sigint_and_sigterm_telling_clients_shutting_down() -> None:
    with trio.fail_after(20):
        async with watched_group() as group, trio.open_nursery() as readers:
            hubs = {
                signal.SIGINT: await start_hub(group, command=SCRIPT, name="by-sigint"),
                signal.SIGTERM: await start_hub(group, command=SCRIPT, name="by-sigterm"),
            }
            clients: dict[signal.Signals, list[WireClient]] = {}
            hellos: dict[signal.Signals, Hello] = {}
            netcats: dict[signal.Signals, ChatProcess] = {}
            for sig, hub in hubs.items():
                nc = netcats[sig] = await group.start(
                    "127.0.0.1", str(hub.port), command=(path_of("nc"),), label=f"nc on {hub.name}"
                )
                await nc.send_line("/nick typist")
                await nc.wait_stdout(joined("typist", history=False))
                clients[sig] = []
                for name in ("one", "two"):
                    client = await WireClient.connect(hub.port, name)
                    readers.start_soon(client.read_all)
                    hellos[sig] = await client.handshake()
                    clients[sig].append(client)
                await clients[sig][0].join()
                await clients[sig][0].say("before the end")
                await clients[sig][1].wait_frame(
                    lambda f: isinstance(f, Event) and f.text == "before the end"
                )
            for sig, hub in hubs.items():
                hub.signal(sig)
            for sig, hub in hubs.items():
                assert await hub.wait() == 0, hub.describe()
                for client in clients[sig]:
                    await client.ended.wait()
                    await client.aclose()
                # netcat keeps running until its input ends, whatever the hub did.
                await netcats[sig].close_stdin()
                assert await netcats[sig].wait() == 0, netcats[sig].describe()

        for sig, hub in hubs.items():
            for client in clients[sig]:
                *_, leave, error = client.frames
                assert isinstance(leave, Event), summary(client.frames)
                assert (leave.kind, leave.origin) == ("leave", hellos[sig].node), leave
                assert isinstance(error, Error), summary(client.frames)
                assert error.code == "shutting_down", error
                assert client.end_reason == "end of stream", client.end_reason
            # netcat saw the hub leave, then the error as one plain line (§9).
            nc = netcats[sig]
            assert left(hub.name).match(nc.stdout.lines[-2]), nc.describe()
            assert nc.stdout.lines[-1].startswith("*** error: shutting_down: "), nc.describe()
            assert nc.stdout.count(said("one", "before the end")) == 1, nc.describe()
            # A shutdown is nobody's departure: no DISCONNECTED, no ERROR.
            assert hub.stderr.count(logged("DISCONNECTED", ".*")) == 0, hub.describe()
            assert hub.stderr.count(logged("ERROR", ".*")) == 0, hub.describe()
        assert_clean(group, hubs=list(hubs.values()), plain=list(netcats.values()))


async def test_busy_port_and_bad_arguments() -> None:
    with trio.fail_after(15):
        async with watched_group() as group:
            bad = {
                "port 70000": ["hub", "70000"],
                "port abc": ["hub", "abc"],
                "dial nohost": ["hub", "0", "nohost"],
            }
            usage = {
                what: await group.start(*args, "--host", "127.0.0.1", command=SCRIPT, label=what)
                for what, args in bad.items()
            }
            with socket.socket() as holder:
                holder.bind(("127.0.0.1", 0))
                holder.listen()
                busy_port = holder.getsockname()[1]
                busy = await group.start(
                    "hub", str(busy_port), "--host", "127.0.0.1", command=SCRIPT, label="busy"
                )
                busy_code = await busy.wait()

            await assert_usage_errors(usage, "hub")
            assert_busy_port(busy, busy_code, busy_port)
            for proc in group.processes:
                for line in proc.stderr.lines:
                    assert "Traceback" not in line, proc.describe()


async def test_quiet_drops_received_lines_but_keeps_connection_lines() -> None:
    with trio.fail_after(20):
        async with watched_group() as group, trio.open_nursery() as readers:
            loud = await start_hub(group, name="loud")
            quiet = await start_hub(group, "--quiet", name="quiet")
            for hub in (loud, quiet):
                talker = await WireClient.connect(hub.port, "talker")
                listener = await WireClient.connect(hub.port, "listener")
                for client in (talker, listener):
                    readers.start_soon(client.read_all)
                    await client.handshake()
                await talker.join()
                await talker.say("is anybody logging this?")
                await listener.wait_frame(lambda f: isinstance(f, Event) and f.kind == "msg")
                await talker.aclose()
                await hub.wait_stderr(disconnected("talker", ".+"))
                hub.signal(signal.SIGINT)
                assert await hub.wait() == 0, hub.describe()
                await listener.ended.wait()
                await listener.aclose()

        for hub in (loud, quiet):
            for name in ("talker", "listener"):
                assert hub.stderr.count(new_connection(name)) == 1, hub.describe()
            assert hub.stderr.count(active(2)) == 1, hub.describe()
            assert hub.stderr.count(active(1)) == 2, hub.describe()  # up, then down
        assert loud.stderr.count(received("talker", "is anybody logging this?")) == 1
        assert quiet.stderr.count(logged("RECEIVED", ".*")) == 0, quiet.describe()
        assert_clean(group, hubs=[loud, quiet])


# ------------------------------------------------------ colour, unit level


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(message: str, tag: str | None) -> logging.LogRecord:
    record = logging.LogRecord("chat", logging.INFO, __file__, 1, message, (), None)
    if tag is not None:
        record.tag = tag
    return record


# Pure functions: nothing here can block, so no deadline is needed.


def test_coloured_formatter_wraps_the_tag_in_escapes() -> None:
    record = _record("hub listening on 127.0.0.1:8080", "SUCCESS")
    plain = HubFormatter(colour=False).format(record)
    coloured = HubFormatter(colour=True).format(record)
    assert re.match(rf"^{CLOCK} \[SUCCESS\] hub listening on 127\.0\.0\.1:8080$", plain)
    assert re.match(
        rf"^{CLOCK} \x1b\[[0-9;]*m\[SUCCESS\]\x1b\[0m hub listening on 127\.0\.0\.1:8080$",
        coloured,
    ), coloured
    # Without a tag the level name stands in, coloured the same way.
    untagged = HubFormatter(colour=True).format(_record("note", None))
    assert re.match(rf"^{CLOCK} \x1b\[[0-9;]*m\[INFO\]\x1b\[0m note$", untagged), untagged
    assert "\x1b" not in HubFormatter(colour=False).format(_record("note", None))


def test_colour_only_for_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert wants_colour(FakeTerminal())
    assert not wants_colour(io.StringIO())  # not a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_colour(FakeTerminal())
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: only a non-empty value counts
    assert wants_colour(FakeTerminal())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not wants_colour(FakeTerminal())


# ------------------------------------------------------ descriptors


async def test_the_hub_raises_its_open_files_limit_and_sizes_its_connections_by_it() -> None:
    # A soft limit of 512 under a hard one of 4096: the hub takes the 4096
    # (as servers do), so its default --max-connections follows.
    low = (
        sys.executable,
        "-c",
        "import resource, runpy, sys;"
        " resource.setrlimit(resource.RLIMIT_NOFILE, (512, 4096));"
        " sys.argv[0] = 'trio-chat'; runpy.run_module('chat', run_name='__main__')",
    )
    with trio.fail_after(20):
        async with watched_group() as group:
            hub = await start_hub(group, command=low)
            limits = await trio.Path(f"/proc/{hub.process.pid}/limits").read_text()
            (row,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
            assert row.split()[3:5] == ["4096", "4096"], row
            hub.signal(signal.SIGTERM)
            assert await hub.wait() == 0, hub.describe()
    args = parse_args(["hub", "0"])
    assert config_from(args, "hub", fd_limit=4096).max_connections == 4096 - RESERVED_FDS
    args = parse_args(["hub", "0", "--max-connections", "100"])
    assert config_from(args, "hub", fd_limit=4096).max_connections == 100
