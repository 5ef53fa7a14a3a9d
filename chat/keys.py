"""Keys, signatures and their encodings (protocol 2; docs/PROTOCOL.md §2).

Composed from pyca ``cryptography``'s primitives, nothing home-made: Ed25519
for every signature, SHA-256 for ids and fingerprints. No I/O.

- A key travels as its 32 raw bytes in base64url without padding (43
  characters), a signature as its 64 bytes the same way (86 characters).
- A node id is the first 16 bytes of SHA-256 of the run key, in lowercase
  hex (32 characters): no other key can claim it.
- A fingerprint is ``SHA256:`` and the first 12 characters of the standard
  base64 of SHA-256 of an identity key (as ssh shows keys).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

KEY_CHARS = 43  # a 32-byte key in base64url, no padding
SIG_CHARS = 86  # a 64-byte signature the same way
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# The characters that may end the canonical spelling of n bytes, by n % 3:
# the last character's bits beyond the data (4 for n % 3 == 1, 2 for
# n % 3 == 2) are zero (RFC 4648 §3.5).
_LAST = {
    rest: frozenset(c for i, c in enumerate(_ALPHABET) if i % (1 << unused) == 0)
    for rest, unused in ((0, 0), (1, 4), (2, 2))
}


def unb64(text: str, size: int) -> bytes | None:
    """The ``size`` bytes ``text`` encodes as base64url without padding, or None.

    Only the canonical spelling: the alphabet of RFC 4648 §5, the length of
    ``size`` bytes, and the unused bits of the last character zero.
    """
    if len(text) != (size * 4 + 2) // 3 or not _B64URL.fullmatch(text):
        return None
    return unb64_spelled(text.encode("ascii"), size)


def unb64_spelled(text: bytes, size: int) -> bytes | None:
    """:func:`unb64` for ``text`` already matched as ``(size * 4 + 2) // 3``
    characters of the alphabet: only the last character's unused bits are
    left to check."""
    if text and chr(text[-1]) not in _LAST[size % 3]:
        return None
    padded = text.translate(_TO_STANDARD) + b"=" * (-len(text) % 4)
    return binascii.a2b_base64(padded)


def node_id(public: bytes) -> str:
    """The node id of the run key ``public`` (32 raw bytes)."""
    return hashlib.sha256(public).digest()[:16].hex()


def fingerprint(public: bytes) -> str:
    """``SHA256:`` and 12 characters: an identity key as people compare it."""
    digest = base64.b64encode(hashlib.sha256(public).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")[:12]


def verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public``'s Ed25519 signature of ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class SigningKey:
    """An Ed25519 private key and what it signs (a run key or an identity)."""

    __slots__ = ("_private", "public")

    def __init__(self, private: Ed25519PrivateKey | None = None) -> None:
        self._private = private or Ed25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """The key of a 32-byte seed (how identity files and test vectors hold one)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @property
    def node_id(self) -> str:
        return node_id(self.public)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)
