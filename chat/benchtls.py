"""TLS for ``trio-chat bench``'s clients on a closed group (docs/PROTOCOL.md §8).

The bench reads every client's socket from one thread (chat.bench), where
a trio :class:`~trio.SSLStream` cannot go: each client's TLS is a
:class:`SharedSealer` (an SSL object over memory BIOs, with a lock),
sealed by the trio side as it sends and opened by the reader thread.
"""

from __future__ import annotations

import ssl
import threading

import trio

from chat.tls import Sealer, client_context

__all__ = ["Sealer", "SharedSealer", "client_context", "secure"]


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
