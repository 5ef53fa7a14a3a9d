"""The trio-chat wire protocol, version 1, as pure functions on bytes.

Nothing here touches a socket or an event loop (sans-IO, after h11): the
decoder takes bytes in and hands frames out, ``encode`` turns frames into
bytes. Section numbers (§) refer to ``docs/PROTOCOL.md``.

Two kinds of failure are kept apart, as h11 does: a :class:`ProtocolError`
means the *remote* broke the rules and carries the ``error`` code to send
back; a bug of ours is an ordinary exception.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

from chat.addr import split_addr

PROTO: Final = 1
MAX_FRAME: Final = 65536  # bytes of one frame, newline included (§1)
# Bytes of one event, newline included: the largest legitimate event (4096
# characters of text at up to 6 bytes each, ESC written \u001b, and the
# fixed fields) with room to spare. An event past it is padding that would
# be stored and relayed to everyone: refused as frame_too_long.
MAX_EVENT: Final = 32768
MAX_TEXT: Final = 4096  # characters of a message text (§4)
MAX_NAME: Final = 32  # characters of a display name (§2)
MAX_HAVE: Final = 1000  # origins listed in a hello's ``have`` (§3)
MAX_ERROR_CODE: Final = 40  # characters of an error's code as received (longer: cut)
MAX_ERROR_MESSAGE: Final = 200  # characters of an error's message as received
# The largest seq accepted: JSON's safe integers. Unbounded seqs would let
# a remote inflate every later hello's ``have`` past MAX_FRAME.
MAX_SEQ: Final = 2**53 - 1

EVENT_TYPES: Final = frozenset({"join", "msg", "nick", "leave", "lost"})

EventKind: TypeAlias = Literal["join", "msg", "nick", "leave", "lost"]
RoleName: TypeAlias = Literal["peer", "hub"]

_NODE_ID = re.compile(r"[0-9a-f]{32}")
# C0 controls, DEL and C1 controls: never part of a name (§2).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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
    node: str
    name: str
    role: RoleName
    listen: int | None
    have: Mapping[str, int]
    proto: int = PROTO


@dataclass(frozen=True, slots=True)
class Event:
    """A flooded event (§4), with the exact bytes it travels as.

    ``raw`` is the frame as received (line ending normalised to ``\\n``) or as
    first encoded: forwarding sends these bytes, never a re-encoding (§5).
    """

    kind: EventKind
    origin: str
    seq: int
    ts: float
    name: str
    text: str = ""  # msg only
    node: str = ""  # lost only: the node that vanished
    raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def key(self) -> tuple[str, int]:
        return (self.origin, self.seq)

    def fields(self) -> dict[str, Any]:
        """The event's protocol fields, as a JSON-ready dict."""
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
        return out


@dataclass(frozen=True, slots=True)
class PeerInfo:
    node: str
    name: str
    addr: str  # "host:port", IPv6 hosts in brackets


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
    """The catch-up after a handshake is all sent: what follows is live."""


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A frame of a type this version does not know: ignored (§1)."""

    type: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """An event already seen, recognised without parsing it (see Decoder)."""

    origin: str
    seq: int


@dataclass(frozen=True, slots=True)
class TextLine:
    """One line from a plain-text client (§9), newline stripped."""

    text: str


Frame: TypeAlias = Hello | Event | Peers | Ping | Pong | CaughtUp | Error | Unknown | Duplicate

# --------------------------------------------------------------------------
# Validation helpers, shared by the decoder and by local input checks.


def is_node_id(value: object) -> bool:
    return isinstance(value, str) and _NODE_ID.fullmatch(value) is not None


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid display name (§2), or None if it is."""
    if not 1 <= len(name) <= MAX_NAME:
        return f"a name has 1 to {MAX_NAME} characters (this one has {len(name)})"
    if _CONTROL.search(name):
        return "a name cannot contain control characters"
    if not _encodable(name):
        return "a name must be valid Unicode text"
    return None


