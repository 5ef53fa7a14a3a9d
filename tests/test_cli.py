"""End-to-end tests of the real ``trio-chat`` command, run as subprocesses.

Every peer runs non-interactively (stdin a pipe) on 127.0.0.1 with port 0;
its actual port comes from its ``listening on`` status line. Tests wait on
output lines and process exits (see :mod:`procs`), never on sleeps,
and every test has a ``fail_after`` deadline. Transcript formats are those
of PROTOCOL.md §9; ``--json`` objects carry the §4 event fields plus
``history``.
"""

from __future__ import annotations

import getpass
import json
import re
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

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
    line_pattern,
    lost,
    process_group,
    said,
)

TRANSCRIPT_LINE = re.compile(rf"^{CLOCK} (\[history\] )?(<[^>]+> .+|\*\*\* .+)$")
NODE_ID = re.compile(r"^[0-9a-f]{32}$")
EVENT_KINDS = {"join", "msg", "nick", "leave", "lost"}


# ------------------------------------------------------------ line patterns


def renamed(old: str, new: str) -> re.Pattern[str]:
    return line_pattern(rf"\*\*\* {re.escape(old)} is now known as {re.escape(new)}", False)


def status(text: str) -> re.Pattern[str]:
    """A stderr status line containing ``text``."""
    return re.compile(rf"^trio-chat: .*{re.escape(text)}")


def json_event(kind: str, name: str, **fields: Any) -> Callable[[str], bool]:
    """A ``--json`` line with this type, name and these field values."""

    def test(line: str) -> bool:
        try:
            obj = json.loads(line)
        except ValueError:
            return False
        if not isinstance(obj, dict) or obj.get("type") != kind or obj.get("name") != name:
            return False
        return all(key in obj and obj[key] == value for key, value in fields.items())

    return test


# ------------------------------------------------------------------ checks


def assert_clean(
    group: ProcessGroup,
    *,
    json_output: tuple[ChatProcess, ...] = (),
    not_chat: tuple[ChatProcess, ...] = (),
) -> None:
    """Stdout holds only transcript lines (or JSON objects); no tracebacks anywhere.

    ``not_chat`` processes (``--version``) get only the traceback check.
    """
    for proc in group.processes:
        for line in proc.stderr.lines:
            assert "Traceback" not in line, group.describe()
        if proc in not_chat:
            continue
        for line in proc.stdout.lines:
            if proc in json_output:
                assert isinstance(json.loads(line), dict), (line, proc.describe())
            else:
                assert TRANSCRIPT_LINE.match(line), (line, proc.describe())


def assert_json_event(obj: dict[str, Any]) -> None:
    """A --json object has the protocol fields of its type, well typed, plus history."""
    assert obj["type"] in EVENT_KINDS, obj
    assert NODE_ID.match(obj["origin"]), obj
    assert isinstance(obj["seq"], int), obj
    assert obj["seq"] >= 1, obj
    assert isinstance(obj["ts"], int | float), obj
    assert abs(obj["ts"] - time.time()) < 600, obj
    assert isinstance(obj["name"], str), obj
    assert obj["name"], obj
    assert isinstance(obj["history"], bool), obj
    if obj["type"] == "msg":
        assert isinstance(obj["text"], str), obj
        assert obj["text"], obj
    if obj["type"] == "lost":
        assert NODE_ID.match(obj["node"]), obj


async def leave_by_eof(*procs: ChatProcess) -> None:
    """Close every stdin and expect each to leave and exit 0."""
    for proc in procs:
        await proc.close_stdin()
    for proc in procs:
        assert await proc.wait() == 0, proc.describe()


