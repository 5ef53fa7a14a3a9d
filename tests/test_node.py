"""The node and the mesh peer end to end, over real loopback TCP.

Every test runs real :class:`~chat.node.Node` objects on 127.0.0.1, port 0,
inside the test's nursery, and talks to them as other nodes do or byte by
byte through :class:`wire.WireClient`. Waiting is on the thing itself (an
entry shown, a link up, a frame read, EOF); timers are checked either with
``autojump_clock`` at their protocol values or with short :class:`Timing`
values. § refers to docs/PROTOCOL.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
import trio
import trio.testing
from harness import Group, NodeHandle, settle
from wire import HOST, WireClient, new_id, summary

from chat.config import Timing
from chat.handshake import Handshake
from chat.keys import SigningKey, b64
from chat.lifecycle import Closing, Reason
from chat.members import Entry
from chat.protocol import (
    EVENT_CONTEXT,
    MAX_EVENT,
    MAX_FRAME,
    CaughtUp,
    Error,
    Event,
    Frame,
    Hello,
    Peers,
    Ping,
    Pong,
    encode,
    make_event,
)

# --------------------------------------------------------------------------
# Small test-local helpers


async def wait_texts(handle: NodeHandle, texts: list[str]) -> None:
    """Wait until ``handle`` has shown every one of ``texts``."""
    wanted = set(texts)
    await handle.until(lambda: wanted <= set(handle.texts()))


def lost_about(node_id: str) -> Callable[[Entry], bool]:
    """Matches the ``lost`` entry about ``node_id`` (whoever reported it)."""
    return lambda e: e.kind == "lost" and e.event is not None and e.event.node == node_id


# The flooding, mesh and catch-up tests run again in a closed group (§8):
# every link TLS, the secret proved first.
SECRET = b"the test group's secret, 32 bytes"
BOTH = pytest.mark.parametrize("secret", [None, SECRET], ids=["open", "closed"])


async def full_mesh(group: Group, *names: str, degree: int = 8) -> list[NodeHandle]:
    """Peers that each dial the first one; peer exchange fills in the rest."""
    handles = [await group.start(name, degree=degree) for name in names]
    first, rest = handles[0], handles[1:]
    for handle in rest:
        handle.dial(first)
    for handle in handles:
        others = [h for h in handles if h is not handle]
        await handle.wait_linked(*others)
    return handles


async def raw_peer(
    group: Group, port: int, name: str = "raw", key: SigningKey | None = None
) -> WireClient:
    """A raw client that has completed a handshake as a peer (no listen port)."""
    client = await group.client(port, name, key)
    await client.handshake()
    return client


# --------------------------------------------------------------------------
# Flooding, peer exchange, order, history


@BOTH
async def test_three_peers_see_every_message_once_and_become_a_mesh(
    group: Group, secret: bytes | None
) -> None:
    group.secret = secret  # the same, in a closed group (§8)
    with trio.fail_after(5):
        a = await group.start("alice")
        b = await group.start("bob")
        c = await group.start("carol")
        b.dial(a)
        await b.wait_linked(a)
        c.dial(b)
        # C only dialled B; B's peers frame tells C of A (§7).
        await c.wait_linked(a, b)
        await a.wait_linked(b, c)
        await b.wait_linked(a, c)

        texts = []
        for handle in (a, b, c):
            text = f"hello from {handle.node.name}"
            assert handle.node.say(text) is None
            texts.append(text)
        for handle in (a, b, c):
            await wait_texts(handle, texts)
        await settle()

        everyone = sorted(h.id for h in (a, b, c))
        for handle in (a, b, c):
            assert sorted(handle.texts()) == sorted(texts), handle.node.name
            joins = sorted(e.origin for e in handle.entries if e.kind == "join")
            assert joins == everyone, handle.node.name
            # One connection per pair, whoever dialled whom.
            assert len(handle.node.neighbours) == 2
            assert len(handle.node.connections) == 2


@BOTH
async def test_chain_of_degree_one_relays_in_order_once(group: Group, secret: bytes | None) -> None:
    group.secret = secret  # the same, in a closed group (§8)
    with trio.fail_after(5):
        a = await group.start("alice", degree=1)
        b = await group.start("bob", degree=1)
        c = await group.start("carol", degree=1)
        b.dial(a)
        await b.wait_linked(a)
        c.dial(b)
        await c.wait_linked(b)
        await b.wait_links(2)

        texts = [f"message {i}" for i in range(1, 31)]
        for text in texts:
            assert a.node.say(text) is None
        await c.wait_text(texts[-1])
        await settle()

        assert c.texts() == texts
        assert all(e.origin == a.id for e in c.entries if e.kind == "msg")
        # Degree 1: peer exchange made no shortcut around B.
        assert set(a.node.neighbours) == {b.id}
        assert set(c.node.neighbours) == {b.id}
        # B forwarded A's bytes unchanged (§5).
        for seq in range(1, len(texts) + 2):
            sent = a.node.history.get((a.id, seq))
            got = c.node.history.get((a.id, seq))
            assert sent is not None
            assert got is not None
            assert got.raw == sent.raw


@BOTH
async def test_late_joiner_gets_history(group: Group, secret: bytes | None) -> None:
    group.secret = secret  # the same, in a closed group (§8)
    with trio.fail_after(5):
        a = await group.start("alice")
        b = await group.start("bob")
        b.dial(a)
        await b.wait_linked(a)
        a.node.say("early from alice")
        b.node.say("early from bob")
        await wait_texts(a, ["early from alice", "early from bob"])
        await wait_texts(b, ["early from alice", "early from bob"])

        c = await group.start("carol")
        c.dial(b)
        await wait_texts(c, ["early from alice", "early from bob"])
        # Catch-up follows B's history, where B's own line came first.
        assert sorted(c.texts()) == ["early from alice", "early from bob"]
        for entry in c.entries:
            if entry.kind == "msg" or (entry.kind == "join" and entry.origin != c.id):
                assert entry.history, entry
        own_join = [e for e in c.entries if e.kind == "join" and e.origin == c.id]
        assert len(own_join) == 1
        assert not own_join[0].history

        a.node.say("live")
        live = await c.wait_text("live")
        assert not live.history


@BOTH
async def test_cut_groups_chat_apart_then_exchange_what_they_missed(
    group: Group, secret: bytes | None
) -> None:
    group.secret = secret  # the same, in a closed group (§8)
    with trio.fail_after(5):
        # A - B - C - D, degree 1 so that peer exchange adds no link.
        a, b, c, d = [await group.start(n, degree=1) for n in ("a", "b", "c", "d")]
        b.dial(a)
        d.dial(c)
        await b.wait_linked(a)
        await d.wait_linked(c)
        c.dial(b, persistent=False)
        await b.wait_linked(a, c)
        await c.wait_linked(b, d)

        a.node.say("before the cut")
        await d.wait_text("before the cut")

        # Cut B - C: B closes its end.
        b.node.neighbours[c.id].conn.finish(Closing(Reason.CLOSED, "cut by the test"))
        await b.wait_unlinked(c)
        await c.wait_unlinked(b)

        a.node.say("west only")
        d.node.say("east only")
        b.node.say("west too")
        c.node.say("east too")
        await wait_texts(a, ["west only", "west too"])
        await wait_texts(b, ["west only", "west too"])
        await wait_texts(c, ["east only", "east too"])
        await wait_texts(d, ["east only", "east too"])
        await settle()
        for handle in (a, b):
            assert sorted(handle.texts()) == ["before the cut", "west only", "west too"]
        for handle in (c, d):
            assert sorted(handle.texts()) == ["before the cut", "east only", "east too"]

        # Re-join (the other way round this time): catch-up both ways (§6).
        b.dial(c, persistent=False)
        everything = ["before the cut", "east only", "east too", "west only", "west too"]
        for handle in (a, b, c, d):
            await wait_texts(handle, everything)
        await settle()
        for handle in (a, b, c, d):
            assert sorted(handle.texts()) == everything, handle.node.name
            # Late arrivals after a cut keep their own time and are not history.
            assert not any(e.history for e in handle.entries if e.kind == "msg")


async def test_rejoined_node_is_not_shown_lost_to_itself(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        b = await group.start("b")
        a.dial(b, persistent=False)
        await a.wait_linked(b)
        a.node.say("hello b")
        b.node.say("hello a")
        await a.wait_text("hello a")
        await b.wait_text("hello b")

        # Cut: each reports the other lost (both knew the other was there).
        b.node.neighbours[a.id].conn.finish(Closing(Reason.CLOSED, "cut by the test"))
        await a.wait_entry(lost_about(b.id))
        await b.wait_entry(lost_about(a.id))

        # Re-join: catch-up brings each the other's report about itself.
        b.dial(a, persistent=False)
        a.node.say("back")
        await b.wait_text("back")
        b.node.say("back too")
        await a.wait_text("back too")
        await settle()
        for me in (a, b):
            # Nobody is told that they themselves were lost: they never left.
            assert me.about("lost", me.id) == [], me.node.name
            member = me.node.members.get(me.id)
            assert member is not None
            assert member.present, me.node.name


# --------------------------------------------------------------------------
# Departures


async def test_vanished_node_is_shown_lost_once(
    group: Group, autojump_clock: trio.testing.MockClock
) -> None:
    # C hears of the loss from A and B: a relayed report about a node heard
    # from in the dead-link time waits until that time has passed since it
    # was last heard (chat/screen.py); the virtual clock skips the wait.
    with trio.fail_after(100):
        a, b, c = await full_mesh(group, "a", "b", "c")
        # X is linked to both A and B (two connections, one node id).
        x_to_a = await raw_peer(group, a.port, "xavier")
        x_to_b = await raw_peer(group, b.port, "xavier", key=x_to_a.key)
        x = x_to_a.id
        await x_to_a.join()
        for handle in (a, b, c):
            await handle.wait_entry(lambda e: e.kind == "join" and e.origin == x)

        # X vanishes without a leave: one socket reset, one plainly closed.
        await x_to_a.abort()
        await x_to_b.aclose()
        for handle in (a, b, c):
            await handle.wait_entry(lost_about(x))

        # A third report of the same departure changes nothing (§4).
        y = await raw_peer(group, c.port, "yves")
        await y.send_frame(y.event("lost", node=x))
        await y.say("after the report")
        for handle in (a, b, c):
            await handle.wait_text("after the report")
        await settle()
        for handle in (a, b, c):
            assert len(handle.about("lost", x)) == 1, handle.node.name
            member = handle.node.members.get(x)
            assert member is not None
            assert not member.present

        # Heard from again: present again (§4).
        back = await raw_peer(group, a.port, "xavier", key=x_to_a.key)
        back.seq = 1
        await back.say("I am back")
        for handle in (a, b, c):
            await handle.wait_text("I am back")
            member = handle.node.members.get(x)
            assert member is not None
            assert member.present


async def test_stopped_node_is_shown_leaving_once(group: Group) -> None:
    with trio.fail_after(5):
        a, b, c = await full_mesh(group, "a", "b", "c")
        c.node.stop()
        for handle in (a, b):
            await handle.wait_entry(lambda e: e.kind == "leave" and e.origin == c.id)
            await handle.wait_unlinked(c)
        await c.finished.wait()

        a.node.say("still here")
        await b.wait_text("still here")
        await settle()
        for handle in (a, b):
            assert len(handle.about("leave", c.id)) == 1
            assert handle.about("lost", c.id) == []
            member = handle.node.members.get(c.id)
            assert member is not None
            assert not member.present


async def test_cancelled_nodes_are_shown_lost_once(group: Group) -> None:
    # Cancelling a node is a crash as its neighbours see it: sockets close
    # with no leave. It must not raise anything but Cancelled out of
    # Node.run, whatever order its connections end in (trio shuffles it),
    # hence several nodes, each with several links.
    with trio.fail_after(5):
        handles = await full_mesh(group, "a", "b", "c", "d", "e", "f")
        a, b = handles[:2]
        for gone in reversed(handles[2:]):
            gone.scope.cancel()
            for handle in (a, b):
                await handle.wait_entry(lost_about(gone.id))
                await handle.wait_unlinked(gone)
            await gone.finished.wait()

        a.node.say("still here")
        await b.wait_text("still here")
        await settle()
        for gone in handles[2:]:
            for handle in (a, b):
                # Every neighbour reported it lost; each shows it once (§4).
                assert len(handle.about("lost", gone.id)) == 1
                assert handle.about("leave", gone.id) == []


# --------------------------------------------------------------------------
# Handshake rules (§3)


async def test_simultaneous_dial_keeps_one_connection(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        b = await group.start("b")
        a.dial(b)
        b.dial(a)

        def settled(me: NodeHandle, other: NodeHandle) -> bool:
            node = me.node
            # Both connections were made (one dialled, one accepted) and
            # only one is left.
            return node.opened >= 2 and len(node.connections) == 1 and other.id in node.neighbours

        await a.until(lambda: settled(a, b))
        await b.until(lambda: settled(b, a))
        await settle()

        assert a.node.opened == 2
        assert b.node.opened == 2
        assert len(a.node.connections) == len(b.node.connections) == 1
        a_link = a.node.neighbours[b.id]
        b_link = b.node.neighbours[a.id]
        a_stream, b_stream = a_link.conn.stream, b_link.conn.stream
        assert isinstance(a_stream, trio.SocketStream)
        assert isinstance(b_stream, trio.SocketStream)
        # Both sides kept the same TCP connection...
        assert a_stream.socket.getsockname() == b_stream.socket.getpeername()
        # ...the one dialled by the smaller id.
        dialler = a if a_link.conn.outgoing else b
        assert dialler.id == min(a.id, b.id)
        # Closing the duplicate was no departure.
        assert not any(e.kind in ("lost", "leave") for e in a.entries + b.entries)

        a.node.say("one link")
        await b.wait_text("one link")
        await settle()
        assert b.texts() == ["one link"]


async def test_node_dialling_itself_gives_up(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        a.dial(a)
        await a.until(lambda: a.node.opened == 2 and not a.node.connections)
        await settle()
        assert a.node.opened == 2
        assert a.node.neighbours == {}
        assert not any(e.kind == "lost" for e in a.entries)


async def test_hello_with_own_id_is_closed_without_error(group: Group) -> None:
    # Only A's own key proves A's id (§2, §3): A dialling itself.
    with trio.fail_after(5):
        a = await group.start("a")
        client = await group.client(a.port, "mirror", a.node.me.key)
        answer = await client.handshake()
        assert answer.node == a.id
        rest = await client.expect_eof()
        assert rest == [], summary(rest)


async def test_a_protocol_1_hello_gets_unsupported_protocol(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        client = await group.client(a.port)
        hello = {"type": "hello", "proto": 1, "node": new_id(), "name": "old", "role": "peer"}
        await client.send(_line({**hello, "listen": None, "have": {}}))
        error = await client.receive_frame()
        assert isinstance(error, Error)
        assert error.code == "unsupported_protocol"
        assert "only 2" in error.message
        rest = await client.expect_eof()
        assert rest == [], summary(rest)


async def test_node_answers_hello_with_its_own(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("alice")
        a.node.say("before you came")
        client = await group.client(a.port)
        answer = await client.handshake()
        assert answer.node == a.id
        assert answer.name == "alice"
        assert answer.role == "peer"
        assert answer.listen == a.port
        assert answer.have == {a.id: 2}
        # Then everything we lack, oldest first (§3, §6).
        join = await client.expect(Event)
        msg = await client.expect(Event)
        assert (join.kind, join.seq, msg.kind, msg.seq) == ("join", 1, "msg", 2)
        assert msg.text == "before you came"


async def test_catch_up_sends_only_what_have_lacks(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        for i in range(2, 6):
            a.node.say(f"m{i}")  # seqs 2..5
        client = await group.client(a.port)
        await client.handshake(have={a.id: 3})
        await client.send_frame(Ping("done"))
        skipped: list[Frame] = []
        await client.expect(Pong, skipped)
        events = [f for f in skipped if isinstance(f, Event)]
        assert [(e.origin, e.seq) for e in events] == [(a.id, 4), (a.id, 5)]


async def test_dialler_sends_hello_first_and_gives_up_without_answer(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("a", timing=Timing(handshake=0.3))
        listener, port = await group.listener()
        a.dial(port, persistent=False)
        far = await WireClient.accept(listener, "mute")
        group.clients.append(far)
        hello = await far.receive_frame()
        assert isinstance(hello, Hello)
        assert hello.node == a.id
        assert hello.listen == a.port
        start = trio.current_time()
        # We never answer: the dialler closes, with no error frame (§3).
        rest = await far.expect_eof()
        assert rest == [], summary(rest)
        assert trio.current_time() - start >= 0.25
        assert far.id not in a.node.neighbours


def key_whose_id(than: str, *, smaller: bool) -> SigningKey:
    """A run key whose node id is smaller (or larger) than ``than``."""
    while True:
        key = SigningKey()
        if (key.node_id < than) == smaller:
            return key


@pytest.mark.parametrize("smaller", [True, False], ids=["far-smaller", "far-larger"])
async def test_one_link_per_pair_keeps_the_smaller_ids_dial(group: Group, smaller: bool) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        far = key_whose_id(a.id, smaller=smaller)
        # A dials "far" (a raw node on our listener) and far dials A.
        listener, port = await group.listener()
        a.dial(port, persistent=False)
        dialled_by_a = await WireClient.accept(listener, "far", far)
        group.clients.append(dialled_by_a)
        await dialled_by_a.answer(listen=port)
        await a.wait_linked(far.node_id)

        dialled_by_far = await group.client(a.port, "far", far)
        await dialled_by_far.handshake(listen=port)
        if smaller:
            keep, drop = dialled_by_far, dialled_by_a
        else:
            keep, drop = dialled_by_a, dialled_by_far
        dropped = await drop.expect_eof()
        assert not any(isinstance(f, Error) for f in dropped), summary(dropped)
        # The kept one still works, and the switch was no departure.
        await keep.send_frame(Ping("still there"))
        assert (await keep.expect(Pong)).nonce == "still there"
        assert far.node_id in a.node.neighbours
        assert len(a.node.connections) == 1
        assert not any(e.kind == "lost" for e in a.entries)


async def test_second_connection_from_same_dialler_is_closed(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        first = await raw_peer(group, a.port, "twice")
        second = await group.client(a.port, "twice", first.key)
        await second.handshake()
        # Both were dialled by the same node: the older one stays.
        frames = await second.expect_eof()
        assert not any(isinstance(f, Error) for f in frames), summary(frames)
        await first.send_frame(Ping(1))
        assert (await first.expect(Pong)).nonce == 1
        assert len(a.node.connections) == 1


async def test_late_joiner_with_short_history_sees_no_gap(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("alice", history=3)
        for i in range(1, 6):
            a.node.say(f"m{i}")  # seqs 2..6; A keeps only 4, 5, 6
        b = await group.start("bob")
        b.dial(a)
        await b.wait_text("m5")
        a.node.say("m6")
        await b.wait_text("m6")
        await settle()
        # The first event heard of A sets where A starts for B: nothing
        # before it is waited for or reported missed (§5).
        assert b.texts() == ["m3", "m4", "m5", "m6"]
        assert not any(e.kind == "gap" for e in b.entries)


async def test_frames_of_exactly_max_frame_and_max_event_bytes_are_accepted(
    group: Group,
) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        client = await raw_peer(group, a.port, "big")
        ping = b'{"type":"ping","nonce":"big","pad":"'
        line = ping + b"p" * (MAX_FRAME - len(ping) - 3) + b'"}\n'
        assert len(line) == MAX_FRAME
        await client.send(line)
        assert await client.expect(Pong) == Pong("big")
        # An unknown member within the signed part, up to the event's bound.
        ts = time.time()
        base = make_event("msg", client.key, 1, ts, "big", text="padded", extra={"pad": ""})
        pad = "p" * (MAX_EVENT - len(base.raw))
        event = make_event("msg", client.key, 1, ts, "big", text="padded", extra={"pad": pad})
        assert len(event.raw) == MAX_EVENT
        client.seq = 1
        await client.send(event.raw)
        await a.wait_text("padded")
        assert client.id in a.node.neighbours


async def test_stop_sends_leave_then_closes(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        client = await raw_peer(group, a.port)
        await client.send_frame(Ping(0))
        await client.expect(Pong)
        a.node.stop()
        leave = await client.expect_event(lambda e: e.origin == a.id and e.kind == "leave")
        assert leave.name == "a"
        rest = await client.expect_eof()
        assert rest == [], summary(rest)
        await a.finished.wait()


# --------------------------------------------------------------------------
# Malformed input (§1): the right error, that connection closed, others fine

_X = "0" * 32
_GOOD_MSG = {"type": "msg", "origin": _X, "seq": 1, "ts": 1.0, "name": "x", "text": "hi"}


_KEY = SigningKey()


def _hello_line(**change: object) -> bytes:
    fields: dict[str, object] = {
        "type": "hello",
        "proto": 2,
        "node": _KEY.node_id,
        "key": b64(_KEY.public),
        "nonce": b64(bytes(32)),
        "name": "bad",
        "role": "peer",
        "listen": None,
        "have": {},
    }
    fields.update(change)
    for key in [k for k, v in change.items() if v is _MISSING]:
        del fields[key]
    return _line(fields)


def _msg_line(**change: object) -> bytes:
    # Complete but for the one fault: a key, and a (meaningless) signature last.
    fields: dict[str, object] = {**_GOOD_MSG, "key": b64(_KEY.public)}
    fields.update(change)
    for key in [k for k, v in change.items() if v is _MISSING]:
        del fields[key]
    fields["sig"] = b64(bytes(64))
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def _line(fields: dict[str, object]) -> bytes:
    return json.dumps(fields).encode() + b"\n"


_MISSING = object()

# First line starting with "{" but not a well-formed hello: only the error.
BEFORE_HELLO = {
    "bad json": (b'{"type": "hello", "proto": 1,\n', "bad_frame"),
    "invalid utf-8": (b'{"type": "hello", "name": "\xff\xfe"}\n', "bad_frame"),
    "missing field": (_hello_line(node=_MISSING), "bad_frame"),
    "ill-typed field": (_hello_line(proto="1"), "bad_frame"),
    "not a hello": (encode(Ping(1)), "bad_frame"),
    "an event first": (_msg_line(), "bad_frame"),
    "frame too long": (b"{" + b"x" * MAX_FRAME, "frame_too_long"),
}

# After a good handshake, on an established link.
AFTER_HELLO = {
    "bad json": (b'{"type": "msg", "origin": \n', "bad_frame"),
    "invalid utf-8": (_msg_line(text="caf@").replace(b"@", b"\xe9"), "bad_frame"),
    "non-object list": (b"[1, 2, 3]\n", "bad_frame"),
    "non-object string": (b'"hello"\n', "bad_frame"),
    "non-object null": (b"null\n", "bad_frame"),
    "missing field": (_msg_line(text=_MISSING), "bad_frame"),
    "missing type": (_msg_line(type=_MISSING), "bad_frame"),
    "ill-typed seq": (_msg_line(seq="1"), "bad_frame"),
    "ill-typed origin": (_msg_line(origin="not-a-node-id"), "bad_frame"),
    "ill-typed ping nonce": (b'{"type": "ping", "nonce": [1]}\n', "bad_frame"),
    "frame too long": (b'{"type": "msg", "text": "' + b"a" * MAX_FRAME, "frame_too_long"),
    "long line with newline": (b'{"pad": "' + b"a" * MAX_FRAME + b'"}\n', "frame_too_long"),
}


async def _bystander_still_chats(a: NodeHandle, bystander: WireClient, text: str) -> None:
    """The other client's link works both ways after the bad one went."""
    await bystander.say(f"{text} (bystander)")
    await a.wait_text(f"{text} (bystander)")
    a.node.say(f"{text} (node)")
    await bystander.expect_event(lambda e: e.text == f"{text} (node)")
    assert bystander.id in a.node.neighbours


