"""The dialler alone: back-off, re-dialling and giving up, on the virtual clock.

The dialler is given its stream opener and its server (callables), so
these tests hand it memory streams and a fake serve that ends each
connection as the test says, and watch the virtual clock: no socket, no
node, no real time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import trio
import trio.testing

from chat.changes import Changes
from chat.dialler import BACKOFF_MAX, LEARNED_TRIES, Dialler, LinkEnd
from chat.lifecycle import Closing, Reason


class Network:
    """Answers the dialler's connects: refused ``failures`` times, then a stream."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionRefusedError(111, "Connection refused")
        self.attempts: list[float] = []  # virtual times of each connect

    async def open(self, host: str, port: int) -> trio.abc.Stream:
        self.attempts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if len(self.attempts) <= self.failures:
            raise self.error
        return trio.testing.memory_stream_pair()[0]


class Server:
    """A fake ``serve``: each served stream is up until the test ends it."""

    def __init__(self, ends: list[LinkEnd]) -> None:
        self.ends = ends  # how each successive connection will end
        self.served: list[float] = []
        self.current: trio.Event | None = None
        self.changes = Changes()

    async def serve(self, stream: trio.abc.Stream, on_up: Callable[[], None]) -> LinkEnd:
        self.served.append(trio.current_time())
        end = self.ends[min(len(self.served), len(self.ends)) - 1]
        if end.established:
            on_up()
        self.current = trio.Event()
        self.changes.notify()
        await self.current.wait()
        return end


async def never_linked(node_id: str) -> None:
    await trio.lowlevel.checkpoint()


def ended(reason: Reason = Reason.CLOSED_BY_REMOTE, *, up: bool = True) -> LinkEnd:
    return LinkEnd("f" * 32, "far", up, Closing(reason))


async def test_command_line_address_backs_off_doubling_to_the_maximum(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    network = Network(failures=8)
    server = Server([ended()])
    dialler = Dialler(server.serve, never_linked, timeout=10, open_stream=network.open)
    with trio.fail_after(200):
        async with trio.open_nursery() as nursery:
            dialler.start(nursery)
            start = trio.current_time()
            assert dialler.connect("far.example", 9, persistent=True)
            assert not dialler.connect("far.example", 9, persistent=True)  # already dialling
            await dialler.settled()  # the first failure settles it
            assert trio.current_time() == start
            await server.changes.until(lambda: bool(server.served))
            gaps = [b - a for a, b in zip(network.attempts, network.attempts[1:], strict=False)]
            assert gaps == [1, 2, 4, 8, 16, BACKOFF_MAX, BACKOFF_MAX, BACKOFF_MAX]
            nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # The streak's first failure, and after three a "still trying" (the
    # toolbar's too): once each, however long the streak.
    assert len(warnings) == 2, warnings
    assert "cannot reach far.example:9 (Connection refused)" in warnings[0]
    assert warnings[1] == "still trying far.example:9: Connection refused"


async def test_dropped_link_is_redialled_after_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = Network()
    server = Server([ended(), ended()])
    dialler = Dialler(server.serve, never_linked, timeout=10, open_stream=network.open)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            dialler.start(nursery)
            dialler.connect("peer", 1, persistent=True)
            await dialler.settled()  # settled once the handshake is up
            await trio.testing.wait_all_tasks_blocked()
            assert server.current is not None
            server.current.set()  # the link drops
            await server.changes.until(lambda: len(server.served) == 2)
            assert server.served[1] - server.served[0] == pytest.approx(1.0)
            nursery.cancel_scope.cancel()


async def test_learned_address_is_given_up_after_a_few_tries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = Network(failures=100)
    dialler = Dialler(Server([]).serve, never_linked, timeout=10, open_stream=network.open)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            dialler.start(nursery)
            assert dialler.connect("learned", 2, persistent=False, expect="a" * 32)
            assert dialler.learned == 1
            assert not dialler.connect("elsewhere", 3, persistent=False, expect="a" * 32)
        # The nursery ended by itself: the dialler gave up and forgot it.
    assert len(network.attempts) == LEARNED_TRIES
    assert dialler.learned == 0


async def test_a_node_that_dialled_itself_is_not_dialled_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = Network()
    server = Server([ended(Reason.ITSELF, up=False)])
    dialler = Dialler(server.serve, never_linked, timeout=10, open_stream=network.open)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            dialler.start(nursery)
            dialler.connect("me", 4, persistent=True)
            await trio.testing.wait_all_tasks_blocked()
            assert server.current is not None
            server.current.set()
    assert len(network.attempts) == 1


async def test_connect_before_start_is_queued_not_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = Network()
    server = Server([ended()])
    dialler = Dialler(server.serve, never_linked, timeout=10, open_stream=network.open)
    assert dialler.connect("early", 5, persistent=True)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            dialler.start(nursery)
            await dialler.settled()
            assert len(server.served) == 1
            nursery.cancel_scope.cancel()


async def test_a_connect_that_never_answers_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def hang(host: str, port: int) -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    dialler = Dialler(Server([]).serve, never_linked, timeout=10, open_stream=hang)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            dialler.start(nursery)
            dialler.connect("silent", 6, persistent=True)
            start = trio.current_time()
            await dialler.settled()
            assert trio.current_time() - start == pytest.approx(10)
            nursery.cancel_scope.cancel()