def reserve_port() -> int:
    """A loopback port that was free a moment ago and has no listener now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------------- tests


async def test_three_peers_every_transcript_has_every_message_once() -> None:
    with trio.fail_after(20):
        async with process_group() as group:
            alice = await group.peer("alice")
            bob = await group.peer("bob", alice.address)
            carol = await group.peer("carol", bob.address)
            peers = [alice, bob, carol]
            # Started one after another: a peer's join is history to those
            # started later (§6), and live to itself and those started earlier.
            for i, proc in enumerate(peers):
                for j, other in enumerate(peers):
                    await proc.wait_stdout(joined(other.name, history=j < i))

            texts = {
                "alice": "hello from alice",
                "bob": "bob here: ünïcödé ✓",
                "carol": "carol says <hi> & [bye]",
            }
            for proc in peers:
                await proc.send_line(texts[proc.name])
            for proc in peers:
                for name, text in texts.items():
                    await proc.wait_stdout(said(name, text))
            await leave_by_eof(*peers)

            for i, proc in enumerate(peers):
                for name, text in texts.items():
                    assert proc.stdout.count(said(name, text, history=None)) == 1, proc.describe()
                for j, other in enumerate(peers):
                    pattern = joined(other.name, history=None)
                    assert proc.stdout.count(pattern) == 1, proc.describe()
                    assert proc.stdout.count(joined(other.name, history=j < i)) == 1
            assert_clean(group)


async def test_json_transcript_and_history_for_late_joiners() -> None:
    with trio.fail_after(20):
        async with process_group() as group:
            alice = await group.peer("alice")
            await alice.send_line("before anyone came")
            await alice.wait_stdout(said("alice", "before anyone came"))

            bob = await group.peer("bob", alice.address, json=True)
            await bob.wait_stdout(json_event("join", "alice", history=True, seq=1))
            await bob.wait_stdout(
                json_event("msg", "alice", history=True, seq=2, text="before anyone came")
            )
            await bob.wait_stdout(json_event("join", "bob", history=False, seq=1))

            carol = await group.peer("carol", alice.address)
            await carol.wait_stdout(said("alice", "before anyone came", history=True))
            await carol.wait_stdout(joined("alice", history=True))
            await carol.wait_stdout(joined("bob", history=True))
            await carol.wait_stdout(joined("carol"))
            await bob.wait_stdout(json_event("join", "carol", history=False))

            await alice.send_line("after everyone came")
            await bob.send_line("bob in json")
            await carol.wait_stdout(said("alice", "after everyone came"))
            await bob.wait_stdout(
                json_event("msg", "alice", history=False, text="after everyone came")
            )
            await bob.wait_stdout(
                json_event("msg", "bob", history=False, seq=2, text="bob in json")
            )
            await alice.wait_stdout(said("bob", "bob in json"))
            await carol.wait_stdout(said("bob", "bob in json"))
            await leave_by_eof(alice, bob, carol)

            # Every line of bob's transcript is one JSON object with the
            # protocol fields, and alice's events carry alice's one origin.
            objects = [json.loads(line) for line in bob.stdout.lines]
            for obj in objects:
                assert_json_event(obj)
            alice_origins = {obj["origin"] for obj in objects if obj["name"] == "alice"}
            assert len(alice_origins) == 1, objects
            alice_msgs = [o for o in objects if o["type"] == "msg" and o["name"] == "alice"]
            assert [(o["text"], o["history"]) for o in alice_msgs] == [
                ("before anyone came", True),
                ("after everyone came", False),
            ]
            assert carol.stdout.count(said("alice", "before anyone came", history=None)) == 1
            assert carol.stdout.count(said("alice", "after everyone came", history=None)) == 1
            assert_clean(group, json_output=(bob,))


async def test_every_way_of_leaving_sends_leave_and_exits_0() -> None:
    with trio.fail_after(20):
        async with process_group() as group:
            alice = await group.peer("alice")
            ways = ["exit", "quit", "eof", "sigint", "sigterm"]
            leavers = {way: await group.peer(f"by-{way}", alice.address) for way in ways}
            for proc in leavers.values():
                await alice.wait_stdout(joined(proc.name))
                await proc.wait_stdout(joined(proc.name))

            await leavers["exit"].send_line("/exit")
            await leavers["quit"].send_line("/quit")
            await leavers["eof"].close_stdin()
            leavers["sigint"].signal(signal.SIGINT)
            leavers["sigterm"].signal(signal.SIGTERM)
            codes = {way: await proc.wait() for way, proc in leavers.items()}
            for proc in leavers.values():
                await alice.wait_stdout(left(proc.name))

            await alice.send_line("/exit")
            assert await alice.wait() == 0, alice.describe()
            assert codes == dict.fromkeys(ways, 0), group.describe()
            for proc in leavers.values():
                assert alice.stdout.count(left(proc.name)) == 1, alice.describe()
                assert alice.stdout.count(lost(proc.name)) == 0, alice.describe()
            assert_clean(group)


async def test_sigkill_in_full_mesh_is_lost_once_and_the_rest_keep_chatting() -> None:
    with trio.fail_after(20):
        async with process_group() as group:
            alice = await group.peer("alice")
            bob = await group.peer("bob", alice.address)
            carol = await group.peer("carol", alice.address)
            peers = [alice, bob, carol]
            # Peer exchange makes the three a full mesh (§7).
            for proc in peers:
                for other in peers:
                    if other is not proc:
                        await proc.wait_stderr(status(f"connected to {other.name} "))

            bob.kill()
            assert await bob.wait() == -signal.SIGKILL
            survivors = [alice, carol]
            for proc in survivors:
                await proc.wait_stdout(lost("bob"))
                # Its own link noticed too (whatever it made of it), so any
                # lost event of its own is already on its way to the other.
                await proc.wait_stderr(status("connection to bob "))

            await alice.send_line("still here")
            await carol.wait_stdout(said("alice", "still here"))
            await carol.send_line("me too")
            await alice.wait_stdout(said("carol", "me too"))
            await leave_by_eof(carol)
            await alice.wait_stdout(left("carol"))
            await leave_by_eof(alice)

            for proc in survivors:
                assert proc.stdout.count(lost("bob")) == 1, proc.describe()
                assert proc.stdout.count(left("bob")) == 0, proc.describe()
            assert_clean(group)


async def test_usage_errors_and_a_busy_port() -> None:
    with trio.fail_after(15):
        async with process_group() as group:
            bad = {
                "port 70000": ["peer", "70000"],
                "port abc": ["peer", "abc"],
                "dial nohost": ["peer", "0", "nohost"],
                "dial host:99999": ["peer", "0", "host:99999"],
            }
            usage = {
                what: await group.start(*args, "--host", "127.0.0.1", label=what)
                for what, args in bad.items()
            }
            with socket.socket() as holder:
                holder.bind(("127.0.0.1", 0))
                holder.listen()
                busy_port = holder.getsockname()[1]
                busy = await group.start(
                    "peer", str(busy_port), "--host", "127.0.0.1", "--name", "x", label="busy"
                )
                busy_code = await busy.wait()

            await assert_usage_errors(usage, "peer")
            assert_busy_port(busy, busy_code, busy_port)
            assert_clean(group)


async def test_line_handling_long_empty_unknown_slash_and_nick() -> None:
    with trio.fail_after(20):
        async with process_group() as group:
            alice = await group.peer("alice")
            bob = await group.peer("bob", alice.address)
            await alice.wait_stdout(joined("bob"))
            await bob.wait_stdout(joined("alice", history=True))

            await bob.send_line("x" * 4097)
            refused = await bob.wait_stderr(status("not sent"))
            assert "4096" in refused
            after_refusal = len(bob.stderr)
            await bob.send_line("")
            await bob.send_line("   ")
            await bob.send_line("/bogus")
            unknown = await bob.wait_stderr("/bogus", since=after_refusal)
            assert "/help" in unknown
            # Empty lines are ignored without a word: the note about /bogus
            # is the first thing said after the refusal.
            assert bob.stderr.lines[after_refusal] == unknown, bob.describe()

            longest = "y" * 4096
            await bob.send_line(longest)
            await bob.send_line("after the long one")
            await bob.send_line("//slash at the start")
            await bob.send_line("/nick bob2")
            await alice.wait_stdout(renamed("bob", "bob2"))
            await bob.send_line("renamed now")
            await alice.wait_stdout(said("bob2", "renamed now"))
            await leave_by_eof(bob)
            await alice.wait_stdout(left("bob2"))
            await alice.send_line("/exit")
            assert await alice.wait() == 0

            # Everything bob said, as alice saw it, in order: nothing from the
            # refused line (not even truncated), nothing from empty lines.
            bob_said = [
                line.split("> ", 1)[1]
                for line in alice.stdout.lines
                if re.match(rf"^{CLOCK} <bob2?> ", line)
            ]
            assert bob_said == [longest, "after the long one", "/slash at the start", "renamed now"]
            for proc in (alice, bob):
                assert not any("xxxx" in line for line in proc.stdout.lines), proc.describe()
                assert not any("bogus" in line for line in proc.stdout.lines), proc.describe()
            assert bob.stdout.count(renamed("bob", "bob2")) == 1
            assert_clean(group)


async def test_dial_retries_quietly_until_the_target_listens() -> None:
    with trio.fail_after(25):
        async with process_group() as group:
            target_port, never_port = reserve_port(), reserve_port()
            # dave dials a port nobody ever listens on, for the whole test.
            dave = await group.peer("dave", f"127.0.0.1:{never_port}")
            await dave.wait_stderr(status(f"cannot reach 127.0.0.1:{never_port}"))

            alice = await group.peer("alice", f"127.0.0.1:{target_port}")
            warning = await alice.wait_stderr(status(f"cannot reach 127.0.0.1:{target_port}"))
            assert warning.startswith("trio-chat: warning: "), warning
            bob = await group.peer("bob", port=target_port)
            assert bob.port == target_port
            # The first retry comes 1 s after the failure (back-off).
            await alice.wait_stderr(status("connected to bob "))
            await alice.wait_stdout(joined("bob"))
            await bob.wait_stdout(joined("alice", history=True))
            await alice.send_line("got through")
            await bob.wait_stdout(said("alice", "got through"))
            assert alice.stderr.count(status("cannot reach")) == 1, alice.describe()
            await leave_by_eof(alice, bob)

            # dave kept running and kept trying (its second try came 1 s after
            # the first, before alice's), still with the single warning.
            await dave.send_line("still alive")
            await dave.wait_stdout(said("dave", "still alive"))
            await leave_by_eof(dave)
            assert dave.stderr.count(status("cannot reach")) == 1, dave.describe()
            assert_clean(group)


async def test_console_script_python_m_and_the_login_name() -> None:
    with trio.fail_after(15):
        async with process_group() as group:
            version_script = await group.start("--version", command=SCRIPT)
            version_module = await group.start("--version", command=PYTHON_M)
            for proc in (version_script, version_module):
                assert await proc.wait() == 0, proc.describe()
                assert re.match(r"^trio-chat \S+$", proc.stdout.lines[0]), proc.describe()

            # No --name and no terminal: the login name, never a prompt (a
            # prompt would swallow the first line as the name).
            scripted = await group.peer(None, command=SCRIPT)
            assert scripted.name == getpass.getuser(), scripted.describe()
            await scripted.send_line("via the script")
            await scripted.wait_stdout(said(scripted.name, "via the script"))

            module = await group.peer(None, scripted.address, env={"LOGNAME": "loginzed"})
            assert module.name == "loginzed", module.describe()
            await module.send_line("via python -m")
            await module.wait_stdout(said("loginzed", "via python -m"))
            await scripted.wait_stdout(said("loginzed", "via python -m"))
            await leave_by_eof(scripted, module)
            assert_clean(group, not_chat=(version_script, version_module))
