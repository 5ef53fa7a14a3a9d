"""The protocol-2 handshake (docs/PROTOCOL.md §3), without I/O.

Both sides prove that they hold the run key their node id is derived
from, over fresh nonces from both sides, bound to both hellos::

    dialler  -> hello (its nonce)
    acceptor -> hello (its nonce), auth (its proof)
    dialler  -> auth (its proof)

A proof is the Ed25519 signature, by the prover's run key, of::

    "trio-chat/2 auth " + side + "\\n" + SHA-256(dialler's hello) + SHA-256(acceptor's hello)

where ``side`` is ``acceptor`` or ``dialler`` and each hello is the exact
bytes of its line as sent, without the line ending. A recorded handshake
replayed on a new connection fails (the other side's nonce is new); a
machine in the middle that relays one node's hello cannot make that
node's proof for a conversation it is not in.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

from chat.keys import SigningKey, verify
from chat.protocol import NONCE_BYTES, Auth, Frame, Hello, ProtocolError

MakeHello = Callable[[bytes], Hello]  # our hello, with this nonce, as it would be sent now


def proof_message(side: str, dialler_hello: bytes, acceptor_hello: bytes) -> bytes:
    """What a side signs to prove its key (``side``: "acceptor" or "dialler")."""
    return (
        b"trio-chat/2 auth "
        + side.encode("ascii")
        + b"\n"
        + hashlib.sha256(dialler_hello).digest()
        + hashlib.sha256(acceptor_hello).digest()
    )


class Handshake:
    """One side of the handshake: frames in, frames to send out.

    ``start`` gives what to send first (the dialler's hello); ``receive``
    takes each frame that arrives and answers what to send; ``done`` says
    when both proofs have passed, ``theirs`` is then the remote's hello.
    A remote that breaks the rules gets a :class:`ProtocolError`:
    ``bad_frame`` for a frame out of place, ``auth_failed`` for a proof
    that does not verify.
    """

    def __init__(self, key: SigningKey, *, outgoing: bool, make_hello: MakeHello) -> None:
        self.key = key
        self.outgoing = outgoing
        self.make_hello = make_hello
        self.ours: Hello | None = None
        self.theirs: Hello | None = None
        self.done = False

    def start(self) -> list[Frame]:
        if not self.outgoing:
            return []  # the acceptor speaks second (§3, §9)
        self.ours = self.make_hello(secrets.token_bytes(NONCE_BYTES))
        return [self.ours]

    def receive(self, frame: Frame) -> list[Frame]:
        if self.done:
            raise ProtocolError("bad_frame", "the handshake is over")
        if self.theirs is None:
            if not isinstance(frame, Hello):
                raise ProtocolError("bad_frame", "the first frame must be a hello")
            self.theirs = frame
            if self.outgoing:
                return []  # its proof comes next
            self.ours = self.make_hello(secrets.token_bytes(NONCE_BYTES))
            return [self.ours, self._prove("acceptor")]
        if not isinstance(frame, Auth):
            raise ProtocolError("bad_frame", "a hello is followed by an auth (§3)")
        side = "acceptor" if self.outgoing else "dialler"
        if not verify(self.theirs.key, frame.sig, self._message(side)):
            raise ProtocolError("auth_failed", f"the {side}'s proof does not verify")
        self.done = True
        return [self._prove("dialler")] if self.outgoing else []

    def _message(self, side: str) -> bytes:
        assert self.ours is not None and self.theirs is not None
        dialler, acceptor = (self.ours, self.theirs) if self.outgoing else (self.theirs, self.ours)
        return proof_message(side, dialler.raw, acceptor.raw)

    def _prove(self, side: str) -> Auth:
        return Auth(self.key.sign(self._message(side)))
