"""A relay passes the messages of one read on together (chat.router).

One put per recipient per read instead of one per message, and nothing
else changes: every recipient gets every event once, in the order it came,
nothing waits past the read that brought it, and a recipient that cannot
take a read's messages gets them from history instead, from the first.
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from harness import NodeHandle, memory_chatter, start_node
from wire import WireClient

from chat.config import Config
from chat.hub import HubRole
from chat.link import Link
from chat.protocol import Ping, Pong


async def _hub(nursery: trio.Nursery, *names: str) -> tuple[NodeHandle, list[WireClient]]:
    """A hub without rate limits (a pause ends a read's batch early) and its clients."""
    config = Config(name="hub", rate=0, origin_rate=0)
    hub = await start_node(nursery, config, HubRole(quiet=True), listen=False)
    clients = [await memory_chatter(nursery, hub, name) for name in names]
    await hub.until(lambda: all(c.id in hub.node.neighbours for c in clients))
    return hub, clients


async def _synced(client: WireClient, n: int) -> None:
    """Everything ``client`` sent before has been read and handled."""
    await client.send_frame(Ping(f"sync {n}"))
    await client.until(lambda: Pong(f"sync {n}") in client.frames)


def _record(link: Link, answer: Callable[[bytes], bool] | None = None) -> list[bytes]:
    """What is put on ``link``'s outbox from now on (``answer``: instead of it)."""
    puts: list[bytes] = []
    put = link.put

    def recording(data: bytes) -> bool:
        puts.append(data)
        return answer(data) if answer is not None else put(data)

    link.put = recording
    return puts


async def test_a_reads_messages_go_on_in_one_put_each_and_in_order(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        hub, (sender, reader) = await _hub(nursery, "sender", "reader")
        puts = _record(hub.node.neighbours[reader.id])
        first = [sender.event("msg", f"first {n}") for n in range(50)]
        sender.name = "sender2"
        nick = sender.event("nick")  # not a message: it goes on alone, in its place
        last = [sender.event("msg", f"last {n}") for n in range(10)]
        await sender.send(b"".join(e.raw for e in [*first, nick, *last]))  # one read
        await reader.until(lambda: len(reader.events(origin=sender.id)) >= 62)
        got = [e.seq for e in reader.events(origin=sender.id)]
        assert got == list(range(1, 63))  # its join, then all 61, once each, in order
        assert puts == [
            b"".join(e.raw for e in first),
            nick.raw,
            b"".join(e.raw for e in last),
        ]


async def test_a_recipient_that_cannot_take_a_read_gets_it_from_history(
    nursery: trio.Nursery,
) -> None:
    # Its outbox refuses the read's messages, as a full one does: the link
    # falls behind from the first of them, and once its writer has drained
    # it catches up from history, each message once, in order.
    with trio.fail_after(10):
        hub, (sender, reader) = await _hub(nursery, "sender", "reader")
        link = hub.node.neighbours[reader.id]
        refused = _record(link, answer=lambda data: False)
        said = [sender.event("msg", f"said {n}") for n in range(30)]
        await sender.send(b"".join(e.raw for e in said))
        await _synced(sender, 1)
        assert refused == [b"".join(e.raw for e in said)]
        assert link.cursor is not None and not reader.events("msg", sender.id)
        hub.node.links.link_drained(link)  # what its writer does when it is done
        await reader.until(lambda: len(reader.events("msg", sender.id)) >= 30)
        assert [e.text for e in reader.events("msg", sender.id)] == [e.text for e in said]
        assert link.cursor is None
