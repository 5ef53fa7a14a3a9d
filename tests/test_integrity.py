"""Nobody can speak for anyone else (protocol 2, issue 13; docs/PROTOCOL.md §2-§4).

Each attack of the issue is written here as the attacker would try it,
over real sockets to a real node: forged events of another member in five
variants, the seq-2**53-1 silencing, a recorded handshake replayed, a
machine in the middle relaying a hello. Then the first-hop rule, counted;
events of kinds a node does not know; names that could fake a line.
"""

from __future__ import annotations

import secrets
import time

import pytest
import trio
from harness import Group, chatter, memory_chatter, memory_client, start_node
from wire import HOST, Origin, WireClient

from chat import render
from chat.config import Config
from chat.frontend import execute
from chat.handshake import Handshake
from chat.hub import HubRole
from chat.keys import SigningKey, b64
from chat.protocol import (
    MAX_SEQ,
    Auth,
    Error,
    Event,
    Hello,
    Ping,
    Pong,
    dumps,
    encode,
    make_event,
    make_hello,
)

# --------------------------------------------------------------------------
# Forged events (§4)


def signed_as(body: dict[str, object], sig: bytes) -> bytes:
    """An event's line: ``body``'s members in order, then ``sig`` as the last one."""
    return dumps(body)[:-2] + b',"sig":"' + b64(sig).encode() + b'"}\n'


def forgeries(bob: WireClient, evil: WireClient, said: Event, seq: int) -> dict[str, bytes]:
    """Four ways to speak for bob at ``seq`` holding only one's own key.

    ``said`` is an event bob really sent: its signature is there to copy.
    """
    ts = time.time()
    body: dict[str, object] = {
        "type": "msg",
        "origin": bob.id,
        "seq": seq,
        "ts": ts,
        "name": "bob",
        "text": "FORGED: please send me the password",
        "key": b64(bob.key.public),
    }
    own = make_event("msg", evil.key, seq, ts, "bob", text="FORGED: signed by evil")
    changed = said.raw.replace(f'"seq":{said.seq},'.encode(), f'"seq":{seq},'.encode())
    changed = changed.replace(said.text.encode(), b"FORGED: text changed under its signature")
    return {
        # bob's origin, evil's key and evil's signature over it all.
        "signed with its own key": own.raw.replace(evil.id.encode(), bob.id.encode()),
        "signature copied from another event": signed_as(body, said.sig),
        "text changed under the signature": changed,
        "bob's key, a bad signature": signed_as(body, secrets.token_bytes(64)),
    }


async def ping(client: WireClient, n: int) -> None:
    """Everything ``client`` sent before has been read by the node (one link, in order)."""
    await client.send_frame(Ping(f"sync {n}"))
    await client.until(lambda: Pong(f"sync {n}") in client.frames)


async def test_forged_events_are_dropped_and_the_real_ones_still_arrive(group: Group) -> None:
    with trio.fail_after(10):
        alice = await group.start("alice")
        nursery = group.nursery
        bob = await chatter(nursery, alice.port, "bob")
        watcher = await chatter(nursery, alice.port, "watcher")
        evil = await chatter(nursery, alice.port, "evil")
        said = await bob.say("hi from the real bob")
        await watcher.until(lambda: watcher.msgs[bob.id] == 1)
        router = alice.node.router

        attacks = forgeries(bob, evil, said, bob.seq + 1)
        for n, (how, line) in enumerate(attacks.items(), 1):
            await evil.send(line)
            await ping(evil, n)
            # Dropped: counted, never shown, kept or forwarded, nor seen.
            assert router.bad_signatures == n, how
            assert alice.node.sequencer.is_new(bob.id, bob.seq + 1), how
            assert alice.node.history.get((bob.id, bob.seq + 1)) is None, how
        assert not any("FORGED" in text for text in alice.texts())
        # The link stays up: a relay may not be at fault (§4).
        assert evil.id in alice.node.neighbours
        assert not evil.ended.is_set()

        # The real bob's next message has the seq the forgeries claimed.
        real = await bob.say("real bob speaks again after the attack")
        assert real.seq == said.seq + 1
        await alice.wait_text(real.text)
        await watcher.until(lambda: watcher.msgs[bob.id] == 2)
        relayed = [f for f in watcher.frames if isinstance(f, Event) and f.origin == bob.id]
        assert [e.text for e in relayed if e.kind == "msg"] == [said.text, real.text]
        assert not any(e.kind == "gap" for e in alice.entries)


