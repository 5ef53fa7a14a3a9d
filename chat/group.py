"""Closed groups (docs/PROTOCOL.md §8): the group secret and its proofs.

A closed group shares a secret. Every connection is TLS 1.3, and before any
other frame each side proves that it knows the secret, bound to this TLS
session: an HMAC-SHA256 keyed with a key derived from the secret (HKDF),
over both sides' fresh nonces and the SHA-256 of the certificate the
accepting side presented, as each side saw it (the idea of RFC 5929's
``tls-server-end-point``). A machine in the middle that terminates TLS
on both sides shows each side a certificate of its own, so the proofs it
could relay cover the wrong certificate and fail. No I/O but reading and
writing the secret file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_SECRET = 16  # bytes of a secret, at least: a proof can be attacked offline
SECRET_ENV = "TRIO_CHAT_SECRET"
KEY_SALT = b"trio-chat/2 group"  # HKDF salt and info (§8): fixed and public
KEY_INFO = b"proof key"


class SecretError(Exception):
    """A secret that cannot be used; the message says how to fix it."""


def secret_of(text: str, where: str) -> bytes:
    """The secret a file or the environment holds: its text, surrounding
    whitespace removed, as UTF-8."""
    secret = text.strip().encode("utf-8", "surrogateescape")
    if len(secret) < MIN_SECRET:
        raise SecretError(
            f"the secret in {where} is too short ({len(secret)} bytes, at least {MIN_SECRET});"
            " make one with: trio-chat secret new PATH"
        )
    return secret


def read_secret(path: Path) -> bytes:
    """The secret in ``path``; refused when others can read the file."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretError(
                f"{path} can be read by others (mode {stat.filemode(mode)}): a group secret"
                f" must not be. Fix it with: chmod 600 {path}"
            )
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise SecretError(f"cannot read {path}: {exc.strerror or exc}") from None
    return secret_of(text, str(path))


def load_secret(path: Path | None) -> bytes | None:
    """The group secret: the file at ``path``, else ``$TRIO_CHAT_SECRET``,
    else None (an open group)."""
    if path is not None:
        return read_secret(path)
    text = os.environ.get(SECRET_ENV)
    return secret_of(text, SECRET_ENV) if text else None


def new_secret(path: Path) -> None:
    """Write a new random secret (256 bits, base64url) to ``path``, mode 0600.

    An existing file is never overwritten.
    """
    text = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=") + b"\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SecretError(f"{path} exists already: trio-chat never overwrites a secret") from None
    except OSError as exc:
        raise SecretError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(text)


def proof_key(secret: bytes) -> bytes:
    """The key the proofs are made with (HKDF-SHA256, fixed salt and info)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=KEY_SALT, info=KEY_INFO).derive(secret)


def proof(key: bytes, side: str, dialler_nonce: bytes, acceptor_nonce: bytes, cert: bytes) -> bytes:
    """A side's proof that it knows the secret, for this TLS session (§8).

    ``cert`` is the SHA-256 of the acceptor's certificate (DER) as this side
    saw it; ``side`` is ``acceptor`` or ``dialler``.
    """
    message = (
        b"trio-chat/2 group " + side.encode("ascii") + b"\n" + dialler_nonce + acceptor_nonce + cert
    )
    return hmac.new(key, message, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Binding:
    """What one connection's proofs are made with: the group's proof key and
    the SHA-256 of the acceptor's certificate, as this side saw it."""

    key: bytes
    cert: bytes

    def make(self, side: str, dialler_nonce: bytes, acceptor_nonce: bytes) -> bytes:
        return proof(self.key, side, dialler_nonce, acceptor_nonce, self.cert)

    def check(self, sig: bytes, side: str, dialler_nonce: bytes, acceptor_nonce: bytes) -> bool:
        return hmac.compare_digest(sig, self.make(side, dialler_nonce, acceptor_nonce))
