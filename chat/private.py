"""Private messages, end to end (docs/PROTOCOL.md §4, "pm" events).

A node publishes a **box key** (X25519) in its signed ``join`` and ``nick``
(member ``"box"``), so it is bound to the origin's run key, which its
identity certifies. A private message is an extension event of kind
``pm``, signed by its sender like any event, whose text is encrypted to
the recipient's box key and to it alone:

    eph    = a fresh X25519 key pair, one per message
    shared = X25519(eph private, recipient box key)
    key    = HKDF-SHA256(shared, salt = eph public || recipient box key,
                         info = "trio-chat/2 pm", length = 32)
    box    = ChaCha20-Poly1305(key, nonce = 12 zero bytes,
                               text as UTF-8, aad = "trio-chat/2 pm\\n" || sender id
                                                   || "\\n" || recipient id)

A zero nonce is safe because every key is used once (the ephemeral key is
new for each message). Relays and hubs carry ``pm`` events like any other
and cannot read them. What it does not protect: who writes to whom and
when, and the length (the event's other members are clear); there is no
forward secrecy beyond the recipient's run (a node's box key lives for
one run, in memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chat.keys import b64, unb64

PM_INFO = b"trio-chat/2 pm"
ZERO_NONCE = bytes(12)


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key(shared: bytes, eph: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph + recipient, info=PM_INFO).derive(
        shared
    )


def _aad(sender: str, recipient: str) -> bytes:
    return PM_INFO + b"\n" + sender.encode("ascii") + b"\n" + recipient.encode("ascii")


class BoxKey:
    """A node's (or a hosted client's) box key for one run."""

    __slots__ = ("_private", "public")

    def __init__(self, private: X25519PrivateKey | None = None) -> None:
        self._private = private or X25519PrivateKey.generate()
        self.public = _raw(self._private.public_key())

    @classmethod
    def from_seed(cls, seed: bytes) -> BoxKey:
        """The key of 32 raw private bytes (test vectors)."""
        return cls(X25519PrivateKey.from_private_bytes(seed))

    def badge(self) -> dict[str, str]:
        """What join and nick carry: the public key, base64url."""
        return {"box": b64(self.public)}

    def open(self, sealed: Sealed, sender: str, recipient: str) -> str | None:
        """The text of ``sealed`` if it was sealed to this key, else None."""
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(sealed.eph))
            key = _key(shared, sealed.eph, self.public)
            plain = ChaCha20Poly1305(key).decrypt(ZERO_NONCE, sealed.box, _aad(sender, recipient))
            return plain.decode("utf-8")
        except (InvalidTag, ValueError, UnicodeDecodeError):
            return None


@dataclass(frozen=True, slots=True)
class Sealed:
    """An encrypted text: the ephemeral public key and the ciphertext."""

    eph: bytes
    box: bytes

    def members(self, recipient: str) -> dict[str, str]:
        """The pm event's own members (§4): to whom, and the sealed text."""
        return {"to": recipient, "eph": b64(self.eph), "box": b64(self.box)}

    @classmethod
    def of(cls, members: object) -> tuple[str, Sealed] | None:
        """The recipient and sealed text of a pm event's members, if well-formed."""
        if not isinstance(members, dict):
            return None
        to, eph, box = members.get("to"), members.get("eph"), members.get("box")
        if not (isinstance(to, str) and isinstance(eph, str) and isinstance(box, str)):
            return None
        eph_raw = unb64(eph, 32)
        size = (len(box) * 3) // 4
        box_raw = unb64(box, size) if 16 < size <= 4 * 4096 + 16 else None
        if eph_raw is None or box_raw is None:
            return None
        return to, cls(eph_raw, box_raw)


def seal(
    text: str,
    recipient_box: bytes,
    sender: str,
    recipient: str,
    eph: X25519PrivateKey | None = None,
) -> Sealed:
    """``text`` sealed to the box key ``recipient_box`` of node ``recipient``
    (``eph``: the one-time key, given only by test vectors)."""
    eph = eph or X25519PrivateKey.generate()
    eph_public = _raw(eph.public_key())
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_box))
    key = _key(shared, eph_public, recipient_box)
    box = ChaCha20Poly1305(key).encrypt(ZERO_NONCE, text.encode("utf-8"), _aad(sender, recipient))
    return Sealed(eph_public, box)
