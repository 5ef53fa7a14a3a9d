"""Attacks on a node, each written as a test before its defence (issue 11).

Every test plays the attacker against real nodes on 127.0.0.1 (or memory
streams on the virtual clock where the point is time), then checks that
the bound holds: the node stays up, honest members keep chatting, and
memory is counted in what the node keeps (bytes in its structures), never
as RSS. § refers to docs/PROTOCOL.md; the limits are listed in the
README's "Limits" section.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from harness import Group, NodeHandle
from wire import WireClient, new_id

from chat.dialler import Dialler, LinkEnd
from chat.frontend import execute
from chat.protocol import Error, PeerInfo, Peers

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
    assert len(warnings) == 1, warnings
    assert "cannot reach somewhere:1" in warnings[0]
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
