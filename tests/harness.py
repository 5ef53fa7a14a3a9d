"""One harness for in-process node tests, over the node's public surface.

:func:`start_node` runs a real :class:`~chat.node.Node` (any role, any
:class:`~chat.config.Config`) inside the test's nursery, listening on
127.0.0.1 port 0 (or not at all: tests then hand it memory streams with
:meth:`Node.add_stream`), and returns a :class:`NodeHandle`. The handle
records every :class:`~chat.members.Entry` the node shows and the largest
outbox and lag each connection ever had (the back-pressure bound); it
waits on :attr:`Node.changes`, which the node notifies whenever a
connection, a link, an event or a line comes or goes. :class:`Group` is a
set of nodes and clients that leave together at the end of a test.

Nothing here sleeps to wait for something: waiting is on those
notifications, on a stream, or (for "nothing more will happen") on
:func:`trio.testing.wait_all_tasks_blocked`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio
import trio.testing
from wire import HOST, WireClient

from chat.config import Config
from chat.connection import Connection
from chat.keys import SigningKey
from chat.link import Link
from chat.members import Entry
from chat.node import Node
from chat.peer import PeerRole
from chat.role import Role


async def settle() -> None:
    """Return once every task has been blocked for a moment.

    Used only to assert that something does *not* happen (no duplicate, no
    extra line): loopback TCP hands bytes over inside the kernel, so when all
    tasks have been idle for the cushion nothing is still in flight.
    """
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)


@dataclass
class Peak:
    """The most a connection ever held queued at the node."""

    queued_bytes: int = 0  # bytes in its outbox
    backlog: int = 0  # events of the history it lagged behind (its cursor)


@dataclass(eq=False)
class NodeHandle:
    """A running node: the node, its port, and what it has shown."""

    node: Node
    port: int
    scope: trio.CancelScope  # cancel it to make the node vanish (a crash)
    entries: list[Entry] = field(default_factory=list)
    peaks: dict[Connection, Peak] = field(default_factory=dict)
    finished: trio.Event = field(default_factory=trio.Event)  # run returned
    plain_port: int = 0  # a closed group's plain-text port, if it has one

    @property
    def id(self) -> str:
        return self.node.id

    def record(self, entry: Entry) -> None:
        # Shown right after the event went to every outbox (or cursor):
        # the moment the queues are at their fullest.
        for conn, peer in self.node.connections.items():
            peak = self.peaks.setdefault(conn, Peak())
            peak.queued_bytes = max(peak.queued_bytes, conn.queued_bytes)
            if isinstance(peer, Link):
                history = self.node.history
                if peer.cursor is not None:
                    behind = history.end - max(peer.cursor.next, history.first)
                    peak.backlog = max(peak.backlog, behind)
        self.entries.append(entry)

    def forget(self) -> None:
        """Drop the record of closed connections and of entries (long runs)."""
        self.entries.clear()
        self.peaks = {c: p for c, p in self.peaks.items() if c in self.node.connections}

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate`` (over any state) holds."""
        await self.node.changes.until(predicate)

    async def stop(self) -> None:
        """Leave as a person does (``Node.stop``) and wait for the node to end."""
        self.node.stop()
        await self.finished.wait()

    async def wait_entry(self, match: Callable[[Entry], bool]) -> Entry:
        """The first entry shown that matches, waiting for it if need be."""
        await self.until(lambda: any(match(e) for e in self.entries))
        return next(e for e in self.entries if match(e))

    async def wait_text(self, text: str) -> Entry:
        """The ``msg`` entry with ``text``, waiting for it if need be."""
        return await self.wait_entry(lambda e: e.kind == "msg" and e.text == text)

    async def wait_links(self, count: int) -> None:
        """Wait until the node has exactly ``count`` active links."""
        await self.until(lambda: len(self.node.neighbours) == count)

    async def wait_linked(self, *others: NodeHandle | str) -> None:
        """Wait until the node has an active link to each of ``others``."""
        ids = [o if isinstance(o, str) else o.id for o in others]
        await self.until(lambda: all(i in self.node.neighbours for i in ids))

    async def wait_unlinked(self, other: NodeHandle | str) -> None:
        node_id = other if isinstance(other, str) else other.id
        await self.until(lambda: node_id not in self.node.neighbours)

    def dial(self, other: NodeHandle | int, *, persistent: bool = True) -> None:
        port = other if isinstance(other, int) else other.port
        assert self.node.connect(HOST, port, persistent=persistent)

    def link_to(self, node_id: str) -> Link:
        """The open connection whose remote said hello as ``node_id``."""
        for peer in self.node.connections.values():
            if isinstance(peer, Link) and peer.node == node_id:
                return peer
        raise LookupError(f"no connection from {node_id}")

    def texts(self) -> list[str]:
        """Texts of the ``msg`` entries shown, in order."""
        return [e.text for e in self.entries if e.kind == "msg"]

    def about(self, kind: str, node_id: str) -> list[Entry]:
        """Entries of ``kind`` about ``node_id`` (for ``lost``: the vanished node)."""
        out = []
        for e in self.entries:
            if e.kind != kind:
                continue
            subject = e.event.node if e.event is not None and kind == "lost" else e.origin
            if subject == node_id:
                out.append(e)
        return out


