"""Attacks on a node, each written as a test before its defence (issue 11).

Every test plays the attacker against real nodes on 127.0.0.1 (or memory
streams on the virtual clock where the point is time), then checks that
the bound holds: the node stays up, honest members keep chatting, and
memory is counted in what the node keeps (bytes in its structures), never
as RSS. § refers to docs/PROTOCOL.md; the limits are listed in the
README's "Limits" section.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import signal
import sys
import time

import pytest
import trio
import trio.testing
from harness import Group, NodeHandle, chatter, memory_chatter, memory_client, start_node
from procs import process_group
from wire import HOST, Origin, WireClient, new_id, open_stalled

from chat import render
from chat.config import Config, Timing
from chat.dialler import LEARNED_TRIES, Dialler, LinkEnd
from chat.frontend import execute
from chat.hub import LOG_BURST, LOG_RATE, HubRole
from chat.links import OWN_CATCH_UP
from chat.logs import HubFormatter, StatusFormatter
from chat.members import Entry
from chat.outbox import OUTBOX_BYTES
from chat.peer import DIALS_PER_SECOND, PeerRole
from chat.protocol import MAX_EVENT, MAX_FRAME, Error, Event, PeerInfo, Peers, encode, make_event
from chat.router import CATCH_UP_BYTES
from chat.state import HOLD_BACK, MAX_HELD_BYTES, MAX_ORIGINS, MAX_TOTAL_HELD, Delivery, Sequencer

# --------------------------------------------------------------------------
# Helpers


async def peer_client(group: Group, port: int, name: str, listen: int | None = None) -> WireClient:
    """A client that said hello as a peer (with a listen port, so it counts as one)."""
    client = await group.client(port, name)
    await client.handshake(listen=listen)
    group.nursery.start_soon(client.read_all)
    return client


async def still_chatting(a: NodeHandle, b: NodeHandle, text: str) -> None:
    """``a`` and ``b`` still hear each other."""
    assert a.node.say(text) is None
    await b.wait_text(text)


# --------------------------------------------------------------------------
# 1. One frame must not end a node: addresses


BAD_HOSTS = ["a..b", ".a", "a" * 64 + ".com", "x" * 300, "-a.com", "a_b.com", "é.com", "a b"]


@pytest.mark.parametrize("host", BAD_HOSTS)
async def test_a_peers_frame_with_a_bad_address_is_refused_and_nothing_dialled(
    group: Group, host: str
) -> None:
    with trio.fail_after(10):
        a = await group.start("a")
        b = await group.start("b")
        b.dial(a)
        await a.wait_linked(b)
        evil = await peer_client(group, a.port, "evil", listen=9)
        await a.wait_linked(evil.id)
        entry = PeerInfo(new_id(), "x", f"{host}:1")
        await evil.send(
            b'{"type":"peers","peers":[{"node":"%s","name":"x","addr":"%s:1"}]}\n'
            % (entry.node.encode(), host.encode())
        )
        await evil.ended.wait()
        assert evil.errors() == ["bad_frame"]
        assert a.node.dialler.learned == 0
        await still_chatting(a, b, f"still here after {host!r}")


async def test_hostnames_learned_from_peers_are_not_looked_up(group: Group) -> None:
    # Peers learn each other's addresses as (IP the link comes from, listen):
    # a hostname in a peers frame is nobody's dialable address, only a way
    # to make the node resolve names of the sender's choosing.
    with trio.fail_after(10):
        a = await group.start("a")
        evil = await peer_client(group, a.port, "evil", listen=9)
        await a.wait_linked(evil.id)
        await evil.send_frame(Peers((PeerInfo(new_id(), "x", "lookup.example.org:80"),)))
        await evil.send_frame(Peers((PeerInfo(new_id(), "y", "[::]:80"),)))
        await evil.send_frame(Peers((PeerInfo(new_id(), "z", "0.0.0.0:80"),)))
        await evil.send_frame(Peers((PeerInfo(new_id(), "m", "224.0.0.1:80"),)))
        pong = await evil.say("sync")  # something after the frames, to know they were read
        await a.wait_text(pong.text)
        assert a.node.dialler.learned == 0
        assert not evil.ended.is_set()


@pytest.mark.parametrize("host", ["a..b", "x" * 300])
async def test_connect_to_a_bad_address_is_a_usage_note(group: Group, host: str) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        outcome = execute(a.node, f"/connect {host}:1")
        assert outcome.notes == ["usage: /connect HOST:PORT"]
        await still_chatting(a, a, "alive")


class Weird(Exception):
    """Not an OSError: what a resolver or a bug of a library may raise."""


@pytest.mark.parametrize("error", [UnicodeError("label empty or too long"), Weird("boom")])
async def test_any_failure_of_a_dial_is_that_dials_failure(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    attempts = 0

    async def failing(host: str, port: int) -> trio.abc.Stream:
        nonlocal attempts
        attempts += 1
        await trio.lowlevel.checkpoint()
        raise error

    async def serve(stream: trio.abc.Stream, on_up: object) -> LinkEnd:
        raise AssertionError("never reached")

    async def unlinked(node: str) -> None:
        await trio.lowlevel.checkpoint()

    dialler = Dialler(serve, unlinked, timeout=10, open_stream=failing)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            dialler.start(nursery)
            dialler.connect("somewhere", 1, persistent=True)
            await dialler.settled()
            await trio.sleep(10)
            nursery.cancel_scope.cancel()
    assert attempts >= 3  # retried with back-off, the node unharmed
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings  # the first failure, then "still trying" once
    assert "cannot reach somewhere:1" in warnings[0]
    assert warnings[1].startswith("still trying somewhere:1: ")
    assert not [r for r in caplog.records if r.exc_info]  # logged once, no traceback


async def test_a_peer_that_errs_twice_is_closed(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        chatty = await peer_client(group, a.port, "chatty")
        await a.wait_linked(chatty.id)
        await chatty.send_frame(Error("bad_frame", "one complaint"))
        probe = await chatty.say("probe")
        await a.wait_text(probe.text)  # still linked after one error
        await chatty.send_frame(Error("bad_frame", "another"))
        await chatty.ended.wait()
        await a.wait_unlinked(chatty.id)


# --------------------------------------------------------------------------
# 2. Memory is bounded in bytes: held-back events, history, catch-up


def made_up(origin: Origin, seq: int, text: str) -> Event:
    """An event of ``origin`` with a seq of the attacker's choosing."""
    return make_event("msg", origin.key, seq, time.time(), origin.name, text=text)


