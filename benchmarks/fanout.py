"""What one copy of a closed hub's fan-out costs: seal and write, 199 times.

A message to 199 members of a closed group is sealed and written once per
member (chat.outbox). This measures that loop alone, through the hub's own
``Outbox`` and ``Flusher``, on 199 loopback TCP connections whose far ends
another process reads (as members do, on the other core). It compares
sealing every copy before writing any (what ``Flusher.flush_now`` does, up
to ``EARLY_SEAL`` bytes) with sealing each just before its write, and
times a seal alone and a write alone, the two parts of a copy.

    python benchmarks/fanout.py

Figures are microseconds per copy, the median of 400 fan-outs; the machine
is shared, so compare the lines of one run, not runs.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Callable

import trio
import trio.testing

from chat import outbox as outbox_module
from chat.keys import SigningKey
from chat.outbox import Flusher, Outbox
from chat.tls import Sealer, client_context, make_tls

MEMBERS = 199
ROUNDS = 400
FRAME = b'{"type":"event","text":"' + b"a" * 300 + b'"}\n'


async def _hub_sealers(count: int) -> list[Sealer]:
    """The hub's side of ``count`` TLS sessions, each through its handshake."""
    tls = make_tls(SigningKey(), b"the fan-out benchmark's secret!!")
    sealers = []
    for _ in range(count):
        near, far = trio.testing.memory_stream_pair()
        server = Sealer(tls.server, server_side=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handshake, near)
            await Sealer(client_context(), server_side=False).handshake(far)
        sealers.append(server)
    return sealers


def _connections(count: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """``count`` loopback TCP connections: the hub's ends, the members' ends."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=count)
    hub, members = [], []
    for _ in range(count):
        member = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        for sock in (member, accepted):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
        hub.append(accepted)
        members.append(member)
    listener.close()
    return hub, members


def _read_forever(members: list[socket.socket]) -> None:
    """The members: one process reading every connection as data comes."""
    poller = select.epoll()
    for member in members:
        poller.register(member.fileno(), select.EPOLLIN)
    while True:
        for fd, _ in poller.poll():
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 65536)


async def _per_copy(fan_out: Callable[[], object]) -> float:
    """The median of ROUNDS fan-outs, in µs a copy; 2 ms apart, as messages."""
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fan_out()
        times.append((time.perf_counter() - start) / MEMBERS * 1e6)
        await trio.sleep(0.002)
    return sorted(times)[len(times) // 2]


async def measure(sealers: list[Sealer], hub: list[socket.socket]) -> dict[str, float]:
    flusher = Flusher(sealing=True)
    outboxes = [
        Outbox(1024, 1 << 21, fd=sock.fileno(), flusher=flusher, sealer=sealer)
        for sock, sealer in zip(hub, sealers, strict=True)
    ]

    def through_outboxes() -> None:
        for outbox in outboxes:
            outbox.put(FRAME)
        flusher.flush_now()
        assert not any(outbox.busy for outbox in outboxes), "a socket was full"

    fds = [sock.fileno() for sock in hub]
    record = sealers[0].seal(FRAME)
    figures = {"sealed first, then written (the hub)": await _per_copy(through_outboxes)}
    early = outbox_module.EARLY_SEAL
    outbox_module.EARLY_SEAL = 0
    figures["each sealed just before its write"] = await _per_copy(through_outboxes)
    outbox_module.EARLY_SEAL = early
    figures["a seal alone"] = await _per_copy(lambda: [s.seal(FRAME) for s in sealers])
    figures["a write alone (one record to all)"] = await _per_copy(
        lambda: [os.write(fd, record) for fd in fds]
    )
    return figures


def main() -> None:
    sealers = trio.run(_hub_sealers, MEMBERS)
    hub, members = _connections(MEMBERS)
    reader = os.fork()
    if reader == 0:  # (killed when measured)
        _read_forever(members)
        os._exit(0)
    try:
        figures = trio.run(measure, sealers, hub)
    finally:
        os.kill(reader, signal.SIGKILL)
        os.waitpid(reader, 0)
    for what, micros in figures.items():
        print(f"{micros:6.2f} µs a copy: {what}")


if __name__ == "__main__":
    main()
