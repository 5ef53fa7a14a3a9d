"""Bytes to frames (protocol 2): every rule a frame must meet, checked here.

:func:`parse_frame` takes one line and answers a frame or raises
:class:`~chat.protocol.ProtocolError` with the code to send (§1). What it
checks is what docs/PROTOCOL.md says a frame *is*; whether an event's
signature holds is the node's business (a bad signature is dropped, not a
protocol error, §4), so only the signature's form is checked here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from chat.addr import split_addr
from chat.keys import SIG_CHARS, node_id, unb64, unb64_spelled
from chat.names import name_problem, text_problem
from chat.protocol import (
    EVENT_TYPES,
    LINK_TYPES,
    MAX_ERROR_CODE,
    MAX_ERROR_MESSAGE,
    MAX_EVENT,
    MAX_SEQ,
    NONCE_BYTES,
    PROTO,
    PROTOS,
    Auth,
    CaughtUp,
    Error,
    Event,
    Frame,
    GroupAuth,
    GroupHello,
    Hello,
    PeerInfo,
    Peers,
    Ping,
    Pong,
    ProtocolError,
    Unknown,
)

_NODE_ID = re.compile(r"[0-9a-f]{32}")
_SIG_END = re.compile(rb',"sig":"[A-Za-z0-9_-]{86}"\}\Z')
# Members every event has; the rest of a known kind's or an unknown kind's
# members are its ``extra``.
_COMMON = frozenset({"type", "origin", "seq", "ts", "name", "key", "sig"})
_OWN = {"msg": "text", "lost": "node"}
# Identity members of join and nick (§2): a person's, or a host's voucher.
_IDENTITY = {"identity": 32, "cert": 64, "host_key": 32, "vouch": 64, "box": 32}


def is_node_id(value: object) -> bool:
    return isinstance(value, str) and _NODE_ID.fullmatch(value) is not None


def _bad(message: str) -> ProtocolError:
    return ProtocolError("bad_frame", message)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def _bytes(obj: Mapping[str, Any], key: str, size: int) -> bytes:
    data = unb64(_str(obj, key), size)
    if data is None:
        raise _bad(f"field {key!r} must be {size} bytes in base64url without padding")
    return data


# Run keys as read, by their spelling: a hub hears the same few keys on
# every event, and decoding one is a third of checking an event's form.
# Emptied when full, so any number of keys costs at most this many.
_KEYS: dict[str, bytes] = {}
MAX_KEYS = 4096


def _key(obj: Mapping[str, Any]) -> bytes:
    text = obj.get("key")
    key = _KEYS.get(text) if isinstance(text, str) else None
    if key is None:
        key = _bytes(obj, "key", 32)
        if len(_KEYS) >= MAX_KEYS:
            _KEYS.clear()
        _KEYS[obj["key"]] = key
    return key


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


def _event(kind: str, obj: Mapping[str, Any], body: bytes) -> Event:
    if not _SIG_END.search(body):
        raise _bad('an event must end with its signature: ,"sig":"<86 characters>"}')
    origin = _node_id(obj, "origin")
    seq = _seq(obj)
    ts = _ts(obj)
    name = _name(obj)
    pub = _key(obj)
    # _SIG_END matched: the frame ends in the "sig" member's 86 characters
    # of the alphabet (a member cannot appear twice, §1).
    sig = unb64_spelled(body[-2 - SIG_CHARS : -2], 64)
    if sig is None:
        raise _bad("field 'sig' must be 64 bytes in base64url without padding")
    text = node = ""
    if kind == "msg":
        text = _str(obj, "text")
        problem = text_problem(text)
        if problem:
            raise _bad(f"field 'text': {problem}")
    elif kind == "lost":
        node = _node_id(obj, "node")
    own = _OWN.get(kind)
    extra = {k: v for k, v in obj.items() if k not in _COMMON and k != own}
    if kind in ("join", "nick"):
        for member, size in _IDENTITY.items():
            if member in extra:
                _bytes(extra, member, size)
        if "host" in extra:
            _node_id(extra, "host")
    return Event(kind, origin, seq, ts, name, text, node, pub, sig, extra, body + b"\n")


def _hello(obj: Mapping[str, Any], body: bytes) -> Hello:
    proto = _int(obj, "proto")
    if proto != PROTO:
        spoken = " and ".join(str(p) for p in PROTOS)
        raise ProtocolError(
            "unsupported_protocol", f"protocol {proto} is not spoken here: only {spoken}"
        )
    node = _node_id(obj, "node")
    key = _bytes(obj, "key", 32)
    if node_id(key) != node:
        raise _bad("field 'node' must be the id of field 'key' (§2)")
    nonce = _bytes(obj, "nonce", NONCE_BYTES)
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
    return Hello(node, key, nonce, name, role, listen, have, proto, body)  # type: ignore[arg-type]


def _peers(obj: Mapping[str, Any]) -> Peers:
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


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two members of one name read differently by different parsers: what
    # one node signs must be what every other one reads (§1).
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a member appears twice")
    return obj


# One decoder for all frames: json.loads with a keyword builds a new one per call.
_JSON = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)


def parse_frame(line: bytes) -> Frame:
    """Parse one complete line (its ending included or not) into a frame.

    Raises :class:`ProtocolError` for anything that is not a well-formed
    frame (§1). An :class:`Event` keeps ``line`` as its ``raw`` bytes,
    ending in exactly one ``\\n``; a :class:`Hello` keeps them without it.
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
        # ValueError covers JSONDecodeError, duplicate members and integers
        # over Python's digit limit; RecursionError, absurdly deep nesting.
        raise _bad("frame is not valid JSON without repeated members") from None
    if not isinstance(obj, dict):
        raise _bad("frame must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise _bad("field 'type' must be a string")
    if kind in LINK_TYPES:
        return _link_frame(kind, obj, body)
    if kind in EVENT_TYPES or ("origin" in obj and "seq" in obj and "sig" in obj):
        event = _event(kind, obj, body)
        if len(body) >= MAX_EVENT:  # checked once well-formed: bad_frame comes first
            raise ProtocolError("frame_too_long", f"an event is at most {MAX_EVENT} bytes")
        return event
    return Unknown(kind)


def _link_frame(kind: str, obj: Mapping[str, Any], body: bytes) -> Frame:
    if kind == "hello":
        return _hello(obj, body)
    if kind == "auth":
        return Auth(_bytes(obj, "sig", 64))
    if kind == "group":
        return GroupHello(_bytes(obj, "nonce", NONCE_BYTES))
    if kind == "group_auth":
        return GroupAuth(_bytes(obj, "proof", 32))
    if kind == "peers":
        return _peers(obj)
    if kind == "ping":
        return Ping(_nonce(obj))
    if kind == "pong":
        return Pong(_nonce(obj))
    if kind == "caught_up":
        return CaughtUp()
    # error: kept short, for a remote's words go to logs and screens.
    message = obj.get("message", "")
    message = message if isinstance(message, str) else ""
    return Error(_clip(_str(obj, "code"), MAX_ERROR_CODE), _clip(message, MAX_ERROR_MESSAGE))