async def start_node(
    nursery: trio.Nursery,
    config: Config | None = None,
    role: Role | None = None,
    *,
    listen: bool = True,
    plain: bool = False,
) -> NodeHandle:
    """Start a node on 127.0.0.1, port 0 (or none), inside ``nursery``.

    The role defaults to a mesh peer. Returns once the node has created its
    ``join`` and accepts connections. If the node's ``run`` ever raises,
    the exception reaches ``nursery`` and fails the test: that is how "the
    node stays up" is checked.
    """
    listeners = await trio.open_tcp_listeners(0, host=HOST) if listen else []
    port = listeners[0].socket.getsockname()[1] if listeners else 0
    # A closed group's plain-text port (§8), when asked for.
    text = await trio.open_tcp_listeners(0, host=HOST) if plain else []
    handle: NodeHandle

    def sink(entry: Entry) -> None:
        handle.record(entry)

    node = Node(config or Config(name="node"), role or PeerRole(), sink)
    handle = NodeHandle(node, port, trio.CancelScope())
    handle.plain_port = text[0].socket.getsockname()[1] if text else 0

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with handle.scope:
                await node.run(listeners, text_listeners=text, task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                for listener in [*listeners, *text]:
                    await listener.aclose()
            handle.finished.set()

    await nursery.start(run)
    return handle


# --------------------------------------------------------------------------
# Clients that have joined


async def chatter(
    nursery: trio.Nursery, port: int, name: str, *, keep_msgs: bool = True
) -> WireClient:
    """A client that has said hello and join, its reader running in ``nursery``."""
    client = await WireClient.connect(port, name, keep_msgs=keep_msgs)
    await client.handshake()
    await client.send(client.event("join").raw)
    nursery.start_soon(client.read_all)
    return client


def memory_client(handle: NodeHandle, name: str, *, lockstep: bool = False) -> WireClient:
    """A client on a memory stream served by ``handle``'s node (stamped arrivals)."""
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    ours, theirs = pair()
    handle.node.add_stream(theirs, outgoing=False)
    return WireClient(ours, name, stamps=True)


async def memory_chatter(
    nursery: trio.Nursery, handle: NodeHandle, name: str, *, lockstep: bool = False
) -> WireClient:
    client = memory_client(handle, name, lockstep=lockstep)
    await client.handshake()
    await client.send(client.event("join").raw)
    nursery.start_soon(client.read_all)
    return client


class Group:
    """The nodes and clients of one test, sharing a nursery.

    :meth:`aclose` ends the nodes the way a person does, with
    :meth:`Node.stop` (a ``leave``, then a flush), and waits for each to
    finish; tests that want a crash cancel a handle's ``scope`` themselves.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.nodes: list[NodeHandle] = []
        self.clients: list[WireClient] = []
        self.secret: bytes | None = None  # a closed group's, for every node started
        self.listeners: list[trio.SocketListener] = []

    async def start(
        self, name: str, role: Role | None = None, *, plain: bool = False, **config: object
    ) -> NodeHandle:
        """A node named ``name``; ``config`` overrides :class:`Config`'s defaults.

        ``plain``: with a plain-text port (``handle.plain_port``, §8).
        """
        config.setdefault("secret", self.secret)
        node_config = Config(name, **config)  # type: ignore[arg-type]
        handle = await start_node(self.nursery, node_config, role, plain=plain)
        self.nodes.append(handle)
        return handle

    async def linked(self, *names: str) -> list[NodeHandle]:
        """Nodes named ``names``, each after the first dialling the first and
        linked to it."""
        handles = [await self.start(name) for name in names]
        for handle in handles[1:]:
            handle.dial(handles[0])
        for handle in handles[1:]:
            await handle.wait_linked(handles[0])
        return handles

    async def client(
        self, port: int, name: str = "raw", key: SigningKey | None = None
    ) -> WireClient:
        """A :class:`WireClient` connected to ``port``, closed with the group.

        ``key``: its run key, to be the same node as another client.
        """
        client = await WireClient.connect(port, name)
        if key is not None:
            client.key, client.id = key, key.node_id
        if self.secret is not None:
            await client.secure(self.secret)
        self.clients.append(client)
        return client

    async def listener(self) -> tuple[trio.SocketListener, int]:
        """A listener on 127.0.0.1 (port 0) for a node to dial; closed with the group."""
        listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
        self.listeners.append(listener)
        return listener, listener.socket.getsockname()[1]

    async def aclose(self) -> None:
        for handle in self.nodes:
            handle.node.stop()
        for handle in self.nodes:
            await handle.finished.wait()
        for client in self.clients:
            await client.aclose()
        for listener in self.listeners:
            await listener.aclose()
