"""The trio-chat wire protocol, version 2: frames, their bytes, signed events.

Nothing here touches a socket or an event loop (sans-IO, after h11):
frames are values, :func:`encode` gives their bytes, :mod:`chat.parse`
turns bytes back into frames. Section numbers (§) refer to
``docs/PROTOCOL.md``, which is the contract.

Two kinds of failure are kept apart, as h11 does: a :class:`ProtocolError`
means the *remote* broke the rules and carries the ``error`` code to send
back; a bug of ours is an ordinary exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, TypeAlias

from chat.keys import SigningKey, b64
from chat.names import MAX_NAME, MAX_TEXT, name_problem, text_problem

__all__ = ["MAX_NAME", "MAX_TEXT", "name_problem", "text_problem"]

PROTO: Final = 2
PROTOS: Final = (2,)  # the versions this node speaks
MAX_FRAME: Final = 65536  # bytes of one frame, newline included (§1)
# Bytes of one event, with a single "\n" ending: the largest legitimate event
# (4096 characters of text at up to 6 bytes each, ESC written \u001b, and the
# fixed fields) with room to spare. An event past it is padding that would
# be stored and relayed to everyone: refused as frame_too_long.
MAX_EVENT: Final = 32768
MAX_HAVE: Final = 1000  # origins listed in a hello's ``have`` (§3)
MAX_ERROR_CODE: Final = 40  # characters of an error's code as received (longer: cut)
MAX_ERROR_MESSAGE: Final = 200  # characters of an error's message as received
# The largest seq accepted: JSON's safe integers. Unbounded seqs would let
# a remote inflate every later hello's ``have`` past MAX_FRAME.
MAX_SEQ: Final = 2**53 - 1
NONCE_BYTES: Final = 32

# What an event's signature covers begins with this (§4): a signature made
# for an event can never pass for one made in a handshake, and back.
EVENT_CONTEXT: Final = b"trio-chat/2 event\n"
SIG_TAIL: Final = 8 + 86 + 2  # ',"sig":"' + the signature + '"}'

EVENT_TYPES: Final = frozenset({"join", "msg", "nick", "leave", "lost"})
LINK_TYPES: Final = frozenset(
    {"hello", "auth", "group", "group_auth", "peers", "ping", "pong", "caught_up", "error"}
)

EventKind: TypeAlias = Literal["join", "msg", "nick", "leave", "lost"]
RoleName: TypeAlias = Literal["peer", "hub"]


class ProtocolError(Exception):
    """The remote broke the protocol; ``code`` is the ``error`` code to send."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --------------------------------------------------------------------------
# Frames. Frozen and slotted: they are values, shared between connections.


@dataclass(frozen=True, slots=True)
class Hello:
    """The first frame each side sends (§3). ``raw``: its bytes as sent or
    received, without the line ending: the handshake's proofs cover them."""

    node: str
    key: bytes  # the run key, 32 bytes: node == node_id(key)
    nonce: bytes  # 32 fresh random bytes
    name: str
    role: RoleName
    listen: int | None
    have: Mapping[str, int]
    proto: int = PROTO
    raw: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Auth:
    """A side's proof that it holds its run key, over both hellos (§3)."""

    sig: bytes


@dataclass(frozen=True, slots=True)
class GroupHello:
    """A closed group's first frame each way, inside TLS: a fresh nonce (§8)."""

    nonce: bytes


@dataclass(frozen=True, slots=True)
class GroupAuth:
    """A side's proof that it knows the group's secret, for this session (§8)."""

    proof: bytes


# Not frozen, though nothing changes one once made: a frozen dataclass's
# __init__ sets each field through object.__setattr__, 1.1 against 0.2 µs
# here, and a hub makes one for every event it relays.
@dataclass(slots=True)
class Event:
    """A flooded event (§4), with the exact bytes it travels as.

    ``raw`` is the frame as received (line ending normalised to ``\\n``) or
    as first encoded: forwarding sends these bytes, never a re-encoding
    (§5), and the signature covers them. ``extra`` holds every member
    beyond the common ones (identity and voucher members of ``join`` and
    ``nick``, and all of an event kind this node does not know, §4).
    """

    kind: str
    origin: str
    seq: int
    ts: float
    name: str
    text: str = ""  # msg only
    node: str = ""  # lost only: the node that vanished
    pub: bytes = b""  # the origin's run key (the member "key")
    sig: bytes = b""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def key(self) -> tuple[str, int]:
        """What identifies it: (origin, seq) (§5)."""
        return (self.origin, self.seq)

    @property
    def known(self) -> bool:
        """A kind this node shows; others are kept and forwarded only (§4)."""
        return self.kind in EVENT_TYPES

    def signed(self) -> bytes:
        """The bytes the signature covers (§4): the context, then the frame
        up to its final ``,"sig":...`` member."""
        return EVENT_CONTEXT + self.raw.rstrip(b"\n")[:-SIG_TAIL]

    def fields(self) -> dict[str, Any]:
        """The event's members, as a JSON-ready dict (for ``--json``)."""
        out: dict[str, Any] = {
            "type": self.kind,
            "origin": self.origin,
            "seq": self.seq,
            "ts": self.ts,
            "name": self.name,
        }
        if self.kind == "msg":
            out["text"] = self.text
        elif self.kind == "lost":
            out["node"] = self.node
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class PeerInfo:
    node: str
    name: str
    addr: str  # "ip:port", IPv6 in brackets (§7)