@pytest.mark.parametrize("case", sorted(BEFORE_HELLO))
async def test_malformed_first_line(group: Group, case: str) -> None:
    data, code = BEFORE_HELLO[case]
    with trio.fail_after(5):
        a = await group.start("a")
        bystander = await raw_peer(group, a.port, "bystander")
        await bystander.join()
        bad = await group.client(a.port)
        await bad.send(data)
        # No hello to a first line that is not a well-formed hello (§3).
        error = await bad.receive_frame()
        assert isinstance(error, Error), error
        assert error.code == code
        rest = await bad.expect_eof()
        assert rest == [], summary(rest)
        await _bystander_still_chats(a, bystander, case)


@pytest.mark.parametrize("case", sorted(AFTER_HELLO))
async def test_malformed_frame_on_established_link(group: Group, case: str) -> None:
    data, code = AFTER_HELLO[case]
    with trio.fail_after(5):
        a = await group.start("a")
        bystander = await raw_peer(group, a.port, "bystander")
        await bystander.join()
        bad = await raw_peer(group, a.port, "bad")
        await a.wait_linked(bad.id)
        await bad.send(data)
        skipped: list[Frame] = []
        error = await bad.expect(Error, skipped)
        assert error.code == code
        # Only link-local frames and events came before it.
        assert all(isinstance(f, (Peers, Event, CaughtUp)) for f in skipped), summary(skipped)
        rest = await bad.expect_eof()
        assert rest == [], summary(rest)
        await a.wait_unlinked(bad.id)
        await _bystander_still_chats(a, bystander, case)


