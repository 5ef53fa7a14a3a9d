"""The receiving side of ``trio-chat bench``: every client's reads, in one thread.

A read costs a few microseconds here against some fifteen in a trio task
of its own. Receivers never decode JSON: they count a run-unique marker
in each read with ``bytes.count`` and decode one line per read, for
latency, from the message number its text carries.

**When a message arrived.** One process reading for 200 clients reads
them one after another: the last of a message's 200 copies is read some
200 reads after the first, however early it came. 200 real clients each
read their own copy as soon as it comes. So a message's latency is taken
at its *arrival*, the time the kernel stamped on the segment that brought
it to the client's socket (``SO_TIMESTAMPNS``, Linux), not at the time
this thread got round to reading it. Both are reported: ``latency_ms``
(arrival) and ``read_latency_ms`` (read). Where the kernel gives no stamp,
arrival is the read time, and the result says how many samples had one.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING

import trio

from chat.parse import parse_frame
from chat.protocol import Ping, Pong, ProtocolError, encode

if TYPE_CHECKING:
    from chat.benchclient import Client

READ_SIZE = 65536
PING_SPAN = 256  # bytes at the start of a read searched for a ping (Receiver.run)
# Linux's SO_TIMESTAMPNS (asm-generic/socket.h; the control message has the
# same number): Python's socket module does not name it.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")  # struct timespec, in the control message


def stamp_arrivals(sock: trio.socket.SocketType) -> None:
    """Have the kernel stamp what arrives on ``sock`` from now on (Linux):
    set when the client connects, as a segment that came earlier has none."""
    if sys.platform == "linux":
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


class Receiver:
    """Counts and times what the readers receive, until told to stop."""

    def __init__(self, marker: bytes, sent_at: list[float]) -> None:
        self.marker = marker  # opens every message text of this run
        self.sent_at = sent_at  # message number -> when it was sent (monotonic)
        self.latencies: list[float] = []  # arrival - sent, seconds, one per read
        self.read_latencies: list[float] = []  # read - sent
        self.stamped = 0  # samples whose arrival is the kernel's stamp
        self.last_receive = 0.0  # (monotonic) the last read that had a message
        # The kernel stamps in wall-clock time; sends are timed on the
        # monotonic clock: the difference, taken once (a run lasts seconds).
        self._wall = time.time() - time.monotonic()

    def run(self, readers: list[Client], stop: threading.Event) -> None:
        """Read every reader's socket on epoll until ``stop``."""
        marker = self.marker
        keep = len(marker) - 1
        poller = select.epoll()
        clients: dict[int, tuple[Client, socket.socket]] = {}
        tails: dict[int, bytes] = {}
        for client in readers:
            fd = client.stream.socket.fileno()
            # A second socket object on the same descriptor, for recvmsg;
            # detached at the end, so the client's own stream closes it.
            view = socket.socket(fileno=fd)
            poller.register(fd, select.EPOLLIN)
            clients[fd] = (client, view)
            tails[fd] = client.pending
        try:
            while not stop.is_set():
                for fd, _ in poller.poll(0.05):
                    client, view = clients[fd]
                    try:
                        data, ancillary, _, _ = view.recvmsg(READ_SIZE, 64)
                        read_at = time.monotonic()
                        if data and client.tls is not None:
                            data = client.tls.open(data)
                            if not data:
                                continue  # part of a TLS record: more to come
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        poller.unregister(fd)
                        continue
                    # Markers within this read, and one cut by the last read
                    # (it starts in that read's tail): no copy of the read.
                    tail = tails[fd]
                    found = data.count(marker) + (tail + data[:keep]).count(marker)
                    if found:
                        client.received += found
                        self.last_receive = read_at
                        self._sample(data, read_at, ancillary)
                    # The node pings a link only after saying nothing to it
                    # for a while (chat.timers), so a ping opens the read it
                    # comes in: no need to search a read full of messages.
                    if b'"type":"ping"' in (data if not found else data[:PING_SPAN]):
                        _pong(fd, tail + data, client)
                    tails[fd] = (tail + data[-keep:])[-keep:]
        finally:
            poller.close()
            for _, view in clients.values():
                view.detach()

    def _sample(self, buf: bytes, read_at: float, ancillary: list[tuple[int, int, bytes]]) -> None:
        """One sample per read: the last marker's message and its send time."""
        start = buf.rfind(self.marker) + len(self.marker)
        end = buf.find(b'"', start)
        if end <= 0:
            return
        try:
            sent = self.sent_at[int(buf[start:end])]
        except (ValueError, IndexError):
            return
        if not sent:
            return
        arrived = read_at
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack(data[: _TIMESPEC.size])
                arrived = min(read_at, seconds + nanoseconds / 1e9 - self._wall)
                self.stamped += 1
        self.latencies.append(arrived - sent)
        self.read_latencies.append(read_at - sent)


def _pong(fd: int, buf: bytes, client: Client) -> None:
    """Answer the node's keepalive, or an idle client is dropped at 45 s."""
    for line in buf.split(b"\n"):
        if line.startswith(b'{"type":"ping"'):
            try:
                frame = parse_frame(line)
            except ProtocolError:
                continue  # cut by the read: the next read has it whole
            if isinstance(frame, Ping):
                pong = encode(Pong(frame.nonce))
                os.write(fd, client.wire(pong))