def text_problem(text: str) -> str | None:
    """Why ``text`` is not a valid message text (§4), or None if it is."""
    if not text:
        return "a message cannot be empty"
    if len(text) > MAX_TEXT:
        return f"a message has at most {MAX_TEXT} characters (this one has {len(text)})"
    if "\n" in text or "\x00" in text:
        return "a message cannot contain a newline or NUL"
    if not _encodable(text):
        return "a message must be valid Unicode text"
    return None


def _encodable(text: str) -> bool:
    # JSON escapes like "\ud800" decode to lone surrogates, which no terminal
    # or UTF-8 stream can carry.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bad(message: str) -> ProtocolError:
    return ProtocolError("bad_frame", message)


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    # bool is an int subclass in Python; JSON true is not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"field {key!r} must be an integer")
    return value


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _bad(f"field {key!r} must be a string")
    return value


def _node_id(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not is_node_id(value):
        raise _bad(f"field {key!r} must be a node id (32 lowercase hex digits)")
    assert isinstance(value, str)
    return value


def _name(obj: Mapping[str, Any], key: str = "name") -> str:
    value = _str(obj, key)
    problem = name_problem(value)
    if problem:
        raise _bad(f"field {key!r}: {problem}")
    return value


def _seq(obj: Mapping[str, Any]) -> int:
    seq = _int(obj, "seq")
    if not 1 <= seq <= MAX_SEQ:
        raise _bad(f"field 'seq' must be from 1 to {MAX_SEQ}")
    return seq


def _ts(obj: Mapping[str, Any]) -> float:
    ts = obj.get("ts")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        raise _bad("field 'ts' must be a number")
    try:
        value = float(ts)
    except OverflowError:  # an integer too large for a float
        raise _bad("field 'ts' is out of range") from None
    if not math.isfinite(value):  # 1e999 parses as inf
        raise _bad("field 'ts' must be finite")
    return value


def _nonce(obj: Mapping[str, Any]) -> int | str:
    nonce = obj.get("nonce")
    if isinstance(nonce, str) or (isinstance(nonce, int) and not isinstance(nonce, bool)):
        return nonce
    raise _bad("field 'nonce' must be an integer or a string")


def _parse_event(kind: EventKind, obj: Mapping[str, Any], raw: bytes) -> Event:
    origin = _node_id(obj, "origin")
    seq = _seq(obj)
    ts = _ts(obj)
    name = _name(obj)
    text = node = ""
    if kind == "msg":
        text = _str(obj, "text")
        problem = text_problem(text)
        if problem:
            raise _bad(f"field 'text': {problem}")
    elif kind == "lost":
        node = _node_id(obj, "node")
    return Event(kind, origin, seq, ts, name, text, node, raw)


def _parse_hello(obj: Mapping[str, Any]) -> Hello:
    proto = _int(obj, "proto")
    node = _node_id(obj, "node")
    name = _name(obj)
    role = _str(obj, "role")
    if role not in ("peer", "hub"):
        raise _bad("field 'role' must be 'peer' or 'hub'")
    listen = obj.get("listen")
    if listen is not None:
        listen = _int(obj, "listen")
        if not 0 <= listen < 65536:
            raise _bad("field 'listen' must be a TCP port or null")
        listen = listen or None  # port 0 is nowhere to dial: the same as null
    have = obj.get("have")
    if not isinstance(have, dict):
        raise _bad("field 'have' must be an object")
    for origin, seq in have.items():
        if not is_node_id(origin):
            raise _bad("keys of 'have' must be node ids")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            raise _bad(f"values of 'have' must be integers from 0 to {MAX_SEQ}")
    return Hello(node, name, role, listen, have, proto)  # type: ignore[arg-type]


def _parse_peers(obj: Mapping[str, Any]) -> Peers:
    items = obj.get("peers")
    if not isinstance(items, list):
        raise _bad("field 'peers' must be a list")
    peers = []
    for item in items:
        if not isinstance(item, dict):
            raise _bad("entries of 'peers' must be objects")
        addr = _str(item, "addr")
        if split_addr(addr) is None:
            raise _bad(f"bad address in 'peers': {addr[:80]!r}")
        peers.append(PeerInfo(_node_id(item, "node"), _name(item), addr))
    return Peers(tuple(peers))


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not.
    raise ValueError(f"{name} is not JSON")


# One decoder for all frames: json.loads with a keyword builds a new one per call.
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def parse_frame(line: bytes) -> Frame:
    """Parse one complete line (terminator included or not) into a frame.

    Raises :class:`ProtocolError` (``bad_frame``) for anything that is not a
    well-formed frame (§1). The returned :class:`Event` keeps ``line`` as its
    ``raw`` bytes, ending in exactly one ``\\n``.
    """
    body = line.rstrip(b"\n")
    if body.endswith(b"\r"):
        body = body[:-1]
    try:
        # Decode first: json.loads on bytes would also accept UTF-16 and -32.
        obj = _JSON.decode(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad("frame is not valid UTF-8") from None
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and integers over Python's digit
        # limit; RecursionError, absurdly deep nesting.
        raise _bad("frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise _bad("frame must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise _bad("field 'type' must be a string")
    if kind in EVENT_TYPES:
        event = _parse_event(kind, obj, body + b"\n")  # type: ignore[arg-type]
        if len(body) >= MAX_EVENT:  # checked once well-formed: bad_frame comes first
            raise ProtocolError("frame_too_long", f"an event is at most {MAX_EVENT} bytes")
        return event
    if kind == "hello":
        return _parse_hello(obj)
    if kind == "peers":
        return _parse_peers(obj)
    if kind == "ping":
        return Ping(_nonce(obj))
    if kind == "pong":
        return Pong(_nonce(obj))
    if kind == "caught_up":
        return CaughtUp()
    if kind == "error":
        # Kept short: a remote's words go to logs and screens (§7 readings).
        message = obj.get("message", "")
        message = message if isinstance(message, str) else ""
        return Error(_clip(_str(obj, "code"), MAX_ERROR_CODE), _clip(message, MAX_ERROR_MESSAGE))
    return Unknown(kind)


# --------------------------------------------------------------------------
# Encoding


def _dumps(obj: Mapping[str, Any]) -> bytes:
    # ensure_ascii=False keeps text readable on the wire; json escapes every
    # control character, so a frame never holds a raw newline (§1).
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def encode(frame: Frame) -> bytes:
    """The bytes of ``frame`` on the wire, ``\\n`` included."""
    if isinstance(frame, Event):
        return frame.raw or _dumps(frame.fields())
    if isinstance(frame, Hello):
        return _dumps(
            {
                "type": "hello",
                "proto": frame.proto,
                "node": frame.node,
                "name": frame.name,
                "role": frame.role,
                "listen": frame.listen,
                "have": dict(frame.have),
            }
        )
    if isinstance(frame, Peers):
        return _dumps(
            {
                "type": "peers",
                "peers": [{"node": p.node, "name": p.name, "addr": p.addr} for p in frame.peers],
            }
        )
    if isinstance(frame, Ping):
        return _dumps({"type": "ping", "nonce": frame.nonce})
    if isinstance(frame, Pong):
        return _dumps({"type": "pong", "nonce": frame.nonce})
    if isinstance(frame, CaughtUp):
        return _dumps({"type": "caught_up"})
    if isinstance(frame, Error):
        return _dumps({"type": "error", "code": frame.code, "message": frame.message})
    raise TypeError(f"cannot encode {frame!r}")


def make_event(
    kind: EventKind,
    origin: str,
    seq: int,
    ts: float,
    name: str,
    *,
    text: str = "",
    node: str = "",
) -> Event:
    """A new event with its wire bytes, encoded once here (§5)."""
    event = Event(kind, origin, seq, ts, name, text, node)
    return Event(kind, origin, seq, ts, name, text, node, _dumps(event.fields()))
