"""TLS for closed groups (docs/PROTOCOL.md §8): certificates, contexts, first bytes.

Every connection of a closed group is TLS 1.3 (trio's :class:`trio.SSLStream`
over the standard library's :mod:`ssl`). The accepting side presents a
self-signed certificate for its run key, made at start; nobody checks it
against a CA: trust comes from the group secret's proofs, which cover the
certificate's SHA-256 as each side saw it (:mod:`chat.group`), and from
the protocol-2 proofs. (The standard library cannot accept an unknown
self-signed certificate from the *dialling* side during the TLS handshake,
so only the acceptor presents one; binding the proofs to it is what
defeats a machine in the middle, §8.)

An accepting node tells TLS from the rest by the first byte, 0x16 (a TLS
handshake record): a node of a closed group answers anything else with
``auth_failed`` in the remote's own dialect; an open one answers TLS with
``unsupported_protocol`` (:mod:`chat.framing`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import ssl
import tempfile
from dataclasses import dataclass

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from chat.group import Binding, proof_key
from chat.keys import SigningKey
from chat.protocol import ProtocolError

TLS_RECORD = 0x16  # the first byte of a TLS handshake record
READ_SIZE = 65536
SNIFF_WAIT = 1.0  # seconds an accepted connection may take to send its first byte


def closed_group() -> ProtocolError:
    """What a closed group answers to anything but a member's TLS (§8)."""
    return ProtocolError(
        "auth_failed",
        "this group is closed: members connect with TLS and the group's secret"
        " (--secret-file or TRIO_CHAT_SECRET)",
    )


class TlsFailed(Exception):
    """A TLS handshake that did not complete; the message says why, in a line."""


@dataclass(frozen=True, slots=True)
class Tls:
    """A closed group's TLS: both contexts, our certificate's hash, the proof key."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    cert: bytes  # SHA-256 of our certificate, DER
    key: bytes  # the group's proof key (chat.group.proof_key)

    def binding(self, cert: bytes | None = None) -> Binding:
        """What a connection's proofs are made with: the acceptor's
        certificate hash, ours when we accepted."""
        return Binding(self.key, self.cert if cert is None else cert)


def certificate(run: SigningKey) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``run`` (PEM) and the key (PEM, PKCS 8)."""
    private = Ed25519PrivateKey.from_private_bytes(run.seed())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, run.node_id)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(private, None)
    )
    key = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key


