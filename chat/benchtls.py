"""TLS for ``trio-chat bench``'s clients on a closed group (docs/PROTOCOL.md §8).

The bench reads every client's socket from one thread (chat.bench), where
a trio :class:`~trio.SSLStream` cannot go: each client's TLS is a
:class:`chat.tls.Sealer` (an SSL object over memory BIOs, with a lock),
sealed by the trio side as it sends and opened by the reader thread.
"""

from __future__ import annotations

import ssl

import trio

from chat.tls import Sealer, client_context

__all__ = ["Sealer", "client_context", "secure"]


async def secure(stream: trio.abc.Stream, context: ssl.SSLContext) -> tuple[Sealer, bytes]:
    """TLS over a bench client's stream; the node certificate's SHA-256."""
    sealer = Sealer(context, server_side=False)
    await sealer.handshake(stream)
    cert = sealer.peer_cert()
    if not cert:
        raise ConnectionError("the node presented no certificate")
    return sealer, cert