# --------------------------------------------------------------------------
# Link-local frames, forward compatibility, forwarding


async def test_ping_gets_pong_with_the_same_nonce(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        client = await raw_peer(group, a.port)
        for nonce in (42, "n-\u00e9", 0, 2**70):
            await client.send_frame(Ping(nonce))
            pong = await client.expect(Pong)
            assert pong.nonce == nonce
            assert type(pong.nonce) is type(nonce)


async def test_unknown_types_and_fields_are_ignored(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        client = await group.client(a.port, name="future")
        hello = client.hello()
        extended = replace(hello, raw=hello.raw[:-1] + b',"colour":"blue","caps":{"x":[1,2]}}')
        shake = Handshake(client.key, outgoing=True, make_hello=lambda nonce: extended)
        for frame in shake.start():
            await client.send_frame(frame)
        while not shake.done:
            for answer in shake.receive(await client.receive_frame()):
                await client.send_frame(answer)
        assert shake.theirs is not None
        assert shake.theirs.node == a.id
        await a.wait_linked(client.id)

        await client.send(b'{"type":"reaction","emoji":"+1","origin":"whatever"}\n')
        await client.send(b'{"type":"ping","nonce":7,"extra":true}\n')
        pong = await client.expect(Pong)
        assert pong.nonce == 7
        await client.join()
        client.seq += 1
        extras = {"mood": "happy", "reply_to": None}
        msg = make_event(
            "msg", client.key, client.seq, time.time(), "future", text="with extras", extra=extras
        )
        await client.send(msg.raw)
        shown = await a.wait_text("with extras")
        assert shown.event is not None and shown.event.extra == extras
        # A second hello on an established link is ignored too.
        await client.send_frame(client.hello(have={a.id: 0}))
        await client.send_frame(Ping(8))
        skipped: list[Frame] = []
        assert (await client.expect(Pong, skipped)).nonce == 8
        assert not any(isinstance(f, (Hello, Event, Error)) for f in skipped), summary(skipped)
        assert client.id in a.node.neighbours


async def test_events_are_forwarded_byte_for_byte(group: Group) -> None:
    with trio.fail_after(5):
        a = await group.start("a")
        sender = await raw_peer(group, a.port, "sender")
        receiver = await raw_peer(group, a.port, "receiver")
        await a.wait_linked(sender.id, receiver.id)
        join = await sender.join()
        got = await receiver.expect_event(lambda e: e.origin == sender.id and e.seq == 1)
        assert got.raw == join.raw

        # Odd spacing, member order, escapes, an extra member, CRLF ending:
        # any JSON, as long as it ends with its signature (§4).
        prefix = (
            b'{ "seq" : 2, "text":"caf\\u00e9 \xc3\xa9 \\"q\\"","type":"msg",'
            b'"origin":"' + sender.id.encode() + b'", "ts":1.7e9,"name":"sender",'
            b'"extra":[1, {"a": null}], "key" : "' + b64(sender.key.public).encode() + b'"'
        )
        sig = sender.key.sign(EVENT_CONTEXT + prefix)
        body = prefix + b',"sig":"' + b64(sig).encode() + b'"}'
        sender.seq = 2
        await sender.send(body + b"\r\n")
        got = await receiver.expect_event(lambda e: e.origin == sender.id and e.seq == 2)
        assert got.text == 'café é "q"'
        assert got.raw == body + b"\n"
        # The node keeps the same bytes for catch-up.
        kept = a.node.history.get((sender.id, 2))
        assert kept is not None
        assert kept.raw == body + b"\n"

        # And a late comer gets those bytes too.
        late = await group.client(a.port, name="late")
        await late.handshake()
        got = await late.expect_event(lambda e: e.origin == sender.id and e.seq == 2)
        assert got.raw == body + b"\n"


async def test_own_events_are_never_sent_back(group: Group) -> None:
    with trio.fail_after(5):
        a, b, c = await full_mesh(group, "a", "b", "c")
        p = await raw_peer(group, a.port, "p")
        q = await raw_peer(group, a.port, "q")
        await a.wait_linked(p.id, q.id)
        await p.join()
        await p.say("from p")
        for handle in (a, b, c):
            await handle.wait_text("from p")
        # A link is in order: what A sent P before Q's message came first.
        await q.join()
        await q.say("from q")
        skipped: list[Frame] = []
        await p.expect_event(lambda e: e.origin == q.id and e.kind == "msg", skipped)
        echoed = [f for f in skipped if isinstance(f, Event) and f.origin == p.id]
        assert echoed == []

        # Catch-up skips them too, even when P's hello claims to have nothing.
        await p.aclose()
        await a.wait_unlinked(p.id)
        again = await group.client(a.port, "p", p.key)
        await again.handshake(have={})
        await again.send_frame(Ping("end of catch-up"))
        skipped = []
        await again.expect(Pong, skipped)
        events = [f for f in skipped if isinstance(f, Event)]
        assert [e.origin for e in events if e.origin == p.id] == []
        assert {(e.origin, e.kind) for e in events} >= {(q.id, "join"), (q.id, "msg")}
        assert {e.origin for e in events} >= {a.id, b.id, c.id}


async def test_peers_frame_lists_dialable_peers(group: Group) -> None:
    with trio.fail_after(5):
        a, b = await full_mesh(group, "a", "b")
        client = await raw_peer(group, a.port)
        peers = await client.expect(Peers)
        assert [(p.node, p.addr) for p in peers.peers] == [(b.id, f"{HOST}:{b.port}")]


# --------------------------------------------------------------------------
# Timers: handshake, keepalive, dead link (§3, §7), hold-back (§5)


async def test_a_silent_client_is_a_listener_after_the_handshake_time(
    group: Group, autojump_clock: trio.testing.MockClock
) -> None:
    # A node speaks first (§3): a connection still silent when the handshake
    # time ends is a person (or a legacy client) who listens before talking.
    with trio.fail_after(30):  # virtual seconds
        a = await group.start("a")
        assert a.node.say("said before") is None
        listener = await trio.open_tcp_stream(HOST, a.port)
        start = trio.current_time()
        got = await listener.receive_some()
        assert 10 <= trio.current_time() - start < 10.5
        assert not got.startswith(b"{")  # text, never JSON
        assert b"[history] <a> said before" in got
        assert not [e for e in a.entries if e.kind == "join" and e.origin != a.id]
        # Its first words make it a member, named by its address.
        await listener.send_all(b"hello at last\n")
        said = await a.wait_text("hello at last")
        assert said.who.startswith("127.0.0.1:")
        await listener.aclose()
        await a.wait_entry(lambda e: e.kind == "leave" and e.origin == said.origin)


async def test_half_a_hello_gets_handshake_timeout_on_real_clock(group: Group) -> None:
    with trio.fail_after(3):
        a = await group.start("a", timing=Timing(handshake=0.2))
        client = await group.client(a.port)
        await client.send(b'{"type":"hello"')  # a node by its first byte, never finished
        start = trio.current_time()
        error = await client.receive_frame()
        assert isinstance(error, Error)
        assert error.code == "handshake_timeout"
        assert trio.current_time() - start >= 0.2
        assert await client.expect_eof() == []


async def test_idle_link_gets_ping_then_dead_link_is_lost(
    group: Group, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(50):  # 45 s of silence, on the virtual clock
        a = await group.start("a")
        client = await raw_peer(group, a.port, "silent")
        await client.join()
        await a.wait_entry(lambda e: e.kind == "join" and e.origin == client.id)
        quiet_since = trio.current_time()
        # Nothing sent for 15 s: ping (§7).
        await client.expect(Ping)
        assert 15 <= trio.current_time() - quiet_since < 15.5
        # Nothing received for 45 s: closed and lost.
        await client.expect_eof()
        assert 45 <= trio.current_time() - quiet_since < 45.5
        await a.wait_entry(lost_about(client.id))
        assert client.id not in a.node.neighbours


async def test_dead_link_on_real_clock_is_lost(group: Group) -> None:
    with trio.fail_after(3):
        timing = Timing(ping_after=0.05, dead_after=0.3)
        a = await group.start("a", timing=timing)
        client = await raw_peer(group, a.port, "silent")
        await client.join()
        start = trio.current_time()
        frames = await client.expect_eof()
        assert trio.current_time() - start >= 0.3
        assert any(isinstance(f, Ping) for f in frames), summary(frames)
        lost = await a.wait_entry(lost_about(client.id))
        assert lost.who == "silent"


async def test_pongs_keep_a_quiet_link_alive(group: Group) -> None:
    with trio.fail_after(3):
        timing = Timing(ping_after=0.02, dead_after=0.2)
        a = await group.start("a", timing=timing)
        client = await raw_peer(group, a.port)
        start = trio.current_time()
        # Answer pings for well past dead_after: the link stays.
        while trio.current_time() - start < 4 * timing.dead_after:
            ping = await client.expect(Ping)
            await client.send_frame(Pong(ping.nonce))
        assert client.id in a.node.neighbours
        assert not any(e.kind == "lost" for e in a.entries)


async def test_gap_is_held_back_then_reported(
    group: Group, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        a = await group.start("a")
        client = await raw_peer(group, a.port, "gappy")
        x = client.id
        events = {1: client.event("join")}
        for seq in (2, 3, 4):
            events[seq] = client.event("msg", text=f"m{seq}")
        await client.send_frame(events[1])
        await a.wait_entry(lambda e: e.kind == "join" and e.origin == x)
        sent = trio.current_time()
        await client.send_frame(events[3])
        third = await a.wait_text("m3")
        # Held back for the protocol's 5 s, then shown after the gap (§5).
        assert 5 <= trio.current_time() - sent < 5.5
        at = a.entries.index(third)
        gap = a.entries[at - 1]
        assert gap.kind == "gap"
        assert gap.missed == 1
        assert gap.origin == x
        assert gap.who == "gappy"

        # The missing one arriving late is a duplicate; the next is on time.
        await client.send_frame(events[2])
        await client.send_frame(events[4])
        await a.wait_text("m4")
        await settle()
        assert [e.text for e in a.entries if e.origin == x and e.kind == "msg"] == ["m3", "m4"]
        assert len([e for e in a.entries if e.kind == "gap"]) == 1


async def test_gap_filled_in_time_is_not_reported(group: Group) -> None:
    with trio.fail_after(3):
        a = await group.start("a", hold_back=2.0)
        client = await raw_peer(group, a.port, "orderly")
        x = client.id
        events = [client.event("join"), *(client.event("msg", text=f"m{i}") for i in (2, 3, 4))]
        await client.send_frame(events[0])
        await client.send_frame(events[3])
        await client.send_frame(events[2])
        await settle()
        assert [e.text for e in a.entries if e.origin == x and e.kind == "msg"] == []
        await client.send_frame(events[1])
        await a.wait_text("m4")
        assert [e.text for e in a.entries if e.origin == x and e.kind == "msg"] == [
            "m2",
            "m3",
            "m4",
        ]
        assert not any(e.kind == "gap" for e in a.entries)