def watch(monkeypatch: pytest.MonkeyPatch, sequencer: Sequencer) -> list[tuple[int, int]]:
    """Record (held in all, most held by one origin) after every event accepted."""
    seen: list[tuple[int, int]] = []
    accept = sequencer.accept

    def watched(event: Event, now: float) -> list[Delivery] | None:
        out = accept(event, now)
        track = sequencer._origins.get(event.origin)
        seen.append((sequencer.held_bytes, track.held_bytes if track else 0))
        return out

    monkeypatch.setattr(sequencer, "accept", watched)
    return seen


async def test_events_held_behind_gaps_stay_within_their_byte_bounds(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # For 40 made-up origins: seq 1, then only odd seqs, so every event
    # waits behind a gap; then one gap filled every 2 s, which used to
    # restart the hold-back and keep everything held for good.
    config = Config(name="hub", rate=0, link_rate=0)
    with trio.fail_after(120):
        hub = await start_node(nursery, config, HubRole(quiet=True), listen=False)
        sequencer = hub.node.sequencer
        seen = watch(monkeypatch, sequencer)
        attacker = await memory_chatter(nursery, hub, "attacker")
        origins = [Origin(f"o{i}") for i in range(40)]
        text = "x" * 4000
        # One origin alone past its own bound (1 MiB): 300 held of 4 KB.
        lone = Origin("lone")
        await attacker.send(made_up(lone, 1, "first").raw)
        await attacker.send(b"".join(made_up(lone, 3 + 2 * n, text).raw for n in range(300)))
        await attacker.send(b"".join(made_up(o, 1, "first").raw for o in origins))
        for n in range(150):
            await attacker.send(b"".join(made_up(o, 3 + 2 * n, text).raw for o in origins))
        for n in range(5):
            await trio.sleep(2)
            await attacker.send(b"".join(made_up(o, 2 + 2 * n, "fill").raw for o in origins))
        probe = await attacker.say("probe")
        await hub.wait_text(probe.text)
        largest = max(len(made_up(origins[0], 301, text).raw), 1)
        total, one = max(s[0] for s in seen), max(s[1] for s in seen)
        print(f"held back at most {total} bytes in all, {one} for one origin")
        assert total <= MAX_TOTAL_HELD + largest
        assert one <= MAX_HELD_BYTES + largest
        assert one > MAX_HELD_BYTES // 2  # (the lone origin did come near its bound)
        # Partial fills did not keep the rest held: all was given up in time.
        await trio.sleep(HOLD_BACK + 1)
        assert sequencer.held_bytes == 0
        await hub.stop()


async def test_history_is_bounded_in_bytes_and_catch_up_is_its_most_recent_part(
    nursery: trio.Nursery,
) -> None:
    history_bytes = 6 << 20
    config = Config(name="hub", rate=0, link_rate=0, history=100_000, history_bytes=history_bytes)
    with trio.fail_after(60):
        hub = await start_node(nursery, config, HubRole(quiet=True))
        talker = await chatter(nursery, hub.port, "talker")
        text = "y" * 4000
        for _ in range(20):
            await talker.send(b"".join(talker.event("msg", text).raw for _ in range(100)))
        probe = await talker.say("probe")
        await hub.wait_text(probe.text)
        history = hub.node.history
        assert history.bytes <= history_bytes
        assert len(history) < 2000
        # A newcomer lacking everything gets the most recent CATCH_UP_BYTES.
        newcomer = await chatter(nursery, hub.port, "newcomer")
        marker = await talker.say("marker")
        await newcomer.until(
            lambda: newcomer.last_event is not None and newcomer.last_event.key == marker.key
        )
        caught_up = sum(len(e.raw) for e in newcomer.events() if e.origin == talker.id)
        print(f"history {history.bytes} bytes of {len(history)} events; catch-up {caught_up} bytes")
        assert caught_up <= CATCH_UP_BYTES + 2 * len(marker.raw)
        assert newcomer.msgs[talker.id] < len(history)  # not the whole history
        await hub.stop()


async def test_connections_that_never_read_hold_no_copies_of_their_own(
    nursery: trio.Nursery,
) -> None:
    # Newcomers that say hello with an empty have and never read: each used
    # to pin its catch-up as a joined copy (2 MiB) and a key per event.
    config = Config(name="hub", rate=0, link_rate=0, timing=Timing(stall=30))
    with trio.fail_after(60):
        hub = await start_node(nursery, config, HubRole(quiet=True))
        talker = await chatter(nursery, hub.port, "talker")
        text = "z" * 4000
        for _ in range(10):
            await talker.send(b"".join(talker.event("msg", text).raw for _ in range(100)))
        silent = []
        for i in range(30):
            client = WireClient(await open_stalled(hub.port), f"silent{i}")
            await client.handshake()  # reads its hello; never reads again
            silent.append(client)
        # The events the silent ones were sent as catch-up: the burst below
        # pushes some out of the history (kept alive here, so ids hold).
        earlier = list(hub.node.history)
        await talker.send(b"".join(talker.event("msg", text).raw for _ in range(500)))
        probe = await talker.say("probe")
        await hub.wait_text(probe.text)
        history = hub.node.history
        links = [hub.link_to(client.id) for client in silent]
        # A frame is shared if it is an event's bytes as the history held
        # them (the same bytes object), or another outbox holds it too:
        # only the rest are a connection's own memory. (Sharing among
        # outboxes alone is not enough: a kernel that took more of one
        # socket's bytes than another's leaves that one alone with some.)
        holders = collections.Counter(id(f) for link in links for f in link.conn.outbox)
        shared = {id(event.raw) for event in [*earlier, *history]}
        shared |= {i for i, n in holders.items() if n > 1}
        for link in links:
            own = sum(len(frame) for frame in link.conn.outbox if id(frame) not in shared)
            # Its own bytes: at most the rest of one frame the kernel took part
            # of, and its small link frames; the rest is history's, shared.
            assert own <= MAX_EVENT + 1024, (
                own,
                [
                    (len(f), f[:60], f in {e.raw for e in history})
                    for f in link.conn.outbox
                    if id(f) not in shared
                ][:8],
                len(history),
                len(link.conn.outbox),
            )
            assert link.conn.queued_bytes <= OUTBOX_BYTES + MAX_EVENT
            assert link.cursor is not None  # behind, by a number into the history
        print(f"30 silent readers: outboxes share {len(shared)} history events")
        await hub.stop()


async def test_a_hellos_claim_about_its_own_seq_buys_no_budget(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # have[own id] = 10**12 made every later own event "catch-up", charged
    # to the large link budget: ~6000 messages a second got through.
    config = Config(name="hub")
    with trio.fail_after(60):
        hub = await start_node(nursery, config, HubRole(quiet=True), listen=False)
        watcher = await memory_chatter(nursery, hub, "watcher")
        flooder = memory_client(hub, "flooder", lockstep=True)
        await flooder.handshake(have={flooder.id: 10**12})
        nursery.start_soon(flooder.read_all)
        start = trio.current_time()

        async def flood() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while True:
                    await flooder.say("flood")

        nursery.start_soon(flood)
        await trio.sleep(5)
        got = watcher.msgs[flooder.id]
        allowed = config.burst + config.rate * (trio.current_time() - start) + OWN_CATCH_UP
        print(f"claimed have 10**12: {got} messages passed on in 5 s")
        assert got <= allowed
        await hub.stop()


# --------------------------------------------------------------------------
# 3. Slots and descriptors: one address cannot take them all


async def text_connect(port: int, line: bytes = b"") -> trio.SocketStream:
    stream = await trio.open_tcp_stream(HOST, port)
    if line:
        await stream.send_all(line)
    return stream


async def read_all(stream: trio.SocketStream) -> bytes:
    got = b""
    with contextlib.suppress(trio.BrokenResourceError):
        while data := await stream.receive_some():
            got += data
    return got


async def test_one_address_gets_a_bounded_number_of_plain_text_slots(nursery: trio.Nursery) -> None:
    config = Config(name="hub", max_text_per_address=16, max_per_address=64)
    with trio.fail_after(30):
        hub = await start_node(nursery, config, HubRole(quiet=True))
        streams = [await text_connect(hub.port, f"hello {i}\n".encode()) for i in range(40)]
        await hub.until(lambda: sum(1 for s in hub.node.audience.sessions) == 16)
        refused = []
        for stream in streams[16:]:
            refused.append(await read_all(stream))
        assert all(r.startswith(b"*** error: too_many_connections: ") for r in refused), refused
        # A node from the same address still gets in: the text slots are apart.
        member = await chatter(nursery, hub.port, "node")
        said = await member.say("a node is still welcome")
        await hub.wait_text(said.text)
        for stream in streams:
            await stream.aclose()
        await hub.stop()


async def test_joins_from_one_address_are_rate_limited(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # Connect, one line, close, as fast as possible: each cycle was a join,
    # a message and a leave in everyone's history, and five log lines.
    config = Config(name="hub", join_rate=5, join_burst=50)
    with trio.fail_after(30):
        hub = await start_node(nursery, config, HubRole(quiet=True))
        start = trio.current_time()
        for i in range(300):
            stream = await text_connect(hub.port, f"churn {i}\n".encode())
            await stream.aclose()
        elapsed = trio.current_time() - start
        probe = await memory_chatter(nursery, hub, "probe")  # (no address: not limited)
        await hub.until(lambda: len(hub.node.audience.sessions) == 0)
        joins = sum(1 for e in hub.entries if e.kind == "join" and e.who.startswith("127.0.0.1"))
        print(f"300 connect/line/close cycles in {elapsed:.2f} s: {joins} joins")
        assert joins <= 50 + 5 * elapsed + 2
        assert probe.errors() == []
        await hub.stop()


LOW_FD_HUB = (
    sys.executable,
    "-c",
    "import resource, runpy, sys;"
    " resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48));"
    " sys.argv[0] = 'trio-chat'; runpy.run_module('chat', run_name='__main__')",
)


async def test_out_of_descriptors_the_hub_answers_newcomers_and_logs_once() -> None:
    # A soft and hard limit of 48 descriptors, and --max-connections above
    # what fits: accept fails with EMFILE, which trio's serve_listeners
    # logged every 0.1 s while newcomers hung unanswered.
    async with process_group() as group:
        with trio.fail_after(30):
            proc = await group.start(
                "hub", "0", "--host", "127.0.0.1", "--max-connections", "1000",
                "--max-per-address", "0", "--join-rate", "0", "--max-text-per-address", "0",
                command=LOW_FD_HUB, label="hub",
            )  # fmt: skip
            found = re.search(
                r"listening on 127\.0\.0\.1:(\d+)", await proc.wait_stderr("listening")
            )
            assert found is not None
            port = int(found[1])
            streams = [await text_connect(port, b"here\n") for _ in range(45)]
            answers: dict[int, bytes] = {}

            async def first_answer(i: int, stream: trio.SocketStream) -> None:
                answers[i] = await stream.receive_some()  # a welcome, or the refusal

            async with trio.open_nursery() as nursery:
                for i, stream in enumerate(streams):
                    nursery.start_soon(first_answer, i, stream)
            turned_away = [a for a in answers.values() if a.startswith(b"*** error: too_many")]
            assert turned_away, "nobody was turned away: the limit was not reached"
            assert all(answers.values()), "a newcomer was left without an answer"
            for stream in streams:
                await stream.aclose()
            # Room again: a newcomer is served.
            late = await text_connect(port, b"/nick late\n")
            welcome = b""
            while b"late joined" not in welcome:  # served: its own join comes back
                welcome += await late.receive_some()
            await proc.wait_stderr("accepting connections again")
            await late.aclose()
            proc.signal(signal.SIGTERM)
            assert await proc.wait() == 0, proc.describe()
    episodes = [
        "out" if "out of file descriptors" in line else "again"
        for line in proc.stderr.lines
        if "out of file descriptors" in line or "accepting connections again" in line
    ]
    print(f"EMFILE: {len(turned_away)} turned away; log lines about it: {episodes}")
    # One line as an episode begins and one as it ends (descriptors come and
    # go as connections close), never one per failed accept.
    assert episodes[::2] == ["out"] * len(episodes[::2]), proc.describe()
    assert episodes[1::2] == ["again"] * len(episodes[1::2]), proc.describe()
    assert len(episodes) <= 6, proc.describe()
    assert "Traceback" not in proc.describe()


async def test_a_plain_text_client_that_neither_speaks_nor_reads_is_dropped(
    nursery: trio.Nursery,
) -> None:
    timing = Timing(ping_after=0.3, dead_after=0.9)
    config = Config(name="hub", rate=0, timing=timing)
    with trio.fail_after(30):
        hub = await start_node(nursery, config, HubRole(quiet=True))
        deaf = await open_stalled(hub.port, rcvbuf=4096)
        await deaf.send_all(b"/nick deaf\n")
        reader = await text_connect(hub.port, b"/nick reader\n")
        got = b""

        async def keep_reading() -> None:
            nonlocal got
            while data := await reader.receive_some():
                got += data

        nursery.start_soon(keep_reading)
        talker = await memory_chatter(nursery, hub, "talker")
        await hub.until(lambda: len(hub.node.audience.sessions) == 2)
        while len(hub.node.audience.sessions) == 2:
            await talker.say("x" * 4000)  # fills the deaf one's window
            await trio.sleep(0.05)  # pacing the talker, not waiting for anything
        names = {session.name for session in hub.node.audience.sessions}
        assert names == {"reader"}
        assert b"x" * 100 in got
        await hub.stop()


# --------------------------------------------------------------------------
# 4. What a remote says cannot forge a log line or drive a terminal

FORGED = "x\r\n23:59:59 [DISCONNECTED] alice (left)\x1b[2K\x08\x08"


async def test_error_frames_cannot_forge_hub_log_lines() -> None:
    async with process_group() as group:
        with trio.fail_after(20):
            proc = await group.start("hub", "0", "--host", "127.0.0.1", label="hub")
            found = re.search(
                r"listening on 127\.0\.0\.1:(\d+)", await proc.wait_stderr("listening")
            )
            assert found is not None
            client = await WireClient.connect(int(found[1]), "evil")
            await client.handshake()
            await client.send_frame(Error("code" + FORGED, FORGED * 500))
            await client.send_frame(Error("second", "closes it"))
            await proc.wait_stderr(re.compile(r"reported"))
            await client.aclose()
            await proc.wait_stderr(re.compile(r"DISCONNECTED"))
            proc.signal(signal.SIGTERM)
            assert await proc.wait() == 0
    lines = proc.stderr.lines
    assert not any(line.startswith("23:59:59") for line in lines), proc.describe()
    assert not any("\x1b" in line or "\x08" in line or "\u202e" in line for line in lines)
    reported = next(line for line in lines if "reported" in line)
    assert "␍␊23:59:59" in reported or "␊23:59:59" in reported  # shown, as pictures
    assert len(reported) < 400  # the message was cut to its documented length


def test_log_formatters_never_let_a_control_character_through() -> None:
    record = logging.LogRecord(
        "chat", logging.WARNING, __file__, 1, "%s said %s", (FORGED, FORGED), None
    )
    for formatter in (HubFormatter(colour=False), StatusFormatter()):
        text = formatter.format(record)
        assert "\n" not in text and "\r" not in text and "\x1b" not in text and "\x08" not in text


async def test_the_hub_log_keeps_one_address_to_its_share(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    # Each connect / line / close wrote five lines: 545 cycles a second
    # was 2,700 log lines a second from one address.
    caplog.set_level(logging.INFO, logger="chat")
    config = Config(name="hub", join_rate=0, max_text_per_address=0, max_per_address=0)
    with trio.fail_after(60):
        hub = await start_node(nursery, config, HubRole(), listen=False)
        role = hub.node.role
        assert isinstance(role, HubRole)
        start = trio.current_time()
        for i in range(200):  # one address's clients, as the hub's log sees them
            role._event("10.0.0.9", "RECEIVED", "%s: %s", "churner", f"line {i}")
        role._event("10.0.0.8", "RECEIVED", "%s: %s", "someone", "else is heard")
        await trio.sleep(2)  # the watchdog's sweep reports what was held back
        lines = [r.getMessage() for r in caplog.records]
        churn = [line for line in lines if line.startswith("churner:")]
        assert len(churn) <= LOG_BURST + LOG_RATE * (trio.current_time() - start)
        assert "someone: else is heard" in lines
        (held,) = [line for line in lines if "more lines suppressed" in line]
        assert held == f"10.0.0.9: {200 - len(churn)} more lines suppressed"
        await hub.stop()


async def test_a_join_is_rendered_once_not_once_per_client(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1,000 plain-text joins cost 5.3 s of CPU: every join was rendered for
    # every client, O(N**2). Now once per line shown (twice at most: live
    # and as history), the newcomers' replays of recent lines included.
    renders = 0
    line = render.line

    def counted(entry: Entry) -> str:
        nonlocal renders
        renders += 1
        return line(entry)

    monkeypatch.setattr(render, "line", counted)
    clients = 100
    with trio.fail_after(30):
        hub = await start_node(nursery, Config(name="hub"), HubRole(quiet=True), listen=False)
        for i in range(clients):
            ours, theirs = trio.testing.memory_stream_pair()
            hub.node.add_stream(theirs, outgoing=False)
            await ours.send_all(f"/nick c{i}\n".encode())
            nursery.start_soon(drain, ours)
        await hub.until(lambda: len(hub.node.audience) == clients)
        print(f"{clients} plain-text joins: {renders} lines rendered")
        assert renders <= 2 * (clients + 1)  # the joins and the hub's own
        await hub.stop()


async def drain(stream: trio.abc.ReceiveStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while await stream.receive_some():
            pass


# --------------------------------------------------------------------------
# 5. Peer exchange: frames that fit, sent at a sane rate, and no dialling service


async def test_peers_frames_stay_under_max_frame_and_are_coalesced(group: Group) -> None:
    # 300 made-up peers with long names link to V: its peers frame grew past
    # MAX_FRAME, so its real neighbour W refused it and was cut again and
    # again; and each newcomer made V re-advertise to every link.
    with trio.fail_after(60):
        v = await group.start("v", max_per_address=0, join_rate=0)  # all from 127.0.0.1
        w = await group.start("w")
        w.dial(v)
        await v.wait_linked(w)
        fakes = []
        for i in range(300):
            client = await group.client(v.port, "\U0001f980" * 30 + f"{i:02}"[-2:])
            await client.handshake(listen=20000 + i)
            fakes.append(client)
        await v.until(lambda: len(v.node.neighbours) == 301)
        listener = fakes[0]
        listener_peers = 0
        start = trio.current_time()
        while trio.current_time() - start < 2.5:
            with trio.move_on_after(0.1):
                frame = await listener.receive_frame()
                if isinstance(frame, Peers):
                    listener_peers += 1
                    assert len(encode(frame)) <= MAX_FRAME
        # W, the real neighbour, was never cut by a frame too long.
        assert w.id in v.node.neighbours
        assert v.id in w.node.neighbours
        await still_chatting(v, w, "still linked")
        # Coalesced: at most one peers frame a second to a link.
        print(f"a link got {listener_peers} peers frames in 2.5 s")
        assert listener_peers <= 4


async def test_learning_from_one_link_dials_at_a_bounded_rate(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # One link listing new addresses made a peer open 669 connections a second.
    with trio.fail_after(60):
        peer = await start_node(nursery, Config(name="peer", degree=8), listen=False)
        attempts: list[float] = []

        async def refuse(host: str, port: int) -> trio.abc.Stream:
            attempts.append(trio.current_time())
            await trio.lowlevel.checkpoint()
            raise ConnectionRefusedError(111, "refused")

        peer.node.dialler._open = refuse
        evil = memory_client(peer, "evil")
        await evil.handshake(listen=9)
        nursery.start_soon(evil.read_all)
        await peer.wait_linked(evil.id)
        start = trio.current_time()
        for round_ in range(20):
            entries = tuple(PeerInfo(new_id(), "x", f"127.0.{round_}.{i + 1}:9") for i in range(50))
            await evil.send_frame(Peers(entries))
            await trio.sleep(0.5)
        elapsed = trio.current_time() - start
        rate = len(attempts) / elapsed
        print(f"{len(attempts)} dial attempts in {elapsed:.1f} s from one link's peers frames")
        assert attempts, "the link made the peer dial nothing: nothing was tested"
        assert len(attempts) <= LEARNED_TRIES * (8 + DIALS_PER_SECOND * elapsed)
        assert rate < 30
        await peer.stop()


# --------------------------------------------------------------------------
# 6. Per-origin state of every kind is bounded


async def test_made_up_origins_cost_bounded_state(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # 1.2 million made-up origins grew PeerRole.via from 108 to 234 MiB; a gap
    # per origin made the next deadline a scan and the expiry a sort.
    # Every made-up origin needs a key and signed events (protocol 2), so the
    # bound is lowered from MAX_ORIGINS for the test: the same code enforces it.
    bound = 5000
    config = Config(
        name="peer", rate=0, link_rate=0, origin_rate=1e9, history=1000, max_origins=bound
    )
    assert Config("x").max_origins == MAX_ORIGINS
    with trio.fail_after(120):
        peer = await start_node(nursery, config, listen=False)
        relay = await memory_chatter(nursery, peer, "relay")
        total = bound + 1000
        for _ in range(0, total, 500):
            batch = []
            for _ in range(500):
                origin = Origin("o")
                batch.append(made_up(origin, 1, "a").raw)
                batch.append(made_up(origin, 3, "gap").raw)  # each origin held behind a gap
            await relay.send(b"".join(batch))
        probe = await relay.say("probe")
        await peer.wait_text(probe.text)
        node = peer.node
        role = node.role
        assert isinstance(role, PeerRole)
        sizes = {
            "sequencer": len(node.sequencer),
            "members": len(node.members),
            "via": len(role.via),
            "origin budgets": len(node.links.origins),
        }
        print(f"{total} origins: {sizes}")
        assert all(size <= bound + 2 for size in sizes.values()), sizes
        assert node.router.bad_signatures == 0  # (all of them counted: signed right)
        await trio.sleep(HOLD_BACK + 1)  # every gap given up, by the heap
        assert node.sequencer.held_bytes == 0
        await peer.stop()


# --------------------------------------------------------------------------
# 7. lost and ts: what one member says of others and of the time


async def test_a_lost_report_cannot_make_a_talking_member_look_gone(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Behind a hub, anyone's lost about alice was shown while she was there.
    with trio.fail_after(300):
        hub = await start_node(nursery, Config(name="hub"), HubRole(quiet=True))
        bob = await start_node(nursery, Config(name="bob"))
        bob.dial(hub)
        await bob.wait_linked(hub)
        alice = await chatter(nursery, hub.port, "alice")
        liar = await chatter(nursery, hub.port, "liar")
        await bob.wait_entry(lambda e: e.kind == "join" and e.origin == liar.id)
        quiet_after = bob.node.config.timing.dead_after
        for i in range(3):
            await liar.send(liar.event("lost", node=alice.id).raw)
            await bob.until(lambda: bob.node.sequencer.have(liar.id) == liar.seq)
            await trio.sleep(quiet_after / 2)  # held, not shown: she spoke lately
            assert bob.about("lost", alice.id) == []
            said = await alice.say(f"still here {i}")  # heard: the report was stale
            await bob.wait_text(said.text)
        await trio.sleep(quiet_after)
        assert bob.about("lost", alice.id) == []
        # Now alice really goes: the hub's report is shown, once her silence
        # has lasted the dead-link time.
        await alice.abort()
        gone = trio.current_time()
        entry = await bob.wait_entry(
            lambda e: e.kind == "lost" and e.event is not None and e.event.node == alice.id
        )
        assert entry.history is False
        assert trio.current_time() - gone <= quiet_after + 1
        await bob.stop()
        await hub.stop()


async def test_a_chosen_ts_never_makes_a_live_message_history(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(20):
        hub = await start_node(nursery, Config(name="hub"), HubRole(quiet=True))
        early = await chatter(nursery, hub.port, "early")
        old = early.event("msg", "said before bob came")
        await early.send(old.raw)
        await hub.wait_text(old.text)
        bob = await start_node(nursery, Config(name="bob"))
        bob.dial(hub)
        history = await bob.wait_text(old.text)
        assert history.history  # catch-up from before bob's join: history, as always
        liar = await chatter(nursery, hub.port, "liar")
        now = time.time()
        for shift, text in ((-3600, "an hour ago, says I"), (+3600, "from the future")):
            event = make_event("msg", liar.key, liar.seq + 1, now + shift, "liar", text=text)
            liar.seq += 1
            await liar.send(event.raw)
            shown = await bob.wait_text(text)
            assert not shown.history
            assert shown.sent == now + shift  # the claim, beside...
            assert abs(shown.ts - time.time()) < 10  # ...the time it came
            assert render.line(shown).split(" ", 1)[1].startswith("(sent ")
        await bob.stop()
        await hub.stop()
