"""Hubs joined through Redis Streams (``trio-chat hub --bus URL``, chat.bus).

Each test runs its own redis-server on 127.0.0.1 and a free port (skipped
with a reason where redis-server is missing; under CI=true a failure), and
real hub and peer processes of the real command.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from procs import ChatProcess, ProcessGroup, joined, lost, said
from programs import path_of
from test_hub import assert_no_duplicates, messages, start_hub, watched_group

pytestmark = pytest.mark.needs("redis-server")


class Redis:
    """A redis-server of the test's own, without persistence."""

    def __init__(self, where: Path) -> None:
        self.where = where
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, group: str = "t") -> str:
        return f"redis://127.0.0.1:{self.port}/0?group={group}"

    def start(self) -> None:
        command = [path_of("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.where)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not self.answers():
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer PING in 10 s"
            time.sleep(0.01)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def bus_hub(group: ProcessGroup, redis: Redis, name: str) -> ChatProcess:
    hub = await start_hub(group, "--bus", redis.url(), name=name)
    await hub.wait_stderr(r"joined to other hubs through redis://127\.0\.0\.1:\d+/0")
    return hub


async def test_three_hubs_on_one_redis_deliver_everything_once_in_order(redis: Redis) -> None:
    with trio.fail_after(40):
        async with watched_group() as group:
            hubs = [await bus_hub(group, redis, f"hub{i}") for i in (1, 2, 3)]
            peers = [await group.peer(n, h.address) for n, h in zip("abc", hubs, strict=True)]
            for proc in peers:  # presence across hubs: each sees the others join
                for other in peers:
                    await proc.wait_stdout(joined(other.name, history=None))
            # /peers on a's side (hub1) lists the members on hub2 and hub3.
            await peers[0].send_line("/peers")
            await peers[0].wait_stderr(r".*5 present besides you \(a, .*")
            for name in ("b", "c", "hub2", "hub3"):
                await peers[0].wait_stderr(rf".*  {name} +SHA256:.*")
            sent = {proc.name: [f"{proc.name} says {n}" for n in range(1, 6)] for proc in peers}
            for n in range(5):
                for proc in peers:
                    await proc.send_line(sent[proc.name][n])
            for proc in peers:
                for other in peers:
                    await proc.wait_stdout(said(other.name, sent[other.name][-1]))
            for proc in peers:
                got = messages(proc)
                for other in peers:
                    assert got.get(other.name) == sent[other.name], proc.describe()
                assert_no_duplicates(proc)

            # A late joiner on a fresh hub sees the history from the stream.
            late_hub = await bus_hub(group, redis, "hub4")
            late = await group.peer("d", late_hub.address)
            for proc in peers:
                await late.wait_stdout(said(proc.name, sent[proc.name][-1], history=True))
            for proc in peers:
                assert messages(late).get(proc.name) == sent[proc.name], late.describe()
            assert_no_duplicates(late)


async def test_redis_away_for_a_while_loses_nothing(redis: Redis) -> None:
    with trio.fail_after(40):
        async with watched_group() as group:
            one, two = [await bus_hub(group, redis, f"hub{i}") for i in (1, 2)]
            a = await group.peer("a", one.address)
            b = await group.peer("b", two.address)
            await b.wait_stdout(joined("a", history=None))
            await a.send_line("before the outage")
            await b.wait_stdout(said("a", "before the outage"))

            redis.stop()
            stopped = trio.current_time()
            during = [f"during the outage {n}" for n in range(1, 4)]
            for text in during:
                await a.send_line(text)
                await a.wait_stdout(said("a", text))  # its own hub still serves it
            await one.wait_stderr(r".*bus redis://127\.0\.0\.1:\d+/0 unreachable .*")
            await trio.sleep(max(0.0, 5 - (trio.current_time() - stopped)))  # 5 s away
            redis.start()
            for text in during:
                await b.wait_stdout(said("a", text))
            await b.send_line("after the outage")
            await a.wait_stdout(said("b", "after the outage"))
            await one.wait_stderr(r".*bus redis://127\.0\.0\.1:\d+/0 back after .*")
            assert messages(b)["a"] == ["before the outage", *during], b.describe()
            assert_no_duplicates(b)
            for hub in (one, two):  # one line for the outage, not one per event or try
                assert hub.stderr.count(r".*unreachable.*") == 1, hub.describe()
                assert hub.stderr.count(r".*back after.*") == 1, hub.describe()


async def test_a_hub_killed_is_reported_by_the_others_and_restarts_from_the_stream(
    redis: Redis,
) -> None:
    with trio.fail_after(60):
        async with watched_group() as group:
            one, two = [await bus_hub(group, redis, f"hub{i}") for i in (1, 2)]
            quick = ("--keepalive", "1")  # relayed lost reports are held 3 s (chat/screen.py)
            a = await group.peer("a", one.address, *quick)
            b = await group.peer("b", two.address, *quick)
            c = await group.peer("c", two.address, *quick)
            for proc in (a, b, c):
                for other in (a, b, c):
                    await proc.wait_stdout(joined(other.name, history=None))
            await b.send_line("b before the kill")
            await a.wait_stdout(said("b", "b before the kill"))

            two.kill()
            await two.wait()
            # hub1 no longer hears hub2 beat: its clients, seen from a, are lost.
            for name in ("b", "c", "hub2"):
                await a.wait_stdout(lost(name))
            await a.send_line("a while hub2 is down")

            # hub2 again, on its port: it reads the stream, b and c come back.
            two = await start_hub(group, "--bus", redis.url(), port=two.port, name="hub2")
            for proc in (b, c):
                await proc.wait_stdout(said("a", "a while hub2 is down"))
            await b.send_line("b after the restart")
            await a.wait_stdout(said("b", "b after the restart"))
            await c.wait_stdout(said("b", "b after the restart"))
            for proc in (a, b, c):
                assert_no_duplicates(proc, allowed=re.compile(r"\*\*\* .* joined"))
            for name in ("b", "c"):
                assert a.stdout.count(lost(name)) == 1, a.describe()
            assert messages(a)["b"] == ["b before the kill", "b after the restart"]
            assert messages(c)["a"] == ["a while hub2 is down"], c.describe()