def client_context() -> ssl.SSLContext:
    """A dialler's TLS 1.3 context: no certificate of its own, none checked:
    trust comes from the proofs, not a CA (§8)."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    client.check_hostname = False  # (before verify_mode: ssl insists)
    client.verify_mode = ssl.CERT_NONE
    return client


def make_tls(run: SigningKey, secret: bytes) -> Tls:
    """The TLS of a closed group for a node whose run key is ``run``."""
    cert_pem, key_pem = certificate(run)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.num_tickets = 0  # nothing to resume: every connection proves itself
    # load_cert_chain reads files only: a private directory, gone at once.
    with tempfile.TemporaryDirectory(prefix="trio-chat-tls-") as where:
        cert_path, key_path = os.path.join(where, "cert.pem"), os.path.join(where, "key.pem")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        server.load_cert_chain(cert_path, key_path)
    client = client_context()
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii"))
    return Tls(server, client, hashlib.sha256(der).digest(), proof_key(secret))


class Sealer:
    """TLS on a connection, as a record layer: bytes in, bytes out.

    An :class:`ssl.SSLObject` over memory BIOs. A connection keeps reading
    and writing its socket directly (``os.read``, ``writev``: chat.outbox)
    and seals what it sends and opens what it reads here; with trio's
    :class:`~trio.SSLStream` every small write of a hub's fan-out went
    through a lock, a task and the stream layers (docs/benchmarks.md,
    closed W2). A node is one thread: no lock here, whose taking and
    release were a third of a seal (0.35 of 1.2 µs, paid for each copy of
    a hub's fan-out). The bench, whose reader thread shares a client's TLS
    with its senders, uses :class:`chat.benchclient.SharedSealer`.
    """

    def __init__(self, context: ssl.SSLContext, *, server_side: bool) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        self.ended = False  # the other side's close_notify has arrived: its end

    async def handshake(self, stream: trio.abc.Stream, prefix: bytes = b"") -> None:
        """The TLS handshake over ``stream`` (``prefix``: bytes already read)."""
        if prefix:
            self._incoming.write(prefix)
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out := self._outgoing.read():
                    await stream.send_all(out)
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    raise trio.BrokenResourceError("closed during the TLS handshake") from None
                self._incoming.write(data)
        if out := self._outgoing.read():
            await stream.send_all(out)

    def version(self) -> str | None:
        return self._tls.version()

    def peer_cert(self) -> bytes:
        """SHA-256 of the certificate the other side presented (b"" if none)."""
        der = self._tls.getpeercert(binary_form=True)
        return hashlib.sha256(der).digest() if der else b""

    def seal(self, data: bytes) -> bytes:
        """What to write to the socket to send ``data``."""
        # A memory BIO takes all of it in one write; the loop is a guard.
        taken = self._tls.write(data) if data else 0
        while taken < len(data):
            taken += self._tls.write(data[taken:])
        return self._outgoing.read()

    def open(self, data: bytes) -> bytes:
        """What ``data`` read from the socket says (possibly nothing yet).
        After the other side's close_notify, nothing more: :attr:`ended`."""
        if self.ended:
            return b""
        self._incoming.write(data)
        out = []
        while True:
            try:
                chunk = self._tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS: {exc.reason or exc}") from exc
            if not chunk:  # close_notify (ssl reads it as b"")
                self.ended = True
                break
            out.append(chunk)
            if not self._incoming.pending and not self._tls.pending():
                break  # all read: spare ssl the SSLWantReadError (~1 µs)
        return b"".join(out)  # (a lone chunk comes back itself, uncopied)

    def goodbye(self) -> bytes:
        """The close_notify to send last, so the other side sees a clean end."""
        with contextlib.suppress(ssl.SSLError):  # (its answer is not waited for)
            self._tls.unwrap()
        return self._outgoing.read()


class PrefixStream(trio.abc.Stream):
    """A stream whose first bytes were already read: they come first again."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self.inner = inner
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return bytes(await self.inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _reason(exc: BaseException) -> str:
    cause = exc if isinstance(exc, ssl.SSLError) else (exc.__cause__ or exc)
    if isinstance(cause, ssl.SSLError):
        if "WRONG_VERSION_NUMBER" in str(cause) or "record layer failure" in str(cause):
            return "it answered in plain text, not TLS: an open group (no secret)?"
        return f"TLS error: {cause.reason or cause}"
    if isinstance(exc, trio.TooSlowError):
        return "the TLS handshake did not complete in time"
    return "closed during the TLS handshake: not a member of this closed group?"


async def accept(
    stream: trio.abc.Stream, tls: Tls, deadline: float
) -> tuple[trio.abc.Stream, Sealer | None, ProtocolError | None]:
    """An accepted connection of a closed group: the stream, and its TLS
    once the handshake is done; or the stream as it came, with the refusal
    to give it.

    Raises :class:`TlsFailed` when a TLS handshake fails or ``deadline``
    (trio time) passes.
    """
    data = b""
    with trio.move_on_after(SNIFF_WAIT):
        try:
            data = bytes(await stream.receive_some(READ_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TlsFailed("closed before saying anything") from None
    if not data or data[0] != TLS_RECORD:
        # Plain TCP (a node of an open group, netcat), or silence: told why
        # in its own dialect, by the connection (links.py).
        return PrefixStream(stream, data), None, closed_group()
    sealer = Sealer(tls.server, server_side=True)
    try:
        with trio.fail_at(deadline):
            await sealer.handshake(stream, data)
    except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError, OSError) as exc:
        raise TlsFailed(_reason(exc)) from None
    return stream, sealer, None


async def dial(stream: trio.abc.Stream, tls: Tls, deadline: float) -> tuple[Sealer, bytes]:
    """TLS over a dialled stream; the SHA-256 of the certificate the other
    side presented. :class:`TlsFailed` if the handshake fails."""
    sealer = Sealer(tls.client, server_side=False)
    try:
        with trio.fail_at(deadline):
            await sealer.handshake(stream)
    except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError, OSError) as exc:
        raise TlsFailed(_reason(exc)) from None
    cert = sealer.peer_cert()
    if not cert:
        raise TlsFailed("the other side presented no certificate")
    return sealer, cert
