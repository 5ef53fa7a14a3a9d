"""TLS for ``trio-chat bench``'s clients on a closed group (docs/PROTOCOL.md §8).

The bench reads every client's socket from one thread (chat.bench), where
a trio :class:`~trio.SSLStream` cannot go. So each client's TLS is an
:class:`ssl.SSLObject` over memory BIOs: the trio side seals what it sends,
the reader thread opens what it reads, one lock between them (an SSL
object is not to be used from two threads at once).
"""

from __future__ import annotations

import hashlib
import ssl
import threading

import trio

READ_SIZE = 65536


def client_context() -> ssl.SSLContext:
    """A dialler's TLS 1.3 context: no certificate of its own, none checked (§8)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Sealed:
    """One client's TLS over its raw socket, shared by a trio task and a thread."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=False)
        self._lock = threading.Lock()

    async def handshake(self, stream: trio.abc.Stream) -> bytes:
        """The TLS handshake over ``stream``; SHA-256 of the node's certificate."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out := self._outgoing.read():
                    await stream.send_all(out)
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    raise ConnectionError("closed during the TLS handshake") from None
                self._incoming.write(data)
        if out := self._outgoing.read():
            await stream.send_all(out)
        der = self._tls.getpeercert(binary_form=True)
        if not der:
            raise ConnectionError("the node presented no certificate")
        return hashlib.sha256(der).digest()

    def seal(self, data: bytes) -> bytes:
        """What to write to the socket to send ``data``."""
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[self._tls.write(view) :]
            return self._outgoing.read()

    def open(self, data: bytes) -> bytes:
        """What ``data`` read from the socket says (possibly nothing yet)."""
        out = []
        with self._lock:
            self._incoming.write(data)
            while True:
                try:
                    out.append(self._tls.read(READ_SIZE))
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
        return b"".join(out)