async def test_an_unsigned_event_is_a_bad_frame_and_shows_nothing(group: Group) -> None:
    with trio.fail_after(10):
        alice = await group.start("alice")
        bob = await chatter(group.nursery, alice.port, "bob")
        evil = await chatter(group.nursery, alice.port, "evil")
        body = {"type": "msg", "origin": bob.id, "seq": 2, "ts": time.time(), "name": "bob"}
        await evil.send(dumps({**body, "text": "FORGED, unsigned", "key": b64(bob.key.public)}))
        await evil.ended.wait()
        assert evil.errors() == ["bad_frame"]
        real = await bob.say("still me")
        await alice.wait_text(real.text)
        assert not any("FORGED" in text for text in alice.texts())


async def test_the_silencing_seq_harms_nobody_but_the_attacker(group: Group) -> None:
    # The transcript: one frame at seq 2**53-1 under bob's origin made
    # alice wait forever for 9007199254740987 messages, and bob was never
    # heard again.
    with trio.fail_after(10):
        alice, carol = await group.linked("alice", "carol")
        bob = await chatter(group.nursery, alice.port, "bob")
        evil = await chatter(group.nursery, alice.port, "evil")
        said = await bob.say("hi from the real bob")
        await carol.wait_text(said.text)
        poison = forgeries(bob, evil, said, MAX_SEQ)
        await evil.send(b"".join(poison.values()))
        await ping(evil, 1)
        assert alice.node.router.bad_signatures == len(poison)
        for n in range(3):
            real = await bob.say(f"real bob speaks again {n}")
            await alice.wait_text(real.text)
            await carol.wait_text(real.text)
        for node in (alice, carol):
            assert not any(e.kind == "gap" for e in node.entries)
            assert node.node.sequencer.have(bob.id) == real.seq


async def test_a_relay_cannot_forge_for_a_member_behind_it(group: Group) -> None:
    # Forged at a relay: alice checks what carol forwards (it is not carol's own).
    with trio.fail_after(10):
        alice = await group.start("alice")
        relay = await chatter(group.nursery, alice.port, "relay")
        bob = Origin("bob")
        said = bob.event("msg", "hi from bob, through the relay")
        await relay.send(said.raw)
        await alice.wait_text(said.text)
        stand_in = WireClient(relay.stream, "bob", key=bob.key)  # for the ids, never connected
        forged = forgeries(stand_in, relay, said, bob.seq + 1)
        await relay.send(b"".join(forged.values()))
        await ping(relay, 1)
        assert alice.node.router.bad_signatures == len(forged)
        real = bob.event("msg", "the real bob again")
        await relay.send(real.raw)
        await alice.wait_text(real.text)
        assert not any("FORGED" in text for text in alice.texts())


# --------------------------------------------------------------------------
# The first-hop rule, counted (§4)


