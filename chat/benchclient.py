"""A ``trio-chat bench`` client: its socket, its wire form, and its TLS on
a closed group (docs/PROTOCOL.md §8).

The bench reads every client's socket from one thread (chat.benchrecv),
where a trio :class:`~trio.SSLStream` cannot go: each client's TLS is a
:class:`SharedSealer` (an SSL object over memory BIOs, with a lock),
sealed by the trio side as it sends and opened by the reader thread.
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass, field

import trio

from chat.benchrecv import READ_SIZE
from chat.keys import SigningKey
from chat.tls import Sealer, client_context

__all__ = ["Client", "Sealer", "SharedSealer", "client_context", "secure"]


@dataclass(eq=False)
class Client:
    """One connection of the load, as the bench drives it."""

    index: int
    stream: trio.SocketStream
    key: SigningKey = field(default_factory=SigningKey)
    received: int = 0
    sent: int = 0
    pending: bytes = b""  # read past the node's handshake
    frames: list[bytes] = field(default_factory=list)  # its messages, signed before the run
    tls: Sealer | None = None  # a closed group's TLS (a SharedSealer)

    def wire(self, data: bytes) -> bytes:
        """``data`` as it goes on the wire: sealed under TLS."""
        return self.tls.seal(data) if self.tls else data

    async def send(self, data: bytes) -> None:
        await self.write(self.wire(data))

    async def write(self, wire: bytes) -> None:
        """Hand ``wire`` (sealed already under TLS) to the kernel: at once as
        far as it takes it, the rest when the socket lets it."""
        try:
            sent = os.write(self.stream.socket.fileno(), wire)
        except BlockingIOError:
            sent = 0
        if sent < len(wire):
            await self.stream.send_all(wire[sent:])

    async def receive(self) -> bytes:
        """Plain bytes from the node; b"" at its end."""
        while True:
            data = bytes(await self.stream.receive_some(READ_SIZE))
            if not data or self.tls is None:
                return data
            if opened := self.tls.open(data):
                return opened


class SharedSealer(Sealer):
    """A :class:`~chat.tls.Sealer` that two threads may use: the senders
    (trio) seal, the reader thread opens and answers pings."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool) -> None:
        super().__init__(context, server_side=server_side)
        self._lock = threading.Lock()

    def seal(self, data: bytes) -> bytes:
        with self._lock:
            return super().seal(data)

    def open(self, data: bytes) -> bytes:
        with self._lock:
            return super().open(data)

    def goodbye(self) -> bytes:
        with self._lock:
            return super().goodbye()


async def secure(stream: trio.abc.Stream, context: ssl.SSLContext) -> tuple[Sealer, bytes]:
    """TLS over a bench client's stream; the node certificate's SHA-256."""
    sealer = SharedSealer(context, server_side=False)
    await sealer.handshake(stream)
    cert = sealer.peer_cert()
    if not cert:
        raise ConnectionError("the node presented no certificate")
    return sealer, cert
