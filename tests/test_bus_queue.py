"""The bus's queue of events waiting for Redis (chat.bus), without Redis.

A fake client stands in for coredis: it fails while "Redis is away", then
takes what it is given. What the hub accepted meanwhile is appended in
order once; past ``--history`` events the oldest are dropped, counted and
said once in the line that says Redis is back.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
import trio.testing

from chat.bus import Bus, parse_bus
from chat.keys import SigningKey
from chat.protocol import make_event
from chat.router import Router


class Away(Exception):
    """What the fake client raises while Redis is away."""


class FakeRedis:
    def __init__(self) -> None:
        self.away = True
        self.stream: list[bytes] = []
        self.tried = trio.Event()
        self.took = trio.Event()

    @asynccontextmanager
    async def pipeline(self, transaction: bool = False) -> Any:
        batch: list[bytes] = []
        await trio.lowlevel.checkpoint()
        if self.away:
            self.tried.set()
            raise Away("connection refused")
        yield SimpleNamespace(xadd=lambda stream, fields, **kw: batch.append(fields[b"e"]))
        self.stream.extend(batch)
        self.took.set()


async def test_what_waits_for_redis_is_appended_once_in_order_and_bounded(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.WARNING, logger="chat")
    me = SigningKey()
    router = cast(Router, SimpleNamespace(me=SimpleNamespace(id=me.node_id)))
    bus = Bus(parse_bus("redis://127.0.0.1:6379/0?group=t"), router, history=5)
    bus._errors = (Away,)  # (run() sets them from coredis)
    redis = FakeRedis()
    events = [make_event("msg", me, n, 1.0, "me", text=f"m{n}") for n in range(1, 9)]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bus._writer, redis)
            for event in events:
                bus.publish(event)
            await redis.tried.wait()
            redis.away = False
            await redis.took.wait()  # (virtual time: the writer's back-off passes at once)
            nursery.cancel_scope.cancel()
    assert redis.stream == [e.raw for e in events[3:]]  # the 5 newest, in order, once
    assert not bus.pending and bus.appended == 5
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if "unreachable" in line]) == 1, lines
    back = [line for line in lines if "back after" in line]
    assert len(back) == 1 and "3 older ones past --history were not kept" in back[0], lines