@dataclass(frozen=True, slots=True)
class Peers:
    peers: tuple[PeerInfo, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int | str


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int | str


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """The catch-up after a handshake is all sent: what follows is live (§6)."""


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A link-local frame of a type this version does not know: ignored (§1)."""

    type: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """An event already seen, recognised without parsing it (chat.framing)."""

    origin: str
    seq: int


@dataclass(frozen=True, slots=True)
class TextLine:
    """One line from a plain-text client (§9), its line end stripped."""

    text: str


Frame: TypeAlias = (
    Hello
    | Auth
    | GroupHello
    | GroupAuth
    | Event
    | Peers
    | Ping
    | Pong
    | CaughtUp
    | Error
    | Unknown
    | Duplicate
)


# --------------------------------------------------------------------------
# Encoding


def dumps(obj: Mapping[str, Any]) -> bytes:
    """A frame's bytes: compact JSON in UTF-8, then ``\\n`` (§1).

    ``ensure_ascii=False`` keeps text readable on the wire; json escapes
    every control character, so a frame never holds a raw newline.
    """
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def encode(frame: Frame) -> bytes:
    """The bytes of ``frame`` on the wire, ``\\n`` included."""
    if isinstance(frame, Event):
        if not frame.raw:
            raise ValueError("an event is made with make_event, which signs it")
        return frame.raw
    if isinstance(frame, Hello):
        return frame.raw + b"\n" if frame.raw else hello_bytes(frame) + b"\n"
    if isinstance(frame, Auth):
        return dumps({"type": "auth", "sig": b64(frame.sig)})
    if isinstance(frame, GroupHello):
        return dumps({"type": "group", "nonce": b64(frame.nonce)})
    if isinstance(frame, GroupAuth):
        return dumps({"type": "group_auth", "proof": b64(frame.proof)})
    if isinstance(frame, Peers):
        entries = [{"node": p.node, "name": p.name, "addr": p.addr} for p in frame.peers]
        return dumps({"type": "peers", "peers": entries})
    if isinstance(frame, Ping):
        return dumps({"type": "ping", "nonce": frame.nonce})
    if isinstance(frame, Pong):
        return dumps({"type": "pong", "nonce": frame.nonce})
    if isinstance(frame, CaughtUp):
        return dumps({"type": "caught_up"})
    if isinstance(frame, Error):
        return dumps({"type": "error", "code": frame.code, "message": frame.message})
    raise TypeError(f"cannot encode {frame!r}")


def hello_bytes(hello: Hello) -> bytes:
    """A hello's bytes without the line ending (what the proofs cover)."""
    obj = {
        "type": "hello",
        "proto": hello.proto,
        "node": hello.node,
        "key": b64(hello.key),
        "nonce": b64(hello.nonce),
        "name": hello.name,
        "role": hello.role,
        "listen": hello.listen,
        "have": dict(hello.have),
    }
    return dumps(obj)[:-1]


def make_hello(  # noqa: PLR0917 - the hello's members, in their order
    key: SigningKey,
    nonce: bytes,
    name: str,
    role: RoleName,
    listen: int | None,
    have: Mapping[str, int],
) -> Hello:
    """This node's hello, with its bytes encoded once (the proofs cover them)."""
    hello = Hello(key.node_id, key.public, nonce, name, role, listen, dict(have))
    return replace(hello, raw=hello_bytes(hello))


def make_event(
    kind: str,
    key: SigningKey,
    seq: int,
    ts: float,
    name: str,
    *,
    text: str = "",
    node: str = "",
    extra: Mapping[str, Any] | None = None,
) -> Event:
    """A new event of ``key``'s origin, encoded and signed once, here (§4, §5).

    The members come in this order: ``type``, ``origin``, ``seq``, ``ts``,
    ``name``, then ``text`` (msg) or ``node`` (lost), then ``extra``, then
    ``key``; the signature is appended as the last member, ``sig``.
    """
    origin = key.node_id
    body: dict[str, Any] = {"type": kind, "origin": origin, "seq": seq, "ts": ts, "name": name}
    if kind == "msg":
        body["text"] = text
    elif kind == "lost":
        body["node"] = node
    body.update(extra or {})
    body["key"] = b64(key.public)
    prefix = dumps(body)[:-2]  # without its closing "}" and "\n"
    sig = key.sign(EVENT_CONTEXT + prefix)
    raw = prefix + b',"sig":"' + b64(sig).encode() + b'"}\n'
    return Event(kind, origin, seq, ts, name, text, node, key.public, sig, dict(extra or {}), raw)
