"""Bytes-only tests of the wire protocol (PROTOCOL.md §1-§7, §9 framing).

After h11's tests: every parser is fed whole, in every split, one byte at a
time and with trailing data; every required field of every frame type is
removed and mistyped; hypothesis checks that chunking never changes the
result and that encode/parse round-trip.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat import parse
from chat.addr import join_addr, split_addr
from chat.framing import Decoder
from chat.keys import SigningKey, b64, unb64, unb64_spelled, verify
from chat.parse import parse_frame
from chat.protocol import (
    EVENT_CONTEXT,
    MAX_EVENT,
    MAX_FRAME,
    MAX_HAVE,
    MAX_NAME,
    MAX_SEQ,
    MAX_TEXT,
    Auth,
    CaughtUp,
    Duplicate,
    Error,
    Event,
    EventKind,
    Frame,
    Hello,
    PeerInfo,
    Peers,
    Ping,
    Pong,
    ProtocolError,
    RoleName,
    TextLine,
    Unknown,
    encode,
    make_event,
    make_hello,
    name_problem,
    text_problem,
)

KA, KB, KC = (SigningKey.from_seed(bytes([n]) * 32) for n in (1, 2, 3))
A, B, C = KA.node_id, KB.node_id, KC.node_id
NONCE = bytes(range(32))
SIG = bytes(range(64, 128))  # a signature's form: what the parser checks (§4)
TS = 1763700000.123

EVENT_KINDS: tuple[EventKind, ...] = ("join", "msg", "nick", "leave", "lost")
ROLES: tuple[RoleName, ...] = ("peer", "hub")

# One well-formed frame of every type (§3, §4, §7).
KEY, SIG64 = b64(KA.public), b64(SIG)
VALID: dict[str, dict[str, Any]] = {
    "hello": {
        "type": "hello",
        "proto": 2,
        "node": A,
        "key": KEY,
        "nonce": b64(NONCE),
        "name": "alice",
        "role": "peer",
        "listen": 8081,
        "have": {B: 3},
    },
    "auth": {"type": "auth", "sig": SIG64},
    "join": {"type": "join", "origin": A, "seq": 1, "ts": TS, "name": "alice", "key": KEY},
    "msg": {
        "type": "msg",
        "origin": A,
        "seq": 2,
        "ts": TS,
        "name": "alice",
        "text": "hello",
        "key": KEY,
    },
    "nick": {"type": "nick", "origin": A, "seq": 3, "ts": TS, "name": "alice2", "key": KEY},
    "leave": {"type": "leave", "origin": A, "seq": 4, "ts": TS, "name": "alice2", "key": KEY},
    "lost": {
        "type": "lost",
        "origin": A,
        "seq": 5,
        "ts": TS,
        "name": "hub",
        "node": B,
        "key": KEY,
    },
    "peers": {"type": "peers", "peers": [{"node": B, "name": "bob", "addr": "127.0.0.1:8082"}]},
    "ping": {"type": "ping", "nonce": 42},
    "pong": {"type": "pong", "nonce": 42},
    "caught_up": {"type": "caught_up"},
    "error": {"type": "error", "code": "bad_frame", "message": "why"},
}
EVENT_FRAMES = frozenset({"join", "msg", "nick", "leave", "lost"})
for _kind in EVENT_FRAMES:
    VALID[_kind]["sig"] = SIG64  # last: an event ends with its signature (§4)


def _event(kind: str, seq: int, name: str, *, text: str = "", node: str = "") -> Event:
    return Event(kind, A, seq, TS, name, text, node, pub=KA.public, sig=SIG)


EXPECTED: dict[str, Frame] = {
    "hello": Hello(A, KA.public, NONCE, "alice", "peer", 8081, {B: 3}, 2),
    "auth": Auth(SIG),
    "join": _event("join", 1, "alice"),
    "msg": _event("msg", 2, "alice", text="hello"),
    "nick": _event("nick", 3, "alice2"),
    "leave": _event("leave", 4, "alice2"),
    "lost": _event("lost", 5, "hub", node=B),
    "peers": Peers((PeerInfo(B, "bob", "127.0.0.1:8082"),)),
    "ping": Ping(42),
    "pong": Pong(42),
    "caught_up": CaughtUp(),
    "error": Error("bad_frame", "why"),
}


def obj(kind: str, **changes: Any) -> dict[str, Any]:
    """A deep copy of the valid ``kind`` frame with ``changes`` applied.

    An event's ``sig`` stays its last member (§4), whatever is added.
    """
    out = copy.deepcopy(VALID[kind])
    out.update(changes)
    if "sig" in out and "sig" not in changes:
        out["sig"] = out.pop("sig")
    return out


def line_of(value: Any, ending: bytes = b"\n") -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # A lone surrogate has no UTF-8 form: send it as the JSON escape \udXXX,
    # as a remote would, which backslashreplace happens to spell exactly.
    return text.encode("utf-8", errors="backslashreplace") + ending


def assert_bad(line: bytes, code: str = "bad_frame") -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_frame(line)
    assert info.value.code == code
    assert info.value.message
    return info.value


def decode_after_hello(line: bytes) -> Decoder:
    """A JSON-mode decoder (its first line a hello) then fed ``line``."""
    decoder = Decoder()
    first = line_of(VALID["hello"])
    assert decoder.feed(first) == [EXPECTED["hello"]]
    assert decoder.feed(line) == []
    return decoder


# --------------------------------------------------------------------------
# Well-formed frames


@pytest.mark.parametrize("kind", sorted(VALID))
def test_every_valid_frame_parses(kind: str) -> None:
    assert parse_frame(line_of(VALID[kind])) == EXPECTED[kind]


@pytest.mark.parametrize("kind", sorted(VALID))
def test_every_valid_frame_through_the_decoder(kind: str) -> None:
    decoder = Decoder()
    assert decoder.feed(line_of(VALID["hello"]) + line_of(VALID[kind])) == [
        EXPECTED["hello"],
        EXPECTED[kind],
    ]
    assert decoder.error is None
    assert decoder.plain_text is False


def test_hello_listen_null_and_empty_have() -> None:
    frame = parse_frame(line_of(obj("hello", listen=None, have={}, role="hub")))
    assert frame == Hello(A, KA.public, NONCE, "alice", "hub", None, {})


def test_hello_listen_zero_means_not_listening() -> None:
    frame = parse_frame(line_of(obj("hello", listen=0)))
    assert isinstance(frame, Hello)
    assert frame.listen is None


@pytest.mark.parametrize("proto", [1, 3, 0])
def test_a_hello_of_another_protocol_is_refused_naming_the_spoken_ones(proto: int) -> None:
    # §3: answered with unsupported_protocol, which names the versions spoken;
    # a protocol-1 hello has none of the new members, and is still told so.
    error = assert_bad(line_of(obj("hello", proto=proto)), "unsupported_protocol")
    assert error.message == f"protocol {proto} is not spoken here: only 2"
    v1 = {"type": "hello", "proto": 1, "node": A, "name": "a", "role": "peer", "have": {}}
    assert assert_bad(line_of(v1), "unsupported_protocol").message.endswith("only 2")


def test_a_hello_whose_node_is_not_its_keys_id_is_refused() -> None:
    assert_bad(line_of(obj("hello", node=B)))
    assert_bad(line_of(obj("hello", key=b64(KB.public))))


def test_hello_boundaries() -> None:
    for port in (1, 65535):
        frame = parse_frame(line_of(obj("hello", listen=port, have={B: 0, C: 10**6})))
        assert isinstance(frame, Hello)
        assert frame.listen == port
        assert frame.have == {B: 0, C: 10**6}


def test_peers_empty_and_ipv6() -> None:
    assert parse_frame(line_of(obj("peers", peers=[]))) == Peers(())
    entry = {"node": C, "name": "carol", "addr": "[::1]:9000"}
    assert parse_frame(line_of(obj("peers", peers=[entry]))) == Peers(
        (PeerInfo(C, "carol", "[::1]:9000"),)
    )


def test_ping_nonce_may_be_a_string() -> None:
    assert parse_frame(line_of({"type": "ping", "nonce": "abc"})) == Ping("abc")
    assert parse_frame(line_of({"type": "pong", "nonce": "abc"})) == Pong("abc")


@pytest.mark.parametrize(
    "name", ["a", "x" * MAX_NAME, "é" * MAX_NAME, "🦀" * MAX_NAME, "bob smith", "Ünïcödé"]
)
def test_names_within_the_rules_are_accepted(name: str) -> None:
    frame = parse_frame(line_of(obj("join", name=name)))
    assert isinstance(frame, Event)
    assert frame.name == name


@pytest.mark.parametrize(
    "name",
    [" alice", "alice ", " ", "bob> hi <carol", "<bob>", "a\u200bb", "\u202ebob", "x\u2066"],
)
def test_names_that_could_fake_a_line_are_refused_on_the_wire(name: str) -> None:
    # Protocol 2 (§2): no < or >, no outer spaces, nothing that renders as
    # nothing or reorders text. A frame naming one is bad_frame.
    assert_bad(line_of(obj("join", name=name)))
    assert_bad(line_of(obj("hello", name=name)))


@pytest.mark.parametrize(
    "text",
    ["x", "x" * MAX_TEXT, "🦀" * MAX_TEXT, "tab\there", "cr\rhere", "\x1b[31mred", "a\u2028b"],
)
def test_msg_texts_within_the_rules_are_accepted(text: str) -> None:
    # §4: any character but a raw newline and NUL.
    frame = parse_frame(line_of(obj("msg", text=text)))
    assert isinstance(frame, Event)
    assert frame.text == text


def test_unknown_type_is_ignored() -> None:
    assert parse_frame(line_of({"type": "future", "x": [1, {"y": None}]})) == Unknown("future")
    # Case matters: "Hello" is not "hello".
    assert parse_frame(line_of(obj("hello", type="Hello"))) == Unknown("Hello")


def test_unknown_type_through_the_decoder_does_not_stop_it() -> None:
    decoder = Decoder()
    stream = line_of({"type": "future"}) + line_of(VALID["ping"])
    assert decoder.feed(stream) == [Unknown("future"), Ping(42)]
    assert decoder.error is None


@pytest.mark.parametrize("kind", sorted(VALID))
def test_unknown_fields_are_ignored(kind: str) -> None:
    extra = obj(kind, future_field={"a": [1, 2]}, another="x")
    assert parse_frame(line_of(extra)) == EXPECTED[kind]


def test_unknown_fields_in_peer_entries_are_ignored() -> None:
    entry = {"node": B, "name": "bob", "addr": "127.0.0.1:8082", "tls": True}
    assert parse_frame(line_of(obj("peers", peers=[entry]))) == EXPECTED["peers"]


def test_fields_of_other_event_kinds_are_ignored() -> None:
    # text on a join, node on a msg: unknown fields for that kind.
    join = parse_frame(line_of(obj("join", text="ignored", node=B)))
    assert join == EXPECTED["join"]
    assert isinstance(join, Event)
    assert join.text == ""
    assert join.node == ""


def test_error_code_and_message() -> None:
    frame = parse_frame(line_of({"type": "error", "code": "frame_too_long", "message": "big"}))
    assert frame == Error("frame_too_long", "big")


# --------------------------------------------------------------------------
# Missing and ill-typed fields (§1: bad_frame)

REQUIRED: list[tuple[str, str]] = [
    *(("hello", f) for f in ("type", "proto", "node", "name", "role", "have")),
    *((k, f) for k in EVENT_KINDS for f in ("type", "origin", "seq", "ts", "name")),
    ("msg", "text"),
    ("lost", "node"),
    ("peers", "peers"),
    ("ping", "nonce"),
    ("pong", "nonce"),
    ("error", "code"),
]


@pytest.mark.parametrize(("kind", "field"), REQUIRED, ids=[f"{k}-{f}" for k, f in REQUIRED])
def test_missing_required_field(kind: str, field: str) -> None:
    value = obj(kind)
    del value[field]
    assert_bad(line_of(value))


@pytest.mark.parametrize("field", ["node", "name", "addr"])
def test_missing_field_in_peer_entry(field: str) -> None:
    entry = dict(VALID["peers"]["peers"][0])
    del entry[field]
    assert_bad(line_of(obj("peers", peers=[entry])))


NOT_AN_INT: list[Any] = [True, False, 1.0, 1.5, "1", None, [], {}]
BAD_IDS: list[Any] = [
    A.upper(),
    A[:-1],
    A + "0",
    "g" * 32,
    " " + A[1:],
    A[:-1] + "\n",
    "",
    5,
    None,
    [A],
]
BAD_NAMES: list[Any] = [
    "",
    "x" * (MAX_NAME + 1),
    "é" * (MAX_NAME + 1),
    "a\x07b",
    "a\nb",
    "a\tb",
    "a\x00b",
    "\x1b[2J",
    "a\x7fb",
    "a\x85b",
    "a\x9bb",
    "\ud800",
    5,
    None,
    ["alice"],
]
BAD_TEXTS: list[Any] = [
    "",
    "x" * (MAX_TEXT + 1),
    "🦀" * (MAX_TEXT + 1),
    "a\nb",
    "hello\n",
    "a\x00b",
    "\udfff",
    5,
    None,
    ["hi"],
]
BAD_TS: list[Any] = [True, False, "1", None, [], {}, 10**400, -(10**400)]
BAD_SEQ: list[Any] = [0, -1, *NOT_AN_INT]

BAD_TYPES: list[Any] = [5, None, True, False, ["hello"]]
BAD_ROLES: list[Any] = ["client", "Peer", "", 1, None, True]
BAD_LISTEN: list[Any] = [-1, 65536, True, False, 8081.0, "8081", [], {}]
BAD_HAVES: list[Any] = [
    [],
    "x",
    None,
    1,
    True,
    {"xyz": 1},
    {A.upper(): 1},
    {B: -1},
    {B: True},
    {B: 1.0},
    {B: "1"},
    {B: None},
]
BAD_PEER_LISTS: list[Any] = ["x", None, {}, 1, [1], ["x"], [None], [[]]]
BAD_NONCES: list[Any] = [True, False, 1.5, None, [], {}]
BAD_CODES: list[Any] = [5, None, True, [], {}]

ILL_TYPED: list[tuple[str, str, Any]] = [
    *(("hello", "type", v) for v in BAD_TYPES),
    *(("hello", "proto", v) for v in NOT_AN_INT),
    *(("hello", "node", v) for v in BAD_IDS),
    *(("hello", "name", v) for v in BAD_NAMES),
    *(("hello", "role", v) for v in BAD_ROLES),
    *(("hello", "listen", v) for v in BAD_LISTEN),
    *(("hello", "have", v) for v in BAD_HAVES),
    *((k, "type", v) for k in EVENT_KINDS for v in BAD_TYPES),
    *((k, "origin", v) for k in EVENT_KINDS for v in BAD_IDS),
    *((k, "seq", v) for k in EVENT_KINDS for v in BAD_SEQ),
    *((k, "ts", v) for k in EVENT_KINDS for v in BAD_TS),
    *((k, "name", v) for k in EVENT_KINDS for v in BAD_NAMES),
    *(("msg", "text", v) for v in BAD_TEXTS),
    *(("lost", "node", v) for v in BAD_IDS),
    *(("peers", "peers", v) for v in BAD_PEER_LISTS),
    *(("ping", "nonce", v) for v in BAD_NONCES),
    *(("pong", "nonce", v) for v in BAD_NONCES),
    *(("error", "code", v) for v in BAD_CODES),
]


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    ILL_TYPED,
    ids=[f"{k}-{f}-{i}" for i, (k, f, _) in enumerate(ILL_TYPED)],
)
def test_ill_typed_field(kind: str, field: str, value: Any) -> None:
    assert_bad(line_of(obj(kind, **{field: value})))


BAD_ADDRS: list[Any] = [
    "127.0.0.1",
    "127.0.0.1:",
    ":8082",
    "127.0.0.1:0",
    "127.0.0.1:65536",
    "127.0.0.1:80a",
    "::1:8082",
    "a b:80",
    "",
    "127.0.0.1:²",
    8082,
    None,
]
PEER_ENTRY_FAULTS: list[tuple[str, Any]] = [
    *(("node", v) for v in BAD_IDS),
    *(("name", v) for v in BAD_NAMES),
    *(("addr", v) for v in BAD_ADDRS),
]


@pytest.mark.parametrize(
    ("field", "value"),
    PEER_ENTRY_FAULTS,
    ids=[f"{f}-{i}" for i, (f, _) in enumerate(PEER_ENTRY_FAULTS)],
)
def test_ill_typed_peer_entry(field: str, value: Any) -> None:
    good = dict(VALID["peers"]["peers"][0])
    entry = {**good, field: value}
    # A bad entry after a good one still spoils the frame.
    assert_bad(line_of(obj("peers", peers=[good, entry])))


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("hello", "proto"),
        ("hello", "listen"),
        ("join", "seq"),
        ("msg", "ts"),
        ("ping", "nonce"),
        ("pong", "nonce"),
    ],
)
def test_bool_is_not_a_number(kind: str, field: str) -> None:
    # JSON true is not 1, although Python's bool is an int.
    assert_bad(line_of(obj(kind, **{field: True})))
    assert_bad(line_of(obj(kind, **{field: False})))


def test_bool_is_not_a_have_seq() -> None:
    assert_bad(line_of(obj("hello", have={B: True})))


@pytest.mark.parametrize("value", [None, 5, True, [], {}])
def test_type_must_be_a_string(value: Any) -> None:
    assert_bad(line_of(obj("ping", type=value)))


def test_ill_typed_frame_through_the_decoder() -> None:
    decoder = decode_after_hello(line_of(obj("msg", seq=True)))
    assert decoder.error is not None
    assert decoder.error.code == "bad_frame"


# --------------------------------------------------------------------------
# Lines that are not JSON objects


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"ping","nonce":"\xff"}\n',  # invalid byte
        b'{"type":"ping","nonce":"\xc0\xaf"}\n',  # overlong encoding
        b'{"type":"ping","nonce":"\xed\xa0\x80"}\n',  # encoded surrogate
        b'{"type":"ping","nonce":"\xe2\x82"}\n',  # truncated sequence
        b'{"type":"ping","nonce":1}\xff\n',  # stray byte after the object
    ],
)
def test_invalid_utf8(line: bytes) -> None:
    assert_bad(line)
    decoder = decode_after_hello(line)
    assert decoder.error is not None
    assert decoder.error.code == "bad_frame"


def test_utf16_is_not_utf8() -> None:
    # json.loads(bytes) would detect UTF-16; the wire is UTF-8 only (§1).
    assert_bad('{"type":"ping","nonce":1}'.encode("utf-16-le") + b"\n")


@pytest.mark.parametrize(
    "line",
    [
        b"\n",
        b"\r\n",
        b"{\n",
        b'{"type":"ping",}\n',
        b"{'type':'ping','nonce':1}\n",
        b'{"type":"ping","nonce":1}x\n',
        b'{"type":"ping","nonce":1}{"type":"ping","nonce":2}\n',
        b'{"type":"ping","nonce":01}\n',
        b'{"type":"ping","nonce":1\n',
        b'{"type":"ping" "nonce":1}\n',
        b"hello\n",
    ],
)
def test_invalid_json(line: bytes) -> None:
    assert_bad(line)
    decoder = decode_after_hello(line)
    assert decoder.error is not None
    assert decoder.error.code == "bad_frame"


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(constant: bytes) -> None:
    assert_bad(
        b'{"type":"join","origin":"%s","seq":1,"ts":%s,"name":"a"}\n' % (A.encode(), constant)
    )
    assert_bad(b'{"type":"ping","nonce":%s}\n' % constant)
    # Not JSON even where the value would be ignored.
    assert_bad(b'{"type":"future","x":%s}\n' % constant)


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1e999999"])
def test_ts_overflowing_a_float_is_rejected(number: bytes) -> None:
    # Python's json turns 1e400 into inf: a wall clock (§4) is finite, and
    # inf would only come back out as the non-JSON token Infinity.
    assert_bad(b'{"type":"join","origin":"%s","seq":1,"ts":%s,"name":"a"}\n' % (A.encode(), number))


def test_huge_integers() -> None:
    huge = b"9" * 5000  # past Python's int digit limit: ValueError inside json
    assert_bad(b'{"type":"join","origin":"%s","seq":%s,"ts":1,"name":"a"}\n' % (A.encode(), huge))
    assert_bad(b'{"type":"ping","nonce":%s}\n' % huge)
    assert_bad(b'{"type":"future","x":%s}\n' % huge)
    # Representable as an int, but not as a float: ts is out of range.
    assert_bad(line_of(obj("join", ts=10**400)))
    decoder = decode_after_hello(b'{"type":"ping","nonce":%s}\n' % huge)
    assert decoder.error is not None
    assert decoder.error.code == "bad_frame"


def test_deeply_nested_json() -> None:
    assert_bad(b"[" * 100_000 + b"\n")
    assert_bad(b"{" * 100_000 + b"\n")
    nested = b"[" * 100_000 + b"]" * 100_000
    assert_bad(b'{"type":"future","x":' + nested + b"}\n")
    assert_bad(b'{"type":"ping","nonce":' + nested + b"}\n")
    # Within MAX_FRAME, through the decoder.
    fits = b"[" * 30_000 + b"]" * 30_000
    decoder = decode_after_hello(b'{"type":"future","x":' + fits + b"}\n")
    assert decoder.error is not None
    assert decoder.error.code == "bad_frame"
    decoder = decode_after_hello(b"[" * 60_000 + b"\n")
    assert decoder.error is not None
    assert decoder.error.code == "bad_frame"


@pytest.mark.parametrize(
    "value", [[], [VALID["ping"]], "ping", 42, 1.5, None, True, False], ids=repr
)
def test_json_values_that_are_not_objects(value: Any) -> None:
    assert_bad(line_of(value))
    decoder = decode_after_hello(line_of(value))
    assert decoder.error is not None
    assert decoder.error.code == "bad_frame"


# --------------------------------------------------------------------------
# Event.raw and encode: forwarding is byte for byte (§5)


def test_raw_is_the_received_line() -> None:
    line = line_of(VALID["msg"])
    event = parse_frame(line)
    assert isinstance(event, Event)
    assert event.raw == line
    assert encode(event) == line


def test_raw_keeps_the_remote_formatting() -> None:
    # Spacing, member order, escapes and unknown members are the origin's: a
    # re-encoding would change them, and the signature covers them (§4).
    line = (
        b'{ "text" : "caf\\u00e9 \\"q\\" \xf0\x9f\xa6\x80",  "seq":2,"type":"msg",'
        b'"origin":"' + A.encode() + b'", "ts":1763700000.1230, "name":"alice",'
        b' "x-future":[1,2,{"a":null}], "key":"' + KEY.encode() + b'"'
        b',"sig":"' + SIG64.encode() + b'"}\n'
    )
    event = parse_frame(line)
    assert isinstance(event, Event)
    assert event.text == 'caf\u00e9 "q" \U0001f980'
    assert event.ts == 1763700000.123
    assert event.extra == {"x-future": [1, 2, {"a": None}]}
    assert event.raw == line
    assert encode(event) == line
    assert event.signed() == EVENT_CONTEXT + line[: line.index(b',"sig"')]


def test_raw_of_a_crlf_line_ends_in_a_single_newline() -> None:
    line = line_of(VALID["lost"], b"\r\n")
    event = parse_frame(line)
    assert isinstance(event, Event)
    assert event.raw == line[:-2] + b"\n"
    assert encode(event) == event.raw


def test_raw_of_an_unterminated_line_gets_its_newline() -> None:
    body = line_of(VALID["join"], b"")
    event = parse_frame(body)
    assert isinstance(event, Event)
    assert event.raw == body + b"\n"


def test_raw_through_the_decoder_byte_by_byte_with_crlf() -> None:
    lines = [line_of(VALID[k], b"\r\n") for k in EVENT_KINDS]
    decoder = Decoder()
    out: list[Frame | TextLine] = []
    for byte in b"".join(lines):
        out.extend(decoder.feed(bytes([byte])))
    assert decoder.error is None
    assert out == [EXPECTED[k] for k in EVENT_KINDS]
    for frame, line in zip(out, lines, strict=True):
        assert isinstance(frame, Event)
        assert frame.raw == line[:-2] + b"\n"
        assert encode(frame) == frame.raw


def test_raw_does_not_take_part_in_equality() -> None:
    a = parse_frame(line_of(VALID["msg"]))
    b = parse_frame(b" " + line_of(VALID["msg"]))
    assert isinstance(a, Event)
    assert isinstance(b, Event)
    assert a.raw != b.raw
    assert a == b
    assert a.key == (A, 2)


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_make_event_fields_per_kind(kind: EventKind) -> None:
    event = make_event(
        kind,
        KA,
        7,
        TS,
        "alice",
        text="hi" if kind == "msg" else "",
        node=B if kind == "lost" else "",
    )
    wire = encode(event)
    assert wire == event.raw
    assert wire.endswith(b'"}\n')
    assert wire.count(b"\n") == 1
    expected: dict[str, Any] = {
        "type": kind,
        "origin": A,
        "seq": 7,
        "ts": TS,
        "name": "alice",
    }
    if kind == "msg":
        expected["text"] = "hi"
    if kind == "lost":
        expected["node"] = B
    assert event.fields() == expected
    members = json.loads(wire)
    assert list(members) == [*expected, "key", "sig"]
    assert members == {**expected, "key": KEY, "sig": b64(event.sig)}
    parsed = parse_frame(wire)
    assert parsed == event
    assert isinstance(parsed, Event)
    assert parsed.raw == wire
    assert verify(KA.public, parsed.sig, parsed.signed())


def test_make_event_signs_its_extra_members_too() -> None:
    event = make_event("react", KA, 1, TS, "alice", extra={"to": [A, 1], "emoji": "+1"})
    members = json.loads(event.raw)
    assert list(members) == ["type", "origin", "seq", "ts", "name", "to", "emoji", "key", "sig"]
    parsed = parse_frame(event.raw)
    assert isinstance(parsed, Event)
    assert not parsed.known
    assert parsed.extra == {"to": [A, 1], "emoji": "+1"}
    assert verify(KA.public, parsed.sig, parsed.signed())
    changed = event.raw.replace(b'"+1"', b'"-1"')
    again = parse_frame(changed)
    assert isinstance(again, Event)
    assert not verify(KA.public, again.sig, again.signed())


def test_make_event_keeps_non_ascii_readable_and_escapes_controls() -> None:
    text = "h\u00e9llo \U0001f980 \x1b[31m tab\t cr\r \u2028 \x7f"
    event = make_event("msg", KA, 1, TS, "zo\u00eb", text=text)
    assert "h\u00e9llo \U0001f980".encode() in event.raw
    assert "zo\u00eb".encode() in event.raw
    assert event.raw.count(b"\n") == 1
    assert b"\r" not in event.raw
    assert b"\x1b" not in event.raw
    parsed = parse_frame(event.raw)
    assert isinstance(parsed, Event)
    assert parsed.text == text


def test_an_event_cannot_be_encoded_unsigned() -> None:
    # Events are made by make_event, which signs them: there is no other way.
    with pytest.raises(ValueError, match="signs"):
        encode(Event("msg", A, 3, TS, "alice", text="hi"))


HELLO_B = Hello(B, KB.public, NONCE, "hub one", "hub", None, {})


@pytest.mark.parametrize(
    "frame",
    [
        Hello(A, KA.public, NONCE, "alice", "peer", 8081, {B: 3, C: 0}),
        HELLO_B,
        Auth(SIG),
        CaughtUp(),
        Peers(()),
        Peers((PeerInfo(B, "bob", "127.0.0.1:8082"), PeerInfo(C, "carol", "[::1]:9"))),
        Ping(0),
        Ping("n-1"),
        Pong(2**40),
        Error("frame_too_long", "a frame is at most 65536 bytes"),
        Error("shutting_down", ""),
    ],
    ids=repr,
)
def test_link_frames_round_trip(frame: Frame) -> None:
    wire = encode(frame)
    assert wire.endswith(b"}\n")
    assert wire.count(b"\n") == 1
    assert parse_frame(wire) == frame
    assert Decoder().feed(wire) == [frame]


def test_encode_hello_fields_in_their_order() -> None:
    hello = make_hello(KA, NONCE, "alice", "peer", None, {B: 3})
    wire = encode(hello)
    assert list(json.loads(wire)) == [
        "type",
        "proto",
        "node",
        "key",
        "nonce",
        "name",
        "role",
        "listen",
        "have",
    ]
    assert json.loads(wire) == {
        "type": "hello",
        "proto": 2,
        "node": A,
        "key": KEY,
        "nonce": b64(NONCE),
        "name": "alice",
        "role": "peer",
        "listen": None,
        "have": {B: 3},
    }
    assert hello.raw + b"\n" == wire
    parsed = parse_frame(wire)
    assert isinstance(parsed, Hello)
    assert parsed == hello
    assert parsed.raw == hello.raw


def test_encode_unknown_is_a_bug_of_ours() -> None:
    with pytest.raises(TypeError):
        encode(Unknown("future"))


# --------------------------------------------------------------------------
# The decoder: chunking

STREAM_FRAMES: list[Frame] = [
    EXPECTED["hello"],
    EXPECTED["join"],
    EXPECTED["msg"],
    Unknown("future"),
    EXPECTED["peers"],
    EXPECTED["ping"],
    EXPECTED["lost"],
]
STREAM_LINES: list[bytes] = [
    line_of(VALID["hello"]),
    line_of(VALID["join"]),
    line_of(VALID["msg"], b"\r\n"),
    line_of({"type": "future", "data": "x" * 100}),
    line_of(VALID["peers"], b"\r\n"),
    line_of(VALID["ping"]),
    line_of(VALID["lost"]),
]
STREAM = b"".join(STREAM_LINES)


def feed_all(decoder: Decoder, chunks: list[bytes]) -> list[Frame | TextLine]:
    out: list[Frame | TextLine] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def test_feed_whole() -> None:
    decoder = Decoder()
    assert decoder.feed(STREAM) == STREAM_FRAMES
    assert decoder.error is None
    assert decoder.buffered == 0


def test_feed_one_byte_at_a_time() -> None:
    decoder = Decoder()
    chunks = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert feed_all(decoder, chunks) == STREAM_FRAMES
    assert decoder.error is None
    assert decoder.buffered == 0


def test_feed_split_at_every_point() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = Decoder()
        assert feed_all(decoder, [STREAM[:cut], STREAM[cut:]]) == STREAM_FRAMES, cut
        assert decoder.error is None


def test_feed_split_in_three_around_crlf() -> None:
    # \r and \n of one ending in different chunks.
    line = STREAM_LINES[2]
    cut = len(line) - 1
    decoder = Decoder()
    assert decoder.feed(STREAM_LINES[0]) == [STREAM_FRAMES[0]]
    assert decoder.feed(line[:cut]) == []
    assert decoder.buffered == cut
    assert decoder.feed(line[cut:]) == [STREAM_FRAMES[2]]


def test_feed_empty_chunks() -> None:
    decoder = Decoder()
    assert decoder.feed(b"") == []
    assert feed_all(decoder, [b"", STREAM, b""]) == STREAM_FRAMES


def test_partial_tail_is_kept_for_the_next_feed() -> None:
    decoder = Decoder()
    ping = line_of(VALID["ping"])
    assert decoder.feed(STREAM_LINES[0] + ping[:5]) == [STREAM_FRAMES[0]]
    assert decoder.buffered == 5
    assert decoder.feed(ping[5:] + ping + ping[:1]) == [Ping(42), Ping(42)]
    assert decoder.buffered == 1


def test_mode_is_decided_by_the_first_byte() -> None:
    # The first byte is the first line's first character (or its end, for an
    # empty line, which does not begin with "{" either): §9's rule, known
    # without waiting for the line to end.
    decoder = Decoder()
    assert decoder.plain_text is None
    assert decoder.feed(b"{") == []
    assert decoder.plain_text is False
    assert decoder.feed(line_of(VALID["hello"])[1:]) == [EXPECTED["hello"]]
    for first in (b"h", b"\n", b"\r", b" "):
        text = Decoder()
        text.feed(first)
        assert text.plain_text is True


# --------------------------------------------------------------------------
# The decoder: MAX_FRAME (§1)


def padded(total: int, ending: bytes = b"\n", kind: str = "peers") -> bytes:
    """A valid ``kind`` frame of exactly ``total`` bytes, ``ending`` included."""
    base = line_of(obj(kind, pad=""), ending)
    out = line_of(obj(kind, pad="x" * (total - len(base))), ending)
    assert len(out) == total
    return out


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    line = padded(MAX_FRAME)
    decoder = Decoder()
    assert decoder.feed(line) == [EXPECTED["peers"]]
    assert decoder.error is None


def test_frame_of_exactly_max_frame_is_accepted_byte_by_byte() -> None:
    line = padded(MAX_FRAME)
    decoder = Decoder()
    out = feed_all(decoder, [line[i : i + 1] for i in range(len(line))])
    assert out == [EXPECTED["peers"]]
    assert decoder.error is None


def test_crlf_frame_of_exactly_max_frame_is_accepted() -> None:
    line = padded(MAX_FRAME, b"\r\n")
    decoder = Decoder()
    frames = decoder.feed(line[:1000]) + decoder.feed(line[1000:])
    assert frames == [EXPECTED["peers"]]


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_event_of_exactly_max_event_is_accepted_byte_for_byte(kind: str) -> None:
    for ending in (b"\n", b"\r\n"):
        line = padded(MAX_EVENT + len(ending) - 1, ending, kind)
        (frame,) = Decoder().feed(line)
        assert frame == EXPECTED[kind]
        assert isinstance(frame, Event)
        assert frame.raw == line.removesuffix(ending) + b"\n"


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_event_one_byte_over_max_event_is_padding_refused(kind: str) -> None:
    # Unknown fields are allowed, but not to make an event larger than any
    # real one: it would be kept and relayed to everyone (issue 11).
    decoder = Decoder()
    assert decoder.feed(padded(MAX_EVENT + 1, kind=kind)) == []
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_long"


def test_a_message_of_4096_escaped_controls_fits_in_max_event() -> None:
    text = "\x1b" * MAX_TEXT  # the largest text as JSON writes it: \u001b each
    line = line_of(obj("msg", text=text, name="n" * MAX_NAME))
    assert len(line) < MAX_EVENT
    (frame,) = Decoder().feed(line)
    assert isinstance(frame, Event)
    assert frame.text == text


def test_frame_one_byte_over_max_frame_is_rejected() -> None:
    line = padded(MAX_FRAME + 1)
    decoder = Decoder()
    assert decoder.feed(line) == []
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_long"
    assert decoder.buffered == 0


def test_frame_one_byte_over_max_frame_in_chunks() -> None:
    line = padded(MAX_FRAME + 1)
    decoder = Decoder()
    assert feed_all(decoder, [line[:MAX_FRAME], line[MAX_FRAME:]]) == []
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_long"


def test_good_frame_then_too_long_frame_in_one_chunk() -> None:
    decoder = Decoder()
    ping = line_of(VALID["ping"])
    assert decoder.feed(ping + padded(MAX_FRAME + 1) + ping) == [Ping(42)]
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_long"
    assert decoder.feed(ping) == []


def test_max_frame_bytes_without_newline_are_held_one_more_is_rejected() -> None:
    decoder = Decoder()
    assert decoder.feed(b"{" + b"x" * (MAX_FRAME - 1)) == []
    assert decoder.error is None
    assert decoder.buffered == MAX_FRAME
    assert decoder.feed(b"x") == []
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_long"
    assert decoder.buffered == 0


def test_max_frame_bytes_then_newline_is_too_long() -> None:
    decoder = Decoder()
    assert decoder.feed(b"{" + b"x" * (MAX_FRAME - 1)) == []
    assert decoder.feed(b"\n") == []
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_long"


def test_unterminated_flood_is_rejected_at_once_and_not_buffered() -> None:
    decoder = Decoder()
    ping = line_of(VALID["ping"])
    assert decoder.feed(ping + b"y" * (3 * MAX_FRAME)) == [Ping(42)]
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_long"
    assert decoder.buffered == 0
    assert decoder.feed(b"\n" + ping) == []


def test_trickled_unterminated_line_never_buffers_more_than_max_frame() -> None:
    decoder = Decoder()
    chunk = b"z" * 4096
    fed = 0
    while decoder.error is None:
        decoder.feed(chunk)
        fed += len(chunk)
        assert decoder.buffered <= MAX_FRAME
        assert fed <= MAX_FRAME + len(chunk)
    assert decoder.error.code == "frame_too_long"
    assert fed == MAX_FRAME + len(chunk)


def test_plain_text_lines_are_bounded_too() -> None:
    decoder = Decoder()
    assert decoder.feed(b"hi\n") == [TextLine("hi")]
    assert decoder.feed(b"a" * MAX_FRAME + b"\n") == []
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_long"


def test_custom_max_frame() -> None:
    decoder = Decoder(max_frame=16)
    assert decoder.feed(b"x" * 15 + b"\n") == [TextLine("x" * 15)]
    assert decoder.feed(b"y" * 16 + b"\n") == []
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_long"


# --------------------------------------------------------------------------
# The decoder: faults stop it


def test_good_frames_before_a_bad_one_are_returned() -> None:
    decoder = Decoder()
    good = line_of(VALID["hello"]) + line_of(VALID["join"])
    bad = line_of(obj("msg", seq=0))
    after = line_of(VALID["ping"])
    assert decoder.feed(good + bad + after) == [EXPECTED["hello"], EXPECTED["join"]]
    assert decoder.error is not None
    assert decoder.error.code == "bad_frame"
    assert decoder.buffered == 0
    # Nothing after an error, not even well-formed frames.
    assert decoder.feed(after) == []
    assert decoder.feed(STREAM) == []
    assert decoder.error.code == "bad_frame"


def test_bad_first_line() -> None:
    decoder = Decoder()
    assert decoder.feed(b'{"type":"hello"}\n' + line_of(VALID["ping"])) == []
    assert decoder.error is not None
    assert decoder.error.code == "bad_frame"


def test_error_in_a_later_chunk() -> None:
    decoder = Decoder()
    assert decoder.feed(STREAM) == STREAM_FRAMES
    assert decoder.feed(b"not json\n") == []
    assert decoder.error is not None
    assert decoder.error.code == "bad_frame"


# --------------------------------------------------------------------------
# Plain-text mode (§9)


def test_plain_text_mode() -> None:
    decoder = Decoder()
    assert decoder.plain_text is None
    assert decoder.feed(b"hello there\n") == [TextLine("hello there")]
    assert decoder.plain_text is True
    # The mode is fixed: a later JSON-looking line is just text.
    ping = line_of(VALID["ping"])
    assert decoder.feed(ping) == [TextLine(ping[:-1].decode())]
    assert decoder.feed(b"/nick bob\r\n/exit\n") == [TextLine("/nick bob"), TextLine("/exit")]
    assert decoder.error is None


def test_plain_text_first_line_may_be_a_command() -> None:
    decoder = Decoder()
    assert decoder.feed(b"/nick carol\n") == [TextLine("/nick carol")]
    assert decoder.plain_text is True


def test_plain_text_crlf_and_one_byte_at_a_time() -> None:
    data = b"one\r\ntwo\r\n\r\nthree\n"
    decoder = Decoder()
    out = feed_all(decoder, [data[i : i + 1] for i in range(len(data))])
    assert out == [TextLine("one"), TextLine("two"), TextLine(""), TextLine("three")]


def test_plain_text_latin1_is_decoded_with_replacement() -> None:
    decoder = Decoder()
    assert decoder.feed(b"caf\xe9 cr\xe8me\r\n") == [TextLine("caf\ufffd cr\ufffdme")]
    assert decoder.feed("ünïcode ok\n".encode()) == [TextLine("ünïcode ok")]
    assert decoder.error is None


@pytest.mark.parametrize("first", [b"\n", b"\r\n", b" {}\n", b"[1]\n", b"\xef\xbb\xbf{}\n"])
def test_first_line_not_beginning_with_brace_is_plain_text(first: bytes) -> None:
    decoder = Decoder()
    out = decoder.feed(first)
    assert len(out) == 1
    assert isinstance(out[0], TextLine)
    assert decoder.plain_text is True
    assert decoder.error is None


def test_plain_text_keeps_other_characters() -> None:
    decoder = Decoder()
    assert decoder.feed(b"a\tb\x1bc\x00d\n") == [TextLine("a\tb\x1bc\x00d")]


# --------------------------------------------------------------------------
# Addresses


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:8082", ("127.0.0.1", 8082)),
        ("localhost:1", ("localhost", 1)),
        ("chat.example.org:65535", ("chat.example.org", 65535)),
        ("[::1]:8082", ("::1", 8082)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        ("10.0.0.1:08080", ("10.0.0.1", 8080)),
    ],
)
def test_split_addr(addr: str, expected: tuple[str, int]) -> None:
    assert split_addr(addr) == expected


@pytest.mark.parametrize(
    "addr",
    [
        "",
        ":",
        "8082",
        "127.0.0.1",
        "127.0.0.1:",
        ":8082",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:123456",
        "127.0.0.1:000080",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1:80a",
        "127.0.0.1: 80",
        "::1:8082",
        "[]:80",
        "a b:80",
        " :80",
        "\t:80",
        "127.0.0.1:²",
        "127.0.0.1:①",
    ],
)
def test_split_addr_rejects(addr: str) -> None:
    assert split_addr(addr) is None


@pytest.mark.parametrize(
    ("host", "port", "addr"),
    [
        ("127.0.0.1", 8082, "127.0.0.1:8082"),
        ("example.org", 1, "example.org:1"),
        ("::1", 9000, "[::1]:9000"),
        ("2001:db8::7", 65535, "[2001:db8::7]:65535"),
    ],
)
def test_join_addr_round_trips(host: str, port: int, addr: str) -> None:
    assert join_addr(host, port) == addr
    assert split_addr(addr) == (host, port)


# --------------------------------------------------------------------------
# Local validation helpers


@pytest.mark.parametrize("name", ["a", "alice", "x" * MAX_NAME, "é" * MAX_NAME, "bob smith"])
def test_name_problem_accepts(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["", "x" * (MAX_NAME + 1), "a\x00", "a\t", "a\n", "\x1bx", "a\x7f", "a\x80", "a\x9f", "\ud800"],
)
def test_name_problem_rejects(name: str) -> None:
    problem = name_problem(name)
    assert isinstance(problem, str)
    assert problem


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40))
def test_name_problem_on_ascii_is_the_full_rule(name: str) -> None:
    # Most names are printable ASCII and take a short path: the same verdict
    # as every rule of §2 applied one by one.
    allowed = (
        1 <= len(name) <= MAX_NAME
        and not any(unicodedata.category(c) in {"Cc", "Cf", "Cs", "Zl", "Zp"} for c in name)
        and "<" not in name
        and ">" not in name
        and name == name.strip()
        and unicodedata.normalize("NFC", name) == name
    )
    assert (name_problem(name) is None) == allowed


@given(st.binary(max_size=70))
def test_unb64_reads_what_b64_writes(data: bytes) -> None:
    assert unb64(b64(data), len(data)) == data


_B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= ."


@given(st.text(alphabet=_B64_CHARS, max_size=90), st.sampled_from([0, 1, 2, 3, 16, 32, 64]))
def test_unb64_takes_only_the_canonical_spelling(text: str, size: int) -> None:
    # Against the plain reading: decode with padding added, then the text
    # must be exactly what encoding the bytes again gives (§2).
    try:
        padded = text + "=" * (-len(text) % 4)
        plain = base64.b64decode(padded.encode(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        plain = None
    canonical = plain is not None and len(plain) == size and b64(plain) == text
    assert unb64(text, size) == (plain if canonical else None)


@given(st.data(), st.sampled_from([1, 2, 3, 32, 64]))
def test_unb64_spelled_agrees_with_the_full_rule(data: st.DataObject, size: int) -> None:
    # The parser reads a signature with unb64_spelled once its regex has
    # checked the alphabet and the length: only the last character is left.
    chars = (size * 4 + 2) // 3
    text = data.draw(st.text(alphabet=_B64_CHARS[:64], min_size=chars, max_size=chars))
    assert unb64_spelled(text.encode(), size) == unb64(text, size)


def test_a_signature_with_unused_bits_set_is_refused() -> None:
    # The same 64 bytes, spelled with one of the last character's four
    # unused bits set: another spelling, so not the event's (§2).
    body = make_event("msg", SigningKey(), 1, TS, "alice", text="hi").raw.rstrip(b"\n")
    last = _B64_CHARS.index(chr(body[-3])) | 1
    assert_bad(body[:-3] + _B64_CHARS[last].encode() + body[-2:])


def test_run_keys_read_once_per_spelling_and_at_most_max_keys_of_them() -> None:
    # parse._KEYS skips decoding a key already read: it must not let a
    # spelling through that the full rule refuses, nor grow without bound.
    event = make_event("msg", SigningKey(), 1, TS, "alice", text="hi")
    assert parse_frame(event.raw) == event  # (its key is read and kept)
    members = json.loads(event.raw)
    spelled = members["key"]
    # The same 32 bytes with one of the last character's unused bits set.
    last = _B64_CHARS.index(spelled[-1]) | 1
    members["key"] = spelled[:-1] + _B64_CHARS[last]
    assert_bad(json.dumps(members, separators=(",", ":")).encode())
    for seq in range(1, parse.MAX_KEYS + 100):
        parse_frame(make_event("msg", SigningKey(), seq, TS, "x", text="hi").raw)
        assert len(parse._KEYS) <= parse.MAX_KEYS
    assert parse_frame(event.raw) == event  # read again, the same


@pytest.mark.parametrize(
    "text", ["x", "x" * MAX_TEXT, "a\rb", "a\tb", "\x1b[31m", "\x7f\x9b", " ", "🦀" * MAX_TEXT]
)
def test_text_problem_accepts(text: str) -> None:
    assert text_problem(text) is None


@pytest.mark.parametrize(
    "text", ["", "x" * (MAX_TEXT + 1), "a\nb", "\n", "a\x00b", "\x00", "\ud800"]
)
def test_text_problem_rejects(text: str) -> None:
    problem = text_problem(text)
    assert isinstance(problem, str)
    assert problem


# --------------------------------------------------------------------------
# Properties

node_ids = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
names = st.text(
    alphabet=st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=MAX_NAME
).filter(lambda s: name_problem(s) is None)
texts = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\n\x00"),
    min_size=1,
    max_size=200,
)
stamps = st.floats(allow_nan=False, allow_infinity=False)
seqs = st.integers(min_value=1, max_value=MAX_SEQ)


run_keys = st.binary(min_size=32, max_size=32).map(SigningKey.from_seed)
extras = st.dictionaries(
    st.sampled_from(["x-future", "emoji", "to", "reply_to"]),
    st.integers() | st.text(max_size=8) | st.lists(st.integers(), max_size=3),
    max_size=2,
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from([*EVENT_KINDS, "react"]))
    return make_event(
        kind,
        draw(run_keys),
        draw(seqs),
        draw(stamps),
        draw(names),
        text=draw(texts) if kind == "msg" else "",
        node=draw(node_ids) if kind == "lost" else "",
        extra=draw(extras),
    )


hellos = st.builds(
    make_hello,
    run_keys,
    st.binary(min_size=32, max_size=32),
    names,
    st.sampled_from(ROLES),
    st.none() | st.integers(min_value=1, max_value=65535),
    st.dictionaries(node_ids, st.integers(min_value=0, max_value=MAX_SEQ), max_size=4),
)
link_frames = st.one_of(
    st.builds(Ping, st.integers(min_value=0, max_value=2**53) | st.text(max_size=8)),
    st.builds(Pong, st.integers(min_value=0, max_value=2**53)),
    st.builds(
        Peers,
        st.lists(st.builds(PeerInfo, node_ids, names, st.just("127.0.0.1:8082")), max_size=3).map(
            tuple
        ),
    ),
)
frames = st.one_of(events(), hellos, link_frames)


@settings(max_examples=200, deadline=None)
@given(events())
def test_event_round_trip(event: Event) -> None:
    wire = encode(event)
    assert wire == event.raw
    assert wire.count(b"\n") == 1
    assert wire.endswith(b"\n")
    parsed = parse_frame(wire)
    assert parsed == event
    assert isinstance(parsed, Event)
    assert parsed.raw == wire
    assert encode(parsed) == wire
    assert verify(parsed.pub, parsed.sig, parsed.signed())


@settings(max_examples=200, deadline=None)
@given(hellos)
def test_hello_round_trip(hello: Hello) -> None:
    wire = encode(hello)
    assert wire.count(b"\n") == 1
    assert parse_frame(wire) == hello
    assert Decoder().feed(wire) == [hello]
    parsed = parse_frame(wire)
    assert isinstance(parsed, Hello)
    assert parsed.raw + b"\n" == wire


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(frames, st.booleans()), min_size=1, max_size=8), st.data())
def test_any_chunking_gives_the_same_frames(
    items: list[tuple[Frame, bool]], data: st.DataObject
) -> None:
    lines = [encode(frame)[:-1] + (b"\r\n" if crlf else b"\n") for frame, crlf in items]
    stream = b"".join(lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    whole = Decoder().feed(stream)
    chunked_decoder = Decoder()
    chunked = feed_all(chunked_decoder, chunks)
    assert chunked_decoder.error is None
    assert chunked_decoder.buffered == 0
    assert whole == chunked == [frame for frame, _ in items]
    for got, line in zip(chunked, lines, strict=True):
        if isinstance(got, Event):
            # The forwarded bytes: as received, with a single \n.
            assert got.raw == line.removesuffix(b"\r\n").removesuffix(b"\n") + b"\n"


FUZZ_LINES = [line_of(VALID[k]) for k in sorted(VALID)] + [
    b"hello\n",
    b"\r\n",
    b'{"type":1}\n',
    b"\xff\xfe\n",
    b"{" * 40 + b"\n",
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.binary(max_size=60), st.sampled_from(FUZZ_LINES)), max_size=12),
    st.data(),
)
def test_arbitrary_bytes_never_raise_and_chunking_never_matters(
    pieces: list[bytes], data: st.DataObject
) -> None:
    limit = 128
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    chunked = Decoder(max_frame=limit)
    out: list[Frame | TextLine] = []
    for chunk in chunks:
        failed_before = chunked.error is not None
        got = chunked.feed(chunk)
        assert chunked.buffered <= limit
        if failed_before:
            assert got == []
        out.extend(got)
    whole = Decoder(max_frame=limit)
    assert whole.feed(stream) == out
    assert (whole.error and whole.error.code) == (chunked.error and chunked.error.code)
    if chunked.error is not None:
        # A first byte 0x16 is a TLS record: refused as such (§8).
        codes = ("unsupported_protocol",) if stream[:1] == b"\x16" else ()
        assert chunked.error.code in ("bad_frame", "frame_too_long", *codes)


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | node_ids,
    _nested,
    max_leaves=8,
)
# Ports made of characters that str.isdigit() accepts, some of which int() does not.
digit_like = st.text(alphabet=st.sampled_from("0123456789²³¹⁴①⑨٣۴५８"), min_size=1, max_size=5)
addrs = st.one_of(
    st.text(max_size=20),
    st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["h", "[::1]", "1.2.3.4"]), digit_like),
)
peer_entries = st.fixed_dictionaries(
    {},
    optional={
        "node": node_ids | json_values,
        "name": names | json_values,
        "addr": addrs | json_values,
    },
)
FIELDS = ["type", "proto", "node", "name", "role", "listen", "have", "origin", "seq", "ts"]
FIELDS += ["text", "peers", "nonce", "code", "message", "key", "sig", "identity", "cert"]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(VALID)),
    st.dictionaries(
        st.sampled_from(FIELDS),
        json_values | st.lists(peer_entries, max_size=3) | st.sampled_from(sorted(VALID)),
        max_size=3,
    ),
)
def test_mangled_frames_are_a_frame_or_bad_frame(kind: str, changes: dict[str, Any]) -> None:
    line = line_of(obj(kind, **changes))
    try:
        frame = parse_frame(line)
    except ProtocolError as exc:
        # A hello whose proto is changed to another number is refused as such.
        expected = {"bad_frame", "unsupported_protocol"} if "proto" in changes else {"bad_frame"}
        assert exc.code in expected
    else:
        assert isinstance(
            frame, Hello | Auth | Event | Peers | Ping | Pong | CaughtUp | Error | Unknown
        )
        if isinstance(frame, Event):
            assert encode(frame) == line


@settings(max_examples=200, deadline=None)
@given(st.lists(peer_entries, min_size=1, max_size=3))
def test_mangled_peer_entries_are_peers_or_bad_frame(entries: list[dict[str, Any]]) -> None:
    try:
        frame = parse_frame(line_of(obj("peers", peers=entries)))
    except ProtocolError as exc:
        assert exc.code == "bad_frame"
    else:
        assert isinstance(frame, Peers)
        for info in frame.peers:
            assert split_addr(info.addr) is not None


# --------------------------------------------------------------------------
# Duplicates recognised without parsing (the full-mesh fast path)


def test_a_seen_event_comes_out_as_duplicate_without_parsing() -> None:
    origin = A
    old = make_event("msg", KA, 3, 1.0, "al", text="seen already")
    new = make_event("msg", KA, 4, 1.0, "al", text="not yet")
    seen = {(origin, 3)}
    decoder = Decoder(seen=lambda o, s: (o, s) in seen)
    assert decoder.feed(old.raw + new.raw) == [Duplicate(origin, 3), new]


def test_the_fast_path_never_hides_an_unseen_or_foreign_frame() -> None:
    origin = B
    # Field order other than make_event's: parsed as usual, even if seen.
    reordered = (
        b'{"seq":1,"type":"join","origin":"' + origin.encode() + b'","ts":1,"name":"x",'
        b'"key":"' + b64(KB.public).encode() + b'","sig":"' + SIG64.encode() + b'"}\n'
    )
    decoder = Decoder(seen=lambda o, s: True)
    (frame,) = decoder.feed(reordered)
    assert isinstance(frame, Event) and frame.key == (origin, 1)
    # A malformed frame that is not a seen event still gets bad_frame.
    decoder = Decoder(seen=lambda o, s: False)
    assert decoder.feed(b'{"type":"msg","origin":"' + origin.encode() + b'","seq":1,}\n') == []
    assert decoder.error is not None and decoder.error.code == "bad_frame"


def test_seqs_are_bounded_so_a_hello_stays_within_max_frame() -> None:
    at_bound = make_event("msg", KC, MAX_SEQ, 1.0, "al", text="x")
    assert parse_frame(at_bound.raw) == at_bound
    over = make_event("msg", KC, MAX_SEQ + 1, 1.0, "al", text="x")
    with pytest.raises(ProtocolError) as caught:
        parse_frame(over.raw)
    assert caught.value.code == "bad_frame"
    # The largest hello a node sends: MAX_HAVE origins, each at MAX_SEQ.
    have = {f"{i:032x}": MAX_SEQ for i in range(MAX_HAVE)}
    hello = make_hello(KC, NONCE, "\U0001f980" * MAX_NAME, "peer", 65535, have)
    assert len(encode(hello)) <= MAX_FRAME
    bad = json.loads(encode(hello))
    bad["have"]["0" * 32] = MAX_SEQ + 1
    with pytest.raises(ProtocolError):
        parse_frame(json.dumps(bad).encode())


# --------------------------------------------------------------------------
# The decoder's work is linear in the bytes received (no byte searched twice)


def test_a_maximal_line_trickled_byte_by_byte_is_searched_once() -> None:
    # Each byte is looked at once for a line end, however the line is cut:
    # 65536 one-byte reads cost 65536 byte-searches, not 65536**2 / 2.
    line = padded(MAX_FRAME)
    decoder = Decoder()
    frames = feed_all(decoder, [line[i : i + 1] for i in range(len(line))])
    assert frames == [EXPECTED["peers"]]
    assert decoder.scanned == len(line)


@given(st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=40))
@settings(max_examples=100)
def test_any_chunking_searches_each_byte_at_most_once(cuts: list[int]) -> None:
    stream = b"".join(STREAM_LINES) + padded(20000) + b'{"type":"ping"'
    decoder = Decoder()
    chunks, rest = [], stream
    for cut in cuts:
        chunks.append(rest[:cut])
        rest = rest[cut:]
    chunks.append(rest)
    feed_all(decoder, [c for c in chunks if c])
    assert decoder.scanned == len(stream)


# --------------------------------------------------------------------------
# Plain-text lines (§9): how people and their programs end a line


def text_lines(*chunks: bytes) -> tuple[list[Frame | TextLine], Decoder]:
    decoder = Decoder()
    return feed_all(decoder, list(chunks)), decoder


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ((b"one\ntwo\n",), ["one", "two"]),
        ((b"one\r\ntwo\r\n",), ["one", "two"]),
        ((b"one\rtwo\r",), ["one", "two"]),  # a lone CR ends a line too
        ((b"one\r", b"\ntwo\n"), ["one", "two"]),  # CR LF cut between two reads
        ((b"one\r\x00two\r\n",), ["one", "two"]),  # telnet's CR NUL
        ((b"one\r\n\r\ntwo\n",), ["one", "", "two"]),  # an empty line is a line
        ((b"h", b"e", b"l", b"l", b"o", b"\r", b"\n"), ["hello"]),
        ((b"caf\xc3", b"\xa9\n"), ["café"]),  # UTF-8 cut between reads
        ((b"bad \xff\xfe\x01\n",), ["bad "]),  # IAC DONT ECHO: a telnet command, dropped
    ],
)
def test_text_line_endings(chunks: tuple[bytes, ...], lines: list[str]) -> None:
    frames, decoder = text_lines(*chunks)
    assert frames == [TextLine(line) for line in lines]
    assert decoder.error is None


def test_telnet_commands_are_dropped_never_shown() -> None:
    IAC, WILL, DO, SB, SE, IP, NOP = 0xFF, 0xFB, 0xFD, 0xFA, 0xF0, 0xF4, 0xF1
    stream = bytes([IAC, DO, 1, IAC, WILL, 3]) + b"hi " + bytes([IAC, NOP]) + b"there"
    stream += bytes([IAC, SB, 24, 0]) + b"xterm" + bytes([IAC, SE]) + b"!\r\n"
    stream += bytes([IAC, IP])  # Ctrl+C at a telnet prompt: Interrupt Process
    for cut in range(len(stream) + 1):  # every split between two reads
        frames, decoder = text_lines(*(c for c in (stream[:cut], stream[cut:]) if c))
        assert frames == [TextLine("hi there!")], cut
        assert decoder.buffered == 0


def test_an_escaped_iac_is_the_byte_itself() -> None:
    frames, _ = text_lines(b"a\xff\xffb\n")
    assert frames == [TextLine("a\ufffdb")]  # 0xFF is no UTF-8: shown as a replacement


def test_an_endless_telnet_subnegotiation_is_dropped() -> None:
    frames, decoder = text_lines(b"x" + b"\xff\xfa" + b"y" * 10_000, b"after\n")
    assert decoder.error is None
    assert frames == [TextLine("xafter")]


def test_a_partial_line_is_held_until_flushed_and_not_before() -> None:
    decoder = Decoder()
    assert decoder.feed(b"hello") == []
    assert decoder.partial
    assert decoder.feed(b" world") == []  # more within the idle time: the same line
    assert decoder.flush() == [TextLine("hello world")]
    assert not decoder.partial
    assert decoder.flush() == []


def test_a_partial_text_line_is_bounded() -> None:
    decoder = Decoder()
    feed_all(decoder, [b"x" * 1000] * 70)
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_long"
    assert decoder.buffered == 0


def test_partial_json_is_never_flushed() -> None:
    decoder = Decoder()
    assert decoder.feed(b'{"type":"ping"') == []
    assert not decoder.partial
    assert decoder.flush() == []


# --------------------------------------------------------------------------
# What makes a protocol-2 event well-formed beyond protocol 1 (§4)


def _signed_line(**changes: Any) -> bytes:
    return make_event("msg", KA, 9, TS, "alice", text="hi", **changes).raw


@pytest.mark.parametrize(
    "tail",
    [
        b'"}',  # no sig at all
        b'", "sig":"' + SIG64.encode() + b'"}',  # a space before "sig"
        b'","sig":"' + SIG64.encode() + b'" }',  # a space after it
        b'","sig":"' + SIG64[:-1].encode() + b'"}',  # 85 characters
        b'","sig":"' + SIG64.encode() + b'=="}',  # padded
        b'","sig":"' + SIG64.replace("-", "+").encode() + b'"}',  # standard base64
    ],
)
def test_an_event_must_end_exactly_with_its_signature(tail: bytes) -> None:
    body = line_of(obj("msg"), b"")
    head = body[: body.index(b'","sig"')]
    assert_bad(head + tail + b"\n")


def test_an_event_with_sig_elsewhere_is_bad() -> None:
    value = obj("msg")
    sig = value.pop("sig")
    assert_bad(line_of({"sig": sig, **value}))


def test_a_member_given_twice_is_bad_frame() -> None:
    # Two parsers could read two different values; the signer and the
    # reader must agree on every member (§1).
    line = _signed_line()
    twice = line.replace(b'"text":"hi"', b'"text":"hi","text":"bye"')
    assert_bad(twice)
    assert_bad(b'{"type":"ping","nonce":1,"nonce":2}\n')


@pytest.mark.parametrize("member", ["identity", "cert", "host", "host_key", "vouch"])
def test_identity_members_of_a_join_are_checked_for_form(member: str) -> None:
    good = {"identity": KEY, "cert": SIG64, "host": B, "host_key": KEY, "vouch": SIG64}
    assert isinstance(parse_frame(line_of(obj("join", **good))), Event)
    assert_bad(line_of(obj("join", **{**good, member: "x"})))
    assert_bad(line_of(obj("join", **{**good, member: 5})))


def test_an_unknown_signed_event_kind_is_an_event() -> None:
    line = make_event("react", KA, 3, TS, "alice", extra={"emoji": "+1"}).raw
    frame = parse_frame(line)
    assert isinstance(frame, Event)
    assert frame.kind == "react"
    assert frame.key == (A, 3)
    assert not frame.known
    assert frame.fields()["emoji"] == "+1"
    # Without origin, seq and sig it is a link-local frame, ignored.
    assert parse_frame(line_of({"type": "react", "emoji": "+1"})) == Unknown("react")
