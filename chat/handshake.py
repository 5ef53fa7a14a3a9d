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

In a closed group (§8, :mod:`chat.group`) both sides first prove, inside
TLS, that they know the group's secret, before either says its name::

    dialler  -> group (its nonce)
    acceptor -> group (its nonce), group_auth (its proof)
    dialler  -> group_auth (its proof), hello ...   (then as above)
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

from chat.group import Binding
from chat.keys import SigningKey, verify
from chat.protocol import NONCE_BYTES, Auth, Frame, GroupAuth, GroupHello, Hello, ProtocolError

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

    def __init__(
        self,
        key: SigningKey,
        *,
        outgoing: bool,
        make_hello: MakeHello,
        group: Binding | None = None,
    ) -> None:
        self.key = key
        self.outgoing = outgoing
        self.make_hello = make_hello
        self.ours: Hello | None = None
        self.theirs: Hello | None = None
        self.done = False
        # A closed group's secret, proved first (§8); None once proved, or open.
        self.group = group
        self._nonce = secrets.token_bytes(NONCE_BYTES)
        self._their_nonce = b""

    def start(self) -> list[Frame]:
        if not self.outgoing:
            return []  # the acceptor speaks second (§3, §9)
        if self.group is not None:
            return [GroupHello(self._nonce)]
        self.ours = self.make_hello(secrets.token_bytes(NONCE_BYTES))
        return [self.ours]

    def receive(self, frame: Frame) -> list[Frame]:
        if self.done:
            raise ProtocolError("bad_frame", "the handshake is over")
        if self.group is not None:
            return self._receive_group(self.group, frame)
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

    def _receive_group(self, group: Binding, frame: Frame) -> list[Frame]:
        """The closed group's proofs (§8): nothing else until they pass."""
        if isinstance(frame, GroupHello) and not self._their_nonce:
            self._their_nonce = frame.nonce
            if self.outgoing:
                return []  # its proof comes next
            proof = group.make("acceptor", frame.nonce, self._nonce)
            return [GroupHello(self._nonce), GroupAuth(proof)]
        if not (isinstance(frame, GroupAuth) and self._their_nonce):
            raise ProtocolError(
                "auth_failed", "this group is closed: its secret is proved first (§8)"
            )
        side = "acceptor" if self.outgoing else "dialler"
        dialler, acceptor = (
            (self._nonce, self._their_nonce) if self.outgoing else (self._their_nonce, self._nonce)
        )
        if not group.check(frame.proof, side, dialler, acceptor):
            why = "the two sides do not share this group's secret (a wrong --secret-file?)"
            raise ProtocolError("auth_failed", why)
        self.group = None
        if not self.outgoing:
            return []  # its hello comes next
        self.ours = self.make_hello(secrets.token_bytes(NONCE_BYTES))
        return [GroupAuth(group.make("dialler", dialler, acceptor)), self.ours]

    def _message(self, side: str) -> bytes:
        assert self.ours is not None and self.theirs is not None
        dialler, acceptor = (self.ours, self.theirs) if self.outgoing else (self.theirs, self.ours)
        return proof_message(side, dialler.raw, acceptor.raw)

    def _prove(self, side: str) -> Auth:
        return Auth(self.key.sign(self._message(side)))
