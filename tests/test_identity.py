"""Who is who (issue 13, docs/PROTOCOL.md §2): identities, fingerprints, names.

A person's identity key lives in a 0600 file that survives restarts and is
refused when others can read it; it certifies each run key. Names are bound
to identities on first use: another identity under a known name is pointed
out once, and two present members whose names look alike are told apart as
``bob~XXXX``. ``/whois`` and ``/peers`` say who is who.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
import trio
from harness import Group, chatter
from procs import ProcessGroup, process_group
from wire import HOST, WireClient

from chat import render
from chat.frontend import execute
from chat.identity import IdentityError, KnownNames, certificate, load_identity
from chat.keys import SigningKey
from chat.members import tag

# --------------------------------------------------------------------------
# The identity file


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def start_peer(group: ProcessGroup, name: str, *more: str) -> tuple[str, int]:
    """A line-mode peer; its identity's fingerprint and port (from its first line)."""
    proc = await group.start("peer", "0", "--host", HOST, "--name", name, *more, label=name)
    port = await proc.wait_listening()
    return proc.fingerprint, port


async def test_the_identity_is_made_private_on_first_run_and_kept(config_home: Path) -> None:
    async with process_group() as group:
        with trio.fail_after(20):
            first, _ = await start_peer(group, "alice")
            path = config_home / "identity"
            assert mode_of(path) == 0o600
            assert mode_of(config_home) == 0o700
            assert first == load_identity(path).fingerprint
            assert re.fullmatch(r"SHA256:[A-Za-z0-9+/]{12}", first)
            group.kill_all()
            again, _ = await start_peer(group, "alice")
            assert again == first  # a restart is the same person
            chosen = config_home.parent / "elsewhere" / "work.key"
            other, _ = await start_peer(group, "alice", "--identity", str(chosen))
            assert other != first
            assert mode_of(chosen) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
async def test_a_key_file_others_can_read_is_refused_with_the_fix(
    config_home: Path, mode: int
) -> None:
    path = config_home / "identity"
    load_identity(path)
    path.chmod(mode)
    async with process_group() as group:
        with trio.fail_after(20):
            proc = await group.start("peer", "0", "--host", HOST, "--name", "alice")
            assert await proc.wait() == 1
    err = "\n".join(proc.stderr.lines)
    assert "can be read by others" in err
    assert f"chmod 600 {path}" in err
    assert "Traceback" not in err
    assert load_identity.__name__ not in err


