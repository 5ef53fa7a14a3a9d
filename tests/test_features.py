"""What people expect of a terminal chat (issue 15), over real sockets.

/me, private messages sealed end to end (three peers, and through a hub
that cannot read them), /reply, /ignore by identity, mentions and the bell,
the log file, and the commands netcat and telnet clients get.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing
from harness import Group, NodeHandle, start_node
from procs import process_group
from wire import HOST, Origin

from chat import render
from chat.attention import Attention
from chat.cli import status_text
from chat.config import Config
from chat.frontend import execute
from chat.hub import HubRole
from chat.keys import SigningKey
from chat.logfile import ChatLog
from chat.members import Entry
from chat.options import parse_args
from chat.private import BoxKey, Sealed, seal
from chat.protocol import Event, make_event
from chat.sockets import dialable

SECRET_TEXT = "the key is under the third flowerpot"


async def mesh(group: Group, *names: str) -> list[NodeHandle]:
    handles = await group.linked(*names)
    for handle in handles:  # and with each other, by peer exchange
        await handle.wait_linked(*[h for h in handles if h is not handle])
    return handles


def shown(handle: NodeHandle, kind: str) -> list[Entry]:
    return [e for e in handle.entries if e.kind == kind and e.shown]


async def text_client(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream(HOST, port)


async def read_until(stream: trio.SocketStream, wanted: bytes, got: bytearray) -> None:
    while wanted not in got:
        data = await stream.receive_some()
        assert data, f"closed before {wanted!r}; got {bytes(got)!r}"
        got += data


# --------------------------------------------------------------------------
# /me


async def test_me_is_an_action_everywhere(group: Group) -> None:
    with trio.fail_after(10):
        alice, bob = await mesh(group, "alice", "bob")
        person = await text_client(bob.port)
        got = bytearray()
        await person.send_all(b"/nick nc\n")
        await read_until(person, b"*** trio-chat: type /nick NAME", got)
        assert execute(alice.node, "/me waves").sent
        entry = await bob.wait_entry(lambda e: e.kind == "msg" and e.action)
        assert render.line(entry).endswith("* alice waves")
        await read_until(person, b"* alice waves\n", got)
        # An older node shows it as a message: the bytes are a msg with "me".
        event = entry.event
        assert event is not None and event.kind == "msg" and event.extra == {"me": True}
        await person.send_all(b"/me nods\n")
        nod = await alice.wait_entry(lambda e: e.action and e.text == "nods")
        assert render.describe(nod) == "* nc nods"
        await person.aclose()


# --------------------------------------------------------------------------
# Private messages


@pytest.mark.parametrize("path", ["hub", "mesh"])
async def test_a_private_message_is_read_by_its_recipient_alone(group: Group, path: str) -> None:
    with trio.fail_after(10):
        alice, bob, carol = [await group.start(n) for n in ("alice", "bob", "carol")]
        if path == "hub":
            hub = await group.start("hub", HubRole(quiet=True))
            for peer in (alice, bob, carol):
                peer.dial(hub)
        else:  # three peers: alice and bob meet through carol
            hub = carol
            alice.dial(carol)
            bob.dial(carol)
        present = 4 if path == "hub" else 3
        for peer in (alice, bob, carol):
            await peer.until(lambda p=peer: len(p.node.members.present()) == present)  # type: ignore[misc]
        assert execute(alice.node, f"/msg bob {SECRET_TEXT}").sent
        got = await bob.wait_entry(lambda e: e.kind == "pm" and e.shown)
        assert got.text == SECRET_TEXT and got.who == "alice" and not got.outgoing
        assert render.line(got).endswith(f"[private] <alice> {SECRET_TEXT}")
        (mine,) = shown(alice, "pm")
        assert mine.outgoing and render.describe(mine) == f"-> bob: {SECRET_TEXT}"
        # Everyone carried it; only bob could read it.
        await carol.until(lambda: any(e.kind == "pm" for e in carol.node.history))
        assert shown(carol, "pm") == [] and shown(hub, "pm") == []
        for node in {hub, alice, bob, carol}:
            for event in node.node.history:
                assert SECRET_TEXT.encode() not in event.raw, node.node.name
        # /reply goes back to alice.
        assert execute(bob.node, "/reply got it").sent
        answer = await alice.wait_entry(lambda e: e.kind == "pm" and not e.outgoing)
        assert answer.text == "got it" and answer.who == "bob"


async def test_private_messages_refuse_what_they_cannot_do(group: Group) -> None:
    with trio.fail_after(10):
        alice, bob = await mesh(group, "alice", "bob")
        twin = await group.start("bob", identity=SigningKey())
        twin.dial(alice)
        await alice.until(lambda: len(alice.node.members.find("bob")) == 2)
        notes = execute(alice.node, "/msg bob hi").notes
        assert notes[0].startswith("not sent: bob is more than one person: say which (bob~")
        notes = execute(alice.node, "/msg zed hi").notes
        assert notes == ["not sent: nobody called zed is here; /peers lists who is"]
        notes = execute(alice.node, "/msg alice hi").notes
        assert notes == ["not sent: alice is you: a private message goes to someone else"]
        assert execute(alice.node, "/msg bob").notes == ["usage: /msg NAME TEXT"]
        assert execute(alice.node, "/reply hi").notes == [
            "not sent: nobody has written to you privately"
        ]
        which = alice.node.members.display_name(bob.id)
        assert execute(alice.node, f"/msg {which} only you").sent
        await bob.wait_entry(lambda e: e.kind == "pm" and e.text == "only you")
        assert shown(twin, "pm") == []


async def test_a_private_message_altered_or_rewrapped_is_not_shown(group: Group) -> None:
    with trio.fail_after(10):
        (bob,) = [await group.start("bob")]
        evil = await group.client(bob.port, "evil")
        await evil.handshake()
        box = BoxKey()
        await evil.send(evil.event("join", **box.badge()).raw)
        group.nursery.start_soon(evil.read_all)
        await bob.until(lambda: bob.node.members.get(evil.id) is not None)
        bob_box = bob.node.box.public
        # Sealed to bob by someone else, claimed by evil: bound to its sender.
        stolen = seal("from alice, really", bob_box, SigningKey().node_id, bob.id)
        await evil.send(evil.event("pm", **stolen.members(bob.id)).raw)
        # A relayed copy altered in transit: its signature no longer holds (§4).
        alice = Origin("alice")
        await evil.send(alice.event("join", **BoxKey().badge()).raw)
        sealed = seal("hello bob", bob_box, alice.id, bob.id)
        relayed = alice.event("pm", **sealed.members(bob.id)).raw
        await evil.send(flip_in_box(relayed))
        # Altered by its own sender on the first hop: it does not open.
        mine = seal("hello bob", bob_box, evil.id, bob.id)
        await evil.send(flip_in_box(evil.event("pm", **mine.members(bob.id)).raw))
        await evil.send(evil.event("msg", text="sync").raw)
        await bob.wait_text("sync")
        assert shown(bob, "pm") == []
        assert bob.node.router.bad_signatures == 1
        # Sealed right and sent right, it is shown.
        await evil.send(
            evil.event("pm", **seal("hello", bob_box, evil.id, bob.id).members(bob.id)).raw
        )
        await bob.wait_entry(lambda e: e.kind == "pm" and e.text == "hello")


def flip_in_box(raw: bytes) -> bytes:
    """``raw`` with one character of its sealed text changed, same length."""
    at = raw.index(b'"box":"') + 10
    flipped = b"B" if raw[at : at + 1] != b"B" else b"C"
    return raw[:at] + flipped + raw[at + 1 :]


def test_sealing_round_trip_and_what_it_binds() -> None:
    box = BoxKey()
    sealed = seal("h\u00e9llo", box.public, "a" * 32, "b" * 32)
    parsed = Sealed.of(sealed.members("b" * 32))
    assert parsed is not None and parsed[0] == "b" * 32
    assert box.open(parsed[1], "a" * 32, "b" * 32) == "h\u00e9llo"
    assert box.open(parsed[1], "c" * 32, "b" * 32) is None  # another sender
    assert BoxKey().open(parsed[1], "a" * 32, "b" * 32) is None  # another key
    assert Sealed.of({"to": "b", "eph": "x", "box": "y"}) is None


# --------------------------------------------------------------------------
# /ignore


async def test_ignore_hides_an_identity_across_nicks_and_still_forwards(group: Group) -> None:
    with trio.fail_after(10):
        a, b, c = [await group.start(n, degree=1) for n in ("a", "b", "c")]
        c.dial(a)
        b.dial(a)
        await a.wait_linked(b, c)
        await a.until(lambda: a.node.members.get(c.id) is not None)
        assert execute(a.node, "/ignore c").notes[0].startswith("ignoring c (SHA256:")
        assert execute(a.node, "/ignore").notes[0].startswith("ignoring c (")
        c.node.say("you cannot see me")
        await b.wait_text("you cannot see me")  # a forwarded it
        execute(c.node, "/nick someone-else")
        c.node.say("nor now")
        execute(c.node, "/msg a psst")
        await b.wait_text("nor now")
        b.node.say("b speaks")
        await a.wait_text("b speaks")
        assert "you cannot see me" not in a.texts() and "nor now" not in a.texts()
        assert shown(a, "pm") == []
        assert execute(a.node, "/unignore c").notes == ["no longer ignoring c"]
        c.node.say("back in sight")
        await a.wait_text("back in sight")


# --------------------------------------------------------------------------
# Mentions and the bell (chat.attention)


def entry(text: str, *, origin: str = "x" * 32, history: bool = False, kind: str = "msg") -> Entry:
    return Entry(kind, time.time(), "bob", text, history=history, origin=origin, fingerprint="F")


def test_mentions_are_whole_words_of_your_name_or_highlights() -> None:
    name = "alice"
    attention = Attention(lambda: name, ("deploy",))
    own = "o" * 32
    for text in ("hi alice", "Alice?", "ALICE: look", "deploy now", "(alice)"):
        assert attention.mentioned(entry(text), own), text
    for text in ("malice", "alicea", "redeploy", "hello"):
        assert not attention.mentioned(entry(text), own), text
    assert not attention.mentioned(entry("alice", origin=own), own)  # your own line
    assert not attention.mentioned(entry("alice", history=True), own)  # history
    name = "bob"
    assert attention.mentioned(entry("hey bob"), own)  # follows /nick


def test_the_bell_rings_at_most_once_a_second_and_as_set() -> None:
    attention = Attention(lambda: "alice")
    own = "o" * 32
    assert attention.notice(entry("alice!"), own, 100.0) == (True, True)
    assert attention.notice(entry("alice again"), own, 100.5) == (True, False)
    assert attention.notice(entry("alice later"), own, 101.1) == (True, True)
    assert attention.notice(entry("not you"), own, 105.0) == (False, False)
    assert attention.mentions == 3
    attention.typed()
    assert attention.mentions == 0
    attention.bell = "all"
    assert attention.notice(entry("anything"), own, 110.0) == (False, True)
    attention.bell = "off"
    assert attention.notice(entry("alice"), own, 120.0) == (True, False)
    attention.bell = "mentions"
    assert attention.notice(entry("private", kind="pm"), own, 130.0) == (True, True)
    attention.ignored["F"] = "bob"
    assert attention.notice(entry("alice"), own, 140.0) == (False, False)


# --------------------------------------------------------------------------
# The log file


def test_the_log_writes_each_line_once_and_replays_the_last(tmp_path: Path) -> None:
    template = str(tmp_path / "chat-%Y-%m-%d.log")
    log = ChatLog(template)
    lines = [entry(f"line {n}") for n in range(25)]
    for line in lines + lines[:5]:  # a catch-up after a reconnection: seen already
        log.write(line)
    path = log.path(time.time())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = path.read_text().splitlines()
    assert len(written) == 25
    assert written[0].endswith("<bob> line 0")
    again = ChatLog(template)  # a restart
    assert again.replay() == written[-20:]
    for line in lines:
        again.write(replace_history(line))  # its catch-up, as history this time
    assert len(path.read_text().splitlines()) == 25


def replace_history(e: Entry) -> Entry:
    return replace(e, history=True)


def test_the_json_log_keys_events_by_origin_and_seq(tmp_path: Path) -> None:
    key = SigningKey()
    event: Event = make_event("msg", key, 1, time.time(), "bob", text="hi")
    line = Entry("msg", event.ts, "bob", "hi", event=event, origin=event.origin)
    log = ChatLog(str(tmp_path / "chat.jsonl"), json_mode=True)
    log.write(line)
    log.write(replace_history(line))
    (written,) = (tmp_path / "chat.jsonl").read_text().splitlines()
    assert json.loads(written)["text"] == "hi"


async def test_a_peer_logs_each_line_once_across_a_restart_and_its_catch_up(
    group: Group, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        path = tmp_path / "room.log"
        alice = await group.start("alice", log=ChatLog(str(path)))
        bob = await group.start("bob")
        bob.dial(alice)
        for text in ("for the record", "same", "same"):  # equal lines: both kept
            bob.node.say(text)
        await alice.until(lambda: len(shown(alice, "msg")) == 3)
        await alice.stop()
        before = path.read_text().splitlines()
        assert [line.split(" ", 2)[2] for line in before if "<bob>" in line] == [
            "<bob> for the record",
            "<bob> same",
            "<bob> same",
        ]
        assert os.stat(path).st_mode & 0o777 == 0o600

        # Restarted on the same log: the last lines come back as [log], and
        # bob's catch-up (the same events, now [history]) is not logged again.
        log = ChatLog(str(path))
        assert log.replay() == before[-20:]
        again = await group.start("alice", log=log)
        again.dial(bob)
        await again.until(lambda: len([e for e in again.entries if e.kind == "msg"]) == 3)
        assert all(e.history for e in again.entries if e.kind == "msg")
        bob.node.say("after the restart")
        await again.wait_text("after the restart")
        after = path.read_text().splitlines()
        assert after[: len(before)] == before
        new = [line.split(" ", 2)[2] for line in after[len(before) :]]
        assert "<bob> same" not in new and "<bob> for the record" not in new, after
        assert new.count("<bob> after the restart") == 1, after


# --------------------------------------------------------------------------
# netcat and telnet clients: their commands


@pytest.mark.parametrize("host", ["hub", "peer"])
async def test_netcat_gets_a_banner_help_names_me_msg_and_quit(group: Group, host: str) -> None:
    with trio.fail_after(10):
        hub = await group.start(host, HubRole(quiet=True) if host == "hub" else None)
        alice = await group.start("alice")
        alice.dial(hub)
        await alice.wait_linked(hub)
        nc = await text_client(hub.port)
        got = bytearray()
        await nc.send_all(b"/help\n")
        await read_until(
            nc, b"*** trio-chat: type /nick NAME, then chat; /help for commands\n", got
        )
        await read_until(nc, b"/msg NAME TEXT", got)
        assert hub.node.members.find("dave") == []  # /help is no join
        await nc.send_all(b"/nick dave\n/names\n")
        await read_until(nc, b"present:", got)
        await read_until(nc, b"alice  SHA256:", got)
        await nc.send_all(b"/me waves\n/msg alice psst, alice\n")
        await alice.wait_entry(lambda e: e.action and e.text == "waves")
        pm = await alice.wait_entry(lambda e: e.kind == "pm" and e.shown)
        assert pm.text == "psst, alice" and pm.who == "dave"
        # Its host carried it sealed from itself on: no plain text in its history.
        assert all(b"psst" not in e.raw for e in hub.node.history)
        assert execute(alice.node, "/reply hi dave").sent
        await read_until(nc, b"[private] <alice> hi dave\n", got)
        await nc.send_all(b"/quit\n")
        await alice.wait_entry(lambda e: e.kind == "leave" and e.who == "dave")
        await nc.aclose()


# --------------------------------------------------------------------------
# Small things a newcomer trips over


async def test_an_address_that_never_answers_is_said_once_and_in_the_toolbar(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chat")
    with trio.fail_after(120):
        nobody = (await trio.open_tcp_listeners(0, host=HOST))[0]
        port = nobody.socket.getsockname()[1]
        await nobody.aclose()  # nothing listens there any more
        peer = await start_node(nursery, Config(name="alone"), listen=False)
        assert "alone (waiting for peers)" in status_text(peer.node)
        peer.node.connect(HOST, port)
        await trio.sleep(60)
        still = [r.getMessage() for r in caplog.records if "still trying" in r.getMessage()]
        assert still == [f"still trying {HOST}:{port}: Connection refused"]
        assert f"still trying {HOST}:{port}" in status_text(peer.node)
        await peer.stop()


def test_the_ready_line_names_an_address_others_can_dial() -> None:
    assert dialable("127.0.0.1") == "127.0.0.1"
    assert dialable("0.0.0.0") not in ("0.0.0.0", "")
    assert dialable("::") != "::"


def test_join_is_peer_on_any_port() -> None:
    args = parse_args(["join", "hub.example:8080", "--name", "z"])
    assert (args.role, args.port, args.dial, args.name) == ("peer", 0, [("hub.example", 8080)], "z")
    with pytest.raises(SystemExit):
        parse_args(["join"])


async def test_join_chats_through_the_real_command() -> None:
    async with process_group() as group:
        with trio.fail_after(20):
            first = await group.peer("first")
            ready = await first.wait_stderr("others join with:")
            assert f"trio-chat peer 0 127.0.0.1:{first.port}" in ready, first.describe()
            joiner = await group.start(
                "join", f"127.0.0.1:{first.port}", "--name", "joiner", label="joiner"
            )
            await joiner.wait_listening()
            await joiner.send_line("joined with one command")
            await first.wait_stdout("<joiner> joined with one command")


# --------------------------------------------------------------------------
# Found trying it as a person would (issue 15's review)


async def test_a_text_client_leaves_with_the_node_that_hosts_it(group: Group) -> None:
    # A netcat user on p1 must not stay present at p2 once p1 has left: p1
    # says each client's leave before its own. (A host killed: test_hub.)
    with trio.fail_after(10):
        p1, p2 = await mesh(group, "p1", "p2")
        nc = await text_client(p1.port)
        await nc.send_all(b"/nick xena\nhello from netcat\n")
        await p2.wait_text("hello from netcat")
        assert [m.name for m in p2.node.members.find("xena")] == ["xena"]
        p1.node.stop()
        gone = await p2.wait_entry(lambda e: e.who == "xena" and e.kind in ("leave", "lost"))
        assert gone.kind == "leave"
        assert p2.node.members.find("xena") == []
        await nc.aclose()


async def test_a_restarted_person_is_not_told_apart_from_themselves(group: Group) -> None:
    # Alice restarts (a new run key, the same identity): her old lines in
    # bob's history are hers, not another alice's: no alice~XXXX.
    with trio.fail_after(10):
        identity = SigningKey()
        alice = await group.start("alice", identity=identity)
        bob = await group.start("bob")
        bob.dial(alice)
        await bob.wait_linked(alice)
        alice.node.say("before the restart")
        await bob.wait_text("before the restart")
        old = alice.id
        await alice.stop()
        again = await group.start("alice", identity=identity)
        again.dial(bob)
        line = await again.wait_entry(lambda e: e.text == "before the restart")
        assert line.history and line.who == "alice", line
        assert again.node.members.display_name(old) == "alice"
        # Another person called alice is still told apart.
        other = await group.start("alice", identity=SigningKey())
        other.dial(bob)
        await bob.until(lambda: len(bob.node.members.find("alice")) == 2)
        assert bob.node.members.display_name(other.id).startswith("alice~")