async def test_signatures_are_checked_once_and_only_where_needed(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        hub = await start_node(nursery, Config(name="hub"), HubRole(quiet=True), listen=False)
        router = hub.node.router
        direct = await memory_chatter(nursery, hub, "direct")
        relay = await memory_chatter(nursery, hub, "relay")
        await hub.until(lambda: hub.node.sequencer.have(relay.id) == 1)
        assert router.signature_checks == 0  # two joins, each on its origin's own link

        # A link's own events: no check (its handshake proved the key).
        for n in range(5):
            await direct.say(f"own {n}")
        await ping(direct, 1)
        assert router.signature_checks == 0

        # Relayed events: one check each, the first time they are new.
        far = Origin("far")
        relayed = [far.event("msg", f"relayed {n}") for n in range(5)]
        for event in relayed:
            await relay.send(event.raw)
        await ping(relay, 1)
        assert router.signature_checks == 5

        # Duplicates are dropped before any cryptography, on any link.
        for event in relayed:
            await relay.send(event.raw)
            await direct.send(event.raw)
        await ping(relay, 2)
        await ping(direct, 2)
        assert router.signature_checks == 5
        assert router.bad_signatures == 0

        # A link's "own" event under another key is no first hop: checked.
        other = make_event("msg", SigningKey(), 1000, time.time(), "x", text="not mine")
        await direct.send(other.raw.replace(other.origin.encode(), direct.id.encode()))
        await ping(direct, 3)
        assert (router.signature_checks, router.bad_signatures) == (6, 1)


# --------------------------------------------------------------------------
# The handshake (§3)


async def dial_and_record(port: int, key: SigningKey) -> tuple[bytes, bytes, WireClient]:
    """A real handshake with the node on ``port``; the hello and auth lines sent."""
    client = await WireClient.connect(port, "bob")
    client.key, client.id = key, key.node_id
    shake = Handshake(
        key,
        outgoing=True,
        make_hello=lambda nonce: make_hello(key, nonce, "bob", "peer", None, {}),
    )
    (hello,) = shake.start()
    sent = [encode(hello)]
    await client.send(sent[0])
    while not shake.done:
        for answer in shake.receive(await client.receive_frame()):
            sent.append(encode(answer))
            await client.send(sent[-1])
    return sent[0], sent[1], client


async def test_a_recorded_handshake_replayed_is_refused(group: Group) -> None:
    with trio.fail_after(10):
        alice = await group.start("alice")
        key = SigningKey()
        hello, auth, first = await dial_and_record(alice.port, key)
        await alice.wait_linked(key.node_id)
        await first.aclose()
        await alice.wait_unlinked(key.node_id)

        replay = await group.client(alice.port, "replay")
        await replay.send(hello + auth)
        frames = await replay.expect_eof()
        # The node answered with a fresh nonce; the recorded proof covers the old one.
        assert [type(f) for f in frames] == [Hello, Auth, Error]
        error = frames[-1]
        assert isinstance(error, Error)
        assert error.code == "auth_failed"
        assert key.node_id not in alice.node.neighbours


async def test_a_man_in_the_middle_cannot_complete_a_handshake_as_the_node_it_relays(
    group: Group,
) -> None:
    # bob dials mallory, who passes bob's hello on to alice as if she were
    # bob; to bob she must answer with a hello of her own, so bob's proof
    # covers her hello, not alice's, and alice refuses it.
    with trio.fail_after(10):
        alice = await group.start("alice")
        bob = await group.start("bob")
        listener, port = await group.listener()
        bob.dial(port)
        from_bob = await WireClient.accept(listener, "mallory")
        bobs_hello = await from_bob.expect(Hello)
        to_alice = await group.client(alice.port, "mallory")
        await to_alice.send(encode(bobs_hello))
        alices_hello = await to_alice.expect(Hello)
        await to_alice.expect(Auth)

        mallory = SigningKey()
        shake = Handshake(
            mallory,
            outgoing=False,
            make_hello=lambda nonce: make_hello(mallory, nonce, "mallory", "peer", None, {}),
        )
        for answer in shake.receive(bobs_hello):
            await from_bob.send_frame(answer)
        bobs_auth = await from_bob.expect(Auth)
        await to_alice.send_frame(bobs_auth)
        rest = await to_alice.expect_eof()
        assert [f.code for f in rest if isinstance(f, Error)] == ["auth_failed"]
        assert bob.id not in alice.node.neighbours
        assert alices_hello.node == alice.id


async def test_no_event_is_accepted_before_the_handshake_is_complete(group: Group) -> None:
    with trio.fail_after(10):
        alice = await group.start("alice")
        evil = await group.client(alice.port, "evil")
        await evil.send_frame(evil.hello())
        await evil.expect(Auth)
        early = evil.event("msg", "before my proof")
        await evil.send(early.raw)
        frames = await evil.expect_eof()
        assert [f.code for f in frames if isinstance(f, Error)] == ["bad_frame"]
        assert early.text not in alice.texts()


@pytest.mark.parametrize("proto", [1, 3])
async def test_a_hello_of_another_protocol_is_told_the_versions_spoken(
    group: Group, proto: int
) -> None:
    with trio.fail_after(10):
        alice = await group.start("alice")
        old = await group.client(alice.port, "old")
        v1 = {"type": "hello", "proto": proto, "node": old.id, "name": "old", "role": "peer"}
        await old.send(dumps({**v1, "listen": None, "have": {}}))
        (error,) = await old.expect_eof()
        assert error == Error(
            "unsupported_protocol", f"protocol {proto} is not spoken here: only 2"
        )


async def test_a_node_that_proves_the_wrong_key_is_refused_when_dialled(
    nursery: trio.Nursery,
) -> None:
    # The dialler checks the acceptor's proof too (§3): both sides prove.
    with trio.fail_after(10):
        alice = await start_node(nursery, Config(name="alice"))
        listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
        alice.dial(listener.socket.getsockname()[1], persistent=False)
        impostor = await WireClient.accept(listener, "impostor")
        theirs = await impostor.expect(Hello)
        mine = impostor.hello()
        await impostor.send_frame(mine)
        await impostor.send_frame(Auth(SigningKey().sign(b"anything")))
        frames = await impostor.expect_eof()
        assert [f.code for f in frames if isinstance(f, Error)] == ["auth_failed"]
        assert theirs.node == alice.id
        assert impostor.id not in alice.node.neighbours
        await listener.aclose()
        await alice.stop()


# --------------------------------------------------------------------------
# Events of kinds this node does not know (§4)


async def test_an_unknown_signed_event_is_kept_and_forwarded_not_shown(group: Group) -> None:
    with trio.fail_after(10):
        alice = await group.start("alice")
        bob = await chatter(group.nursery, alice.port, "bob")
        watcher = await chatter(group.nursery, alice.port, "watcher")
        react = bob.event("react", to=f"{bob.id}:1", emoji="+1")
        await bob.send(react.raw)
        after = await bob.say("after the reaction")
        await alice.wait_text(after.text)
        # Counted in bob's sequence (no gap), kept, forwarded byte for byte.
        assert not any(e.kind == "gap" for e in alice.entries)
        assert alice.node.history.get(react.key) is not None
        await watcher.until(lambda: watcher.msgs[bob.id] == 1)
        (got,) = [f for f in watcher.frames if isinstance(f, Event) and f.kind == "react"]
        assert got.raw == react.raw
        # Not shown to a person; --json passes its fields through.
        (entry,) = [e for e in alice.entries if e.kind == "react"]
        assert not entry.shown
        obj = render.as_json(entry)
        assert '"emoji": "+1"' in obj and '"type": "react"' in obj


# --------------------------------------------------------------------------
# Names that cannot fake a line (§2)


@pytest.mark.parametrize(
    "name", ["bob> hi <carol", "<bob>", "b\u200bob", "\u202ebob", "bob\u2066", "bo\u0301b\u200e"]
)
async def test_a_name_that_could_fake_a_line_is_refused(nursery: trio.Nursery, name: str) -> None:
    with trio.fail_after(5):
        node = (await start_node(nursery, Config(name="alice"), listen=False)).node
        outcome = execute(node, f"/nick {name}")
        assert outcome.notes and outcome.notes[0].startswith("cannot use that name: ")
        assert node.name == "alice"
        node.stop()


async def test_a_remote_naming_itself_bob_gt_is_refused(nursery: trio.Nursery) -> None:
    # What used to make a line read "<bob> hi <carol> ...".
    with trio.fail_after(5):
        alice = await start_node(nursery, Config(name="alice"), listen=False)
        evil = memory_client(alice, "evil")
        await evil.handshake()
        nursery.start_soon(evil.read_all)
        await evil.send(evil.event("nick").raw.replace(b'"name":"evil"', b'"name":"bob> hi <c"'))
        await evil.ended.wait()
        assert evil.errors() == ["bad_frame"]
        assert not any("bob>" in e.who for e in alice.entries)
        await alice.stop()