def test_what_is_not_an_identity_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity"
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="not a trio-chat identity file"):
        load_identity(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(IdentityError, match="not a trio-chat identity file"):
        load_identity(path)


def test_the_seed_is_never_in_an_error_message(tmp_path: Path) -> None:
    path = tmp_path / "identity"
    key = load_identity(path)
    seed_text = path.read_text().splitlines()[1]
    path.chmod(0o644)
    with pytest.raises(IdentityError) as info:
        load_identity(path)
    assert seed_text not in str(info.value)
    assert key.seed().hex() not in str(info.value)


# --------------------------------------------------------------------------
# Names bound to identities, trust on first use (§2)

WARNING = re.compile(
    r"\*\*\* warning: bob is not the bob you saw before"
    r" \((SHA256:[A-Za-z0-9+/]{12}) now, (SHA256:[A-Za-z0-9+/]{12}) before\)$"
)


async def test_another_identity_under_a_known_name_is_pointed_out_once(
    config_home: Path,
) -> None:
    keys = config_home.parent / "keys"
    async with process_group() as group:
        with trio.fail_after(30):
            alice = await group.peer("alice")
            where = alice.address
            bobs = [str(keys / f"bob{n}.key") for n in (1, 2)]

            async def visit(key: str, text: str) -> str:
                """bob, under the identity in ``key``, says ``text`` to alice and leaves."""
                args = ("peer", "0", where, "--host", HOST, "--name", "bob", "--identity", key)
                bob = await group.start(*args, label=f"bob ({Path(key).name})")
                await bob.wait_listening()
                await bob.send_line(text)
                await alice.wait_stdout(f"<bob> {text}")
                await bob.close_stdin()
                assert await bob.wait() == 0, bob.describe()
                return bob.fingerprint

            first = await visit(bobs[0], "the first bob")
            second = await visit(bobs[1], "another bob")
            await visit(bobs[1], "the other bob again")
            await visit(bobs[0], "the first bob is back")
    warnings = alice.stdout.matching(WARNING)
    assert len(warnings) == 1, alice.describe()
    found = WARNING.search(warnings[0])
    assert found is not None
    assert (found[1], found[2]) == (second, first)
    known = config_home / "known_names"
    assert mode_of(known) == 0o600
    entries = [json.loads(line) for line in known.read_text().splitlines()]
    assert {"name": "bob", "fingerprint": first} in entries


def test_known_names_survive_a_restart_and_compare_look_alikes(tmp_path: Path) -> None:
    path = tmp_path / "known_names"
    known = KnownNames(path)
    assert known.check("bob", "SHA256:aaaaaaaaaaaa") is None
    again = KnownNames(path)
    assert again.check("bob", "SHA256:aaaaaaaaaaaa") is None
    assert again.check("Bob", "SHA256:bbbbbbbbbbbb") == "SHA256:aaaaaaaaaaaa"
    assert again.check("bob", "SHA256:bbbbbbbbbbbb") is None  # once a session
    assert again.check("b\u03bfb", "SHA256:cccccccccccc") == "SHA256:aaaaaaaaaaaa"  # Greek omicron
    path.write_text("garbage\n")
    with pytest.raises(IdentityError, match="not a known-names file"):
        KnownNames(path)


async def test_known_names_none_writes_nothing(config_home: Path) -> None:
    async with process_group() as group:
        with trio.fail_after(20):
            await start_peer(group, "alice", "--known-names", "none")
    assert not (config_home / "known_names").exists()


# --------------------------------------------------------------------------
# Two present members that look alike: bob~XXXX (§2)


async def person(group: Group, port: int, name: str) -> tuple[WireClient, SigningKey]:
    """A client whose join carries a person's identity and certificate."""
    identity = SigningKey()
    client = await group.client(port, name)
    await client.handshake()
    await client.send(client.event("join", **certificate(identity, client.key)).raw)
    group.nursery.start_soon(client.read_all)
    return client, identity


@pytest.mark.parametrize("other", ["bob", "Bob", "b\u03bfb", "BOB"])
async def test_two_present_look_alikes_are_told_apart_by_fingerprint(
    group: Group, other: str
) -> None:
    with trio.fail_after(10):
        alice = await group.start("alice")
        bob, bob_id = await person(group, alice.port, "bob")
        said = await bob.say("only bob here")
        assert (await alice.wait_text(said.text)).who == "bob"
        twin, twin_id = await person(group, alice.port, other)
        from_bob = await bob.say("which bob am I")
        from_twin = await twin.say("and I")
        shown_bob = await alice.wait_text(from_bob.text)
        shown_twin = await alice.wait_text(from_twin.text)
        assert shown_bob.who == f"bob~{tag(bob_id.fingerprint)}"
        assert shown_twin.who == f"{other}~{tag(twin_id.fingerprint)}"
        assert render.line(shown_bob).endswith(f"<bob~{tag(bob_id.fingerprint)}> which bob am I")
        # --json carries the fingerprint on every event.
        assert json.loads(render.as_json(shown_twin))["fingerprint"] == twin_id.fingerprint
        # /whois finds each by its shown name.
        lines = execute(alice.node, f"/whois bob~{tag(bob_id.fingerprint)}").notes
        assert lines[0].startswith(f"bob~{tag(bob_id.fingerprint)}: identity {bob_id.fingerprint}")
        # One leaves: the other is plain again.
        await twin.send(twin.event("leave").raw)
        await alice.wait_entry(lambda e: e.kind == "leave" and e.origin == twin.id)
        again = await bob.say("alone again")
        assert (await alice.wait_text(again.text)).who == "bob"


# --------------------------------------------------------------------------
# /whois and /peers


async def test_whois_says_who_and_how(group: Group) -> None:
    with trio.fail_after(10):
        alice, carol = await group.linked("alice", "carol")
        bob, bob_id = await person(group, alice.port, "bob")
        said = await bob.say("hello")
        await carol.wait_text(said.text)

        direct = execute(alice.node, "/whois bob").notes
        assert direct[0] == f"bob: identity {bob_id.fingerprint}"
        assert direct[1].startswith(f"  node {bob.id}, address 127.0.0.1:")
        assert re.fullmatch(r"  direct \(peer\), since \d\d:\d\d:\d\d", direct[2])
        relayed = execute(carol.node, "/whois bob").notes
        assert relayed[0] == f"bob: identity {bob_id.fingerprint}"
        assert relayed[1] == f"  node {bob.id}"
        assert re.fullmatch(r"  via alice, since \d\d:\d\d:\d\d", relayed[2])
        assert execute(alice.node, "/whois nobody").notes == [
            "nobody called nobody is here; /peers lists who is"
        ]
        assert execute(alice.node, "/whois").notes == ["usage: /whois NAME"]
        me = execute(alice.node, "/whois alice").notes
        assert me[0].startswith("alice (you): no identity: known by its run key SHA256:")

        peers = execute(carol.node, "/peers").notes
        assert peers[0] == f"2 present besides you (carol, {carol.node.fingerprint})"
        # One column of names (alice is the longest): bob's is padded to it.
        assert f"  bob    {bob_id.fingerprint}  via alice" in peers, peers


async def test_whois_of_a_plain_text_client_says_who_vouches_for_it(group: Group) -> None:
    with trio.fail_after(10):
        alice, carol = await group.linked("alice", "carol")
        person_ = await trio.open_tcp_stream(HOST, alice.port)
        await person_.send_all(b"/nick dave\nhi from netcat\n")
        await carol.wait_text("hi from netcat")
        here = execute(alice.node, "/whois dave").notes
        assert here[0].startswith("dave: no key of its own: a plain-text client vouched for by")
        assert "this node" in here[0]
        assert "plain-text client here" in here[2]
        there = execute(carol.node, "/whois dave").notes
        assert "vouched for by alice" in there[0]
        await person_.aclose()


async def test_an_identity_travels_in_join_and_nick(group: Group) -> None:
    with trio.fail_after(10):
        identity = SigningKey()
        alice = await group.start("alice", identity=identity)
        watcher = await chatter(group.nursery, alice.port, "watcher")
        assert alice.node.fingerprint == identity.fingerprint
        execute(alice.node, "/nick alicia")
        await watcher.until(lambda: any(e.kind == "nick" for e in watcher.events()))
        for event in watcher.events():
            if event.origin == alice.id and event.kind in ("join", "nick"):
                assert (
                    event.extra["identity"] == certificate(identity, alice.node.me.key)["identity"]
                )
                assert "cert" in event.extra
        member = alice.node.members.get(alice.id)
        assert member is not None
        assert member.fingerprint == identity.fingerprint
        assert member.person
