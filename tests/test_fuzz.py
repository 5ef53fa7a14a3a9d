"""Fuzzing one live node over loopback with hypothesis (issue 6).

One node (a mesh peer) runs for the whole test, with two honest clients
chatting through it. Hypothesis draws cases in a worker thread; each case
runs on the trio loop (:func:`trio.from_thread.run`) over a fresh TCP
connection: random bytes, hellos and frames with one field of the wrong type
or range, huge numbers, deep nesting, lines around ``MAX_FRAME``, truncated
JSON, invalid UTF-8, all cut into random chunks. A case that says a good
hello completes the protocol-2 handshake with a key of its own (or botches
its proof), and its events are signed, or signed and then mutated: a
signature over other bytes, by another key, of the wrong form, missing,
or not last (docs/PROTOCOL.md §3, §4). Running the property
through hypothesis itself (rather than replaying drawn examples) means a
failure is shrunk to a minimal case against the same node.

Each case is built so that its outcome is known from the rules
(docs/PROTOCOL.md §1, §3, §4 and the implementation notes): the node answers
a bad line with that ``error`` and closes, keeps a harmless connection open
(a ``ping`` probe gets its ``pong``; an event whose signature fails is
dropped and the link stays up), and a plain-text client gets only plain
text. After each case every connection it opened must be closed at
the node; every ``HONEST_EVERY`` cases the honest clients must still get
each other's messages; the node must log no internal error and still be
running at the end.

``FUZZ_EXAMPLES`` sets the number of cases (2000 by default; ``make fuzz``
runs more).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from harness import NodeHandle, start_node
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from wire import HOST
from wire import WireClient as Client

from chat.addr import split_addr
from chat.config import Config
from chat.handshake import proof_message
from chat.keys import SigningKey, b64, verify
from chat.names import name_problem
from chat.parse import is_node_id
from chat.protocol import (
    EVENT_CONTEXT,
    EVENT_TYPES,
    LINK_TYPES,
    MAX_EVENT,
    MAX_FRAME,
    MAX_NAME,
    MAX_SEQ,
    MAX_TEXT,
    Auth,
    Error,
    Hello,
    Ping,
    Pong,
    encode,
)

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))
HONEST_EVERY = 100
CASE_TIMEOUT = 5.0

# Verdicts of one line, and outcomes of a case.
OK = "ok"
BAD = "bad_frame"
TOO_LONG = "frame_too_long"
UNSUPPORTED = "unsupported_protocol"
AUTH_FAILED = "auth_failed"
MAYBE = "ok or bad_frame"  # deep nesting a parser may refuse; a possible duplicate
MAYBE_BIG = "bad_frame or frame_too_long"  # deep nesting, in an event past MAX_EVENT
DUP_BIG = "ok or frame_too_long"  # an event past MAX_EVENT that may be a duplicate
OPEN = "open"  # the connection stays open: the probe ping gets its pong
CLOSED = "closed"  # closed without a word: a second error frame (links.py)

KNOWN_TYPES = EVENT_TYPES | LINK_TYPES
DEEP = 200  # nesting up to this depth must parse; deeper may be refused

# --------------------------------------------------------------------------
# JSON text, including what Python's json.dumps cannot write


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: NaN, 1e999, a 5000-digit number, deep nesting."""

    text: str


@dataclass(frozen=True)
class Slot:
    """A value known only when the case runs (strategies are built once)."""

    name: str


HERE = Slot("here")  # the node's own address: the only one a peers frame offers
Slots = dict[Slot, str]


@dataclass(frozen=True)
class KeyOf:
    """A run key's node id (``part="id"``) or public key (``"key"``), from its
    seed; seed None is the case's own key, the one its hello proves."""

    seed: bytes | None
    part: str

    def signer(self, own: SigningKey) -> SigningKey:
        return own if self.seed is None else SigningKey.from_seed(self.seed)


OWN = KeyOf(None, "id")  # the case's own node id: its own events
OWN_KEY = KeyOf(None, "key")
OWN_SIGNER = Slot("own signer")  # (a slot holding the case's seed, as hex)


def dumps(value: object, slots: Slots) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Slot):
        return json.dumps(slots[value])
    if isinstance(value, KeyOf):
        key = value.signer(SigningKey.from_seed(bytes.fromhex(slots[OWN_SIGNER])))
        return json.dumps(key.node_id if value.part == "id" else b64(key.public))
    if isinstance(value, dict):
        items = (f"{json.dumps(k)}:{dumps(v, slots)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v, slots) for v in value) + "]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


Tagged = tuple[object, str]  # a field value and the verdict it earns


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each as often as its weight (one_of would merge repeats)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


def tag(strategy: st.SearchStrategy[Any], verdict: str) -> st.SearchStrategy[Tagged]:
    return strategy.map(lambda value: (value, verdict))


# --------------------------------------------------------------------------
# Field values, good and bad

node_ids = st.text("0123456789abcdef", min_size=32, max_size=32)
seeds = st.binary(min_size=32, max_size=32)
names = st.text(
    st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=MAX_NAME
).filter(lambda name: name_problem(name) is None)
texts = st.one_of(
    st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\n\x00"),
        min_size=1,
        max_size=200,
    ),
    st.just("t" * MAX_TEXT),
)
# Integers JSON allows and Python parses, small to huge.
huge = st.one_of(
    st.sampled_from([2**31, 2**53 + 1, 2**63, 2**64 + 1, 10**100]),
    st.integers(1, 4000).map(lambda digits: int("9" * digits)),
)
# More digits than Python's int() accepts: the node refuses the frame.
too_many_digits = st.integers(4301, 6000).map(lambda digits: Raw("9" * digits))
NOT_JSON = (Raw("NaN"), Raw("Infinity"), Raw("-Infinity"))
not_json = st.sampled_from(NOT_JSON)
deep = st.one_of(
    st.integers(1, 20_000).map(lambda depth: Raw("[" * depth + "]" * depth)),
    st.integers(1, 8_000).map(lambda depth: Raw('{"a":' * depth + "0" + "}" * depth)),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
not_a_string = st.one_of(st.none(), st.booleans(), st.integers(), st.lists(scalars, max_size=2))
not_an_int = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    too_many_digits,
    not_json,
    deep,
)
bad_node_ids = st.one_of(
    st.text(max_size=40).filter(lambda s: not is_node_id(s)),
    node_ids.map(str.upper).filter(lambda s: not is_node_id(s)),
    not_a_string,
)
bad_names = st.one_of(
    st.just(""),
    st.text("ab", min_size=MAX_NAME + 1, max_size=MAX_NAME + 8),
    st.tuples(names, st.characters(categories=["Cc"])).map(lambda p: p[0][:-1] + p[1]),
    st.just(Raw('"\\ud800"')),  # a lone surrogate: not text
    # Protocol 2 (§2): what could fake a line or hide in one.
    st.sampled_from([" bob", "bob ", "bob> hi <carol", "a\u200bb", "\u202ebob", "x\u2066y"]),
    not_a_string,
)
# Keys, signatures and nonces travel as base64url without padding (§2).
bad_keys = st.one_of(
    st.sampled_from(["", "x", "A" * 42, "A" * 44, "A" * 43 + "=", "+" * 43, "/" * 43]),
    seeds.map(lambda seed: b64(seed)[:-1] + "B"),  # its unused bits set: not canonical
    not_a_string,
)
bad_sigs = st.one_of(
    st.sampled_from(["", "x", "A" * 85, "A" * 87, "A" * 86 + "==", "+" * 86]),
    not_a_string,
)
bad_texts = st.one_of(
    st.sampled_from(["", "a\nb", "nul\x00", "t" * (MAX_TEXT + 1), Raw('"\\udfff"')]),
    not_a_string,
)
# Seqs are bounded by MAX_SEQ (docs/PROTOCOL.md): unbounded ones would let a
# remote inflate every later hello's `have` past MAX_FRAME.
big_seqs = st.one_of(st.sampled_from([2**31, MAX_SEQ]), st.integers(1, MAX_SEQ))
over_seqs = huge.filter(lambda n: n > MAX_SEQ)
good_seqs = st.one_of(st.integers(1, 100), big_seqs)
bad_seqs = st.one_of(st.integers(max_value=0), over_seqs, not_an_int)
good_ts = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**300), 10**300)
)
bad_ts = st.one_of(
    st.sampled_from([None, True, "now", Raw("1e999"), 10**400]),  # 10**400: no float holds it
    not_json,
)
good_nonces = st.one_of(st.integers(), huge, st.text(max_size=20))
bad_nonces = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2)
)
good_have = st.dictionaries(node_ids, st.one_of(st.integers(0, 100), big_seqs), max_size=4)
bad_have = st.one_of(
    not_a_string.filter(lambda v: not isinstance(v, dict)),
    st.dictionaries(bad_node_ids.filter(lambda k: isinstance(k, str)), st.just(1), min_size=1),
    st.dictionaries(
        node_ids, st.one_of(st.integers(max_value=-1), over_seqs, not_an_int), min_size=1
    ),
)
bad_addrs = st.one_of(
    st.sampled_from(["", "nocolon", "host:", ":80", "h:0", "h:65536", "h:99999999", "::1:80"]),
    st.text(max_size=20),
).filter(lambda addr: split_addr(addr) is None)  # never anything the node would dial


def depth_of(value: object) -> int:
    return value.text.count("[") + value.text.count("{") if isinstance(value, Raw) else 0


def _extra_verdict(fields: dict[str, object]) -> tuple[dict[str, object], str]:
    verdict = OK
    for value in fields.values():
        if value in NOT_JSON:
            return fields, BAD
        if depth_of(value) > DEEP:
            verdict = MAYBE
    return fields, verdict


# Unknown fields: ignored when they parse (§1).
extra_fields = st.dictionaries(
    st.text(max_size=8).map(lambda key: "x-" + key),
    weighted((4, json_values), (1, deep), (1, huge), (1, not_json)),
    max_size=3,
).map(_extra_verdict)


# --------------------------------------------------------------------------
# Frames: fields, one fault at most, and the verdict that earns


class Shape:
    """A frame type: how to draw its good fields, and the faults it may have."""

    # How often a frame is well-formed: mostly, so that cases get well into
    # an established connection before their first fault.
    CHOICES = st.sampled_from(["none"] * 10 + ["field", "field", "missing", "extra", "extra"])

    def __init__(
        self,
        good: st.SearchStrategy[dict[str, object]],
        faults: dict[str, st.SearchStrategy[Tagged]],
        required: list[str],
    ) -> None:
        self.good = good
        self.faults = faults
        self.fault_keys = st.sampled_from(sorted(faults)) if faults else None
        self.required = st.sampled_from(sorted(required)) if required else None

    def draw(self, draw: st.DrawFn) -> tuple[dict[str, object], str]:
        fields = dict(draw(self.good))
        choice = draw(self.CHOICES)
        if choice == "field" and self.fault_keys is not None:
            key = draw(self.fault_keys)
            fields[key], verdict = draw(self.faults[key])
            return fields, verdict
        if choice == "missing" and self.required is not None:
            del fields[draw(self.required)]
            return fields, BAD
        if choice == "extra":
            extra, verdict = draw(extra_fields)
            return {**fields, **extra}, verdict
        return fields, OK


HELLO = Shape(
    st.fixed_dictionaries(
        {
            "type": st.just("hello"),
            "proto": st.just(2),
            "node": st.just(OWN),
            "key": st.just(OWN_KEY),
            "nonce": seeds.map(b64),
            "name": names,
            "role": st.sampled_from(["peer", "hub"]),
            "have": good_have,
        },
        optional={"listen": st.one_of(st.none(), st.integers(0, 65535))},
    ),
    {
        "proto": st.one_of(
            tag(st.one_of(st.integers(), huge).filter(lambda n: n != 2), UNSUPPORTED),
            tag(not_an_int, BAD),
        ),
        # Another node's id, well-formed: not the id of this key (§2).
        "node": tag(st.one_of(bad_node_ids, node_ids), BAD),
        "key": tag(bad_keys, BAD),
        "nonce": tag(st.one_of(bad_keys, seeds.map(lambda seed: b64(seed[:16]))), BAD),
        "name": tag(bad_names, BAD),
        "role": tag(st.one_of(st.text(max_size=6), not_a_string), BAD).filter(
            lambda tagged: tagged[0] not in ("peer", "hub")
        ),
        "listen": tag(
            st.one_of(
                st.integers(max_value=-1),
                st.integers(min_value=65536),
                huge.filter(lambda n: n > 65535),
                not_an_int.filter(lambda v: v is not None),
            ),
            BAD,
        ),
        "have": tag(bad_have, BAD),
        "type": tag(not_a_string, BAD),
    },
    ["type", "proto", "node", "key", "nonce", "name", "role", "have"],
)


def event_shape(kind: str) -> Shape:
    """An event: its own (first hop) or another origin's, forwarded; signed
    when the line is rendered (``Line.sign`` says how well)."""
    kinds = st.just(kind) if kind != "unknown_event" else unknown_event_types
    good: dict[str, st.SearchStrategy[object]] = {
        "type": kinds,
        "seq": good_seqs,
        "ts": good_ts,
        "name": names,
    }
    faults = {
        "origin": tag(bad_node_ids, BAD),
        "key": tag(bad_keys, BAD),
        "seq": tag(bad_seqs, BAD),
        "ts": tag(bad_ts, BAD),
        "name": tag(bad_names, BAD),
    }
    if kind == "msg":
        good["text"] = texts
        faults["text"] = tag(bad_texts, BAD)
    elif kind == "lost":
        good["node"] = node_ids
        faults["node"] = tag(bad_node_ids, BAD)
    elif kind == "unknown_event":
        good["x-what"] = json_values  # whatever a later version puts in it

    def of(who: bytes | None) -> st.SearchStrategy[dict[str, object]]:
        # In make_event's order, so that a duplicate may take the fast path.
        fields = {"type": good["type"], "origin": st.just(KeyOf(who, "id")), **good}
        return st.fixed_dictionaries({**fields, "key": st.just(KeyOf(who, "key"))})

    whose = st.one_of(st.none(), seeds)  # its own, or another origin's it forwards
    required = [k for k in good if k not in ("type", "x-what")] + ["origin", "key"]
    if kind == "unknown_event":
        # Without origin or seq it is no event: a link-local frame, ignored (§4).
        required = [k for k in required if k not in ("origin", "seq")]
    return Shape(whose.flatmap(of), faults, required)


# An event kind this version does not know: shown by nobody, kept and
# forwarded (§4).
unknown_event_types = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10).filter(
    lambda t: t not in KNOWN_TYPES
)


def nonce_shape(kind: str) -> Shape:
    return Shape(
        st.fixed_dictionaries({"type": st.just(kind), "nonce": good_nonces}),
        {"nonce": tag(bad_nonces, BAD)},
        ["nonce"],
    )


peer_entries = st.fixed_dictionaries({"node": node_ids, "name": names, "addr": st.just(HERE)})
bad_peer_entries = st.one_of(
    scalars,
    st.fixed_dictionaries({"node": bad_node_ids, "name": names, "addr": bad_addrs}),
    st.fixed_dictionaries({"node": node_ids, "name": bad_names, "addr": bad_addrs}),
    st.fixed_dictionaries({"node": node_ids, "name": names, "addr": bad_addrs}),
)
SHAPES = {kind: event_shape(kind) for kind in [*sorted(EVENT_TYPES), "unknown_event"]} | {
    "hello": HELLO,
    # After the handshake an auth is ignored, if well-formed (§3).
    "auth": Shape(
        st.fixed_dictionaries({"type": st.just("auth"), "sig": seeds.map(lambda s: b64(s + s))}),
        {"sig": tag(bad_sigs, BAD)},
        ["sig"],
    ),
    "caught_up": Shape(st.just({"type": "caught_up"}), {}, []),
    "ping": nonce_shape("ping"),
    "pong": nonce_shape("pong"),
    "error": Shape(
        st.fixed_dictionaries(
            {"type": st.just("error"), "code": st.text(max_size=20)},
            optional={"message": json_values},  # any type; ignored unless text
        ),
        {"code": tag(not_a_string, BAD)},
        ["code"],
    ),
    # The only address offered is the node's own: it dials itself and gives
    # up, and nothing leaves this machine.
    "peers": Shape(
        st.fixed_dictionaries(
            {"type": st.just("peers"), "peers": st.lists(peer_entries, max_size=2)}
        ),
        {
            "peers": st.one_of(
                tag(not_a_string.filter(lambda v: not isinstance(v, list)), BAD),
                tag(st.lists(bad_peer_entries, min_size=1, max_size=2), BAD),
            )
        },
        ["peers"],
    ),
    "unknown": Shape(
        st.fixed_dictionaries(
            {"type": st.text(max_size=10).filter(lambda t: t not in KNOWN_TYPES)}
        ),
        {},
        [],
    ),
}


# --------------------------------------------------------------------------
# Lines: a frame's text, sometimes damaged at the byte level


@dataclass(frozen=True)
class Line:
    """One line to send, rendered when the case runs; ``data`` for garbage.

    An event (``event``) is signed as it is rendered, by the key its
    ``origin`` names, as ``sign`` says: ``good``; ``tamper`` (over other
    bytes), ``foreign`` (by another key): dropped, the link stays up;
    ``form`` (a signature of the wrong form), ``none``, ``first`` (not the
    last member): bad_frame (§4).
    """

    fields: dict[str, object] | None
    verdict: str
    damage: str = "none"
    at: float = 0.0  # where the damage goes, as a fraction of the line
    pad: int = 0  # "pad": the line's length less MAX_FRAME
    data: bytes = b""
    event: bool = False
    sign: str = "good"
    bad_sig: object = None  # the signature's value, for sign == "form"

    def render(self, slots: Slots, first: bool) -> tuple[bytes, str]:
        """The line's bytes with its ending, and the verdict they earn."""
        data, verdict = self._render(slots, first)
        # Too long is found before anything else is looked at (§1).
        if len(data) > MAX_FRAME:
            return data, TOO_LONG
        # A well-formed event past MAX_EVENT is padding, refused once parsed.
        body = data.removesuffix(b"\n").removesuffix(b"\r")
        if self.event and len(body) >= MAX_EVENT:
            return data, {OK: TOO_LONG, MAYBE: MAYBE_BIG}.get(verdict, verdict)
        return data, verdict

    def _render(self, slots: Slots, first: bool) -> tuple[bytes, str]:
        if self.fields is None:
            return self.data + b"\n", self.verdict
        text = dumps(self.fields, slots).encode("utf-8", "surrogatepass")
        if self.damage == "pad":
            # An unknown member that brings the line to MAX_FRAME + pad bytes.
            short = self._signed(_padded(text, 0), slots)
            text = _padded(text, max(MAX_FRAME + self.pad - len(short) - 1, 0))
        line = self._signed(text, slots)
        if self.damage == "crlf":
            return line + b"\r\n", self.verdict
        if self.damage == "cut":
            # Any proper prefix of an object's text is not JSON.
            return line[: 1 + int(self.at * (len(line) - 2))] + b"\n", BAD
        if self.damage == "utf8":
            # 0xFF is never UTF-8; never first on a first line (that would
            # make it a plain-text client).
            at = 1 + int(self.at * len(line)) if first else int(self.at * (len(line) + 1))
            return line[:at] + b"\xff" + line[at:] + b"\n", BAD
        return line + b"\n", self.verdict

    def _signed(self, text: bytes, slots: Slots) -> bytes:
        """An event's text with its ``sig`` member (§4); other frames as they are."""
        if not self.event or self.sign == "none":
            return text
        prefix = text[:-1]  # without its closing brace
        if self.sign == "form":
            return prefix + b',"sig":' + dumps(self.bad_sig, slots).encode() + b"}"
        own = SigningKey.from_seed(bytes.fromhex(slots[OWN_SIGNER]))
        signer = own  # the key its origin names (it may be missing or faulty)
        for member in ("origin", "key"):
            value = (self.fields or {}).get(member)
            if isinstance(value, KeyOf):
                signer = value.signer(own)
        message = EVENT_CONTEXT + prefix
        if self.sign == "tamper":
            message += b" "  # what it signed is not what it sends
        elif self.sign == "foreign":
            signer = SigningKey.from_seed(hashlib.sha256(signer.seed()).digest())
        sig = b64(signer.sign(message)).encode()
        if self.sign == "first":
            return b'{"sig":"' + sig + b'",' + text[1:]
        return prefix + b',"sig":"' + sig + b'"}'


def _padded(text: bytes, size: int) -> bytes:
    comma = b"," if len(text) > 2 else b""
    return text[:-1] + comma + b'"x-pad":"' + b"p" * size + b'"}'


DAMAGE = st.sampled_from(["none"] * 12 + ["crlf", "cut", "utf8", "pad"])
SIGNS = st.sampled_from(["good"] * 12 + ["tamper", "foreign", "form", "none", "first"])
fractions = st.integers(0, 999).map(lambda n: n / 1000)
pads = st.one_of(st.integers(-2, 2), st.integers(-40, 40))  # mostly right at the limit
EVENT_SHAPES = frozenset([*EVENT_TYPES, "unknown_event"])


def json_lines(*kinds: str) -> st.SearchStrategy[Line]:
    """Lines of frames of these types."""
    kind = st.sampled_from(kinds)

    @st.composite
    def lines(draw: st.DrawFn) -> Line:
        shape = draw(kind)
        fields, verdict = SHAPES[shape].draw(draw)
        line = Line(fields, verdict, draw(DAMAGE), draw(fractions), draw(pads))
        if shape not in EVENT_SHAPES:
            return line
        sign = draw(SIGNS)
        if shape == "unknown_event" and sign == "none":
            sign = "good"  # (without a sig it is no event: a link frame, ignored)
        if sign in ("form", "none", "first"):
            verdict = BAD  # a signature is the last member, of its form (§4)
        bad = draw(bad_sigs) if sign == "form" else None
        return dataclasses.replace(line, verdict=verdict, event=True, sign=sign, bad_sig=bad)

    return lines()


def not_an_object(data: bytes) -> bool:
    try:
        return not isinstance(json.loads(data.decode()), dict)
    except (ValueError, RecursionError):
        return True


garbage_lines = (
    st.one_of(
        st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")),
        json_values.map(lambda v: dumps(v, {}).encode()),  # JSON, but not an object
    )
    .filter(not_an_object)
    .map(lambda data: Line(None, BAD, data=data))
)
first_lines = json_lines("hello")
later_lines = weighted(
    (8, json_lines(*sorted(EVENT_TYPES))),
    (2, json_lines("unknown_event")),
    (4, json_lines("ping", "pong", "error", "peers", "unknown", "auth", "caught_up")),
    # A well-formed hello after the handshake is ignored; one of another
    # protocol is unsupported_protocol wherever it comes (§3).
    (1, first_lines),
    (2, garbage_lines),
)


# --------------------------------------------------------------------------
# Cases

# How a case answers the node's proof (§3): the right proof, one over other
# bytes, the proof of the other side (a replay of the node's own kind), a
# signature of the wrong form, another frame in its place.
AUTHS = st.sampled_from(["good"] * 10 + ["wrong", "replayed", "form", "other"])
AUTH_VERDICTS = {
    "good": OK,
    "wrong": AUTH_FAILED,
    "replayed": AUTH_FAILED,
    "form": BAD,
    "other": BAD,
}


@dataclass(frozen=True)
class Case:
    """What one connection sends: a hello, an auth and more JSON lines; or
    any bytes."""

    lines: tuple[Line, ...] = ()
    raw: bytes = b""
    cuts: tuple[float, ...] = ()  # where the payload is cut into sends, as fractions
    seed: bytes = bytes(32)  # the case's own run key (JSON cases)
    auth: str = "good"

    @property
    def is_json(self) -> bool:
        return bool(self.lines)

    def render(self, port: int, seen: Callable[[str, int], bool]) -> Rendered:
        """The bytes to send, and what may come of them.

        ``seen(origin, seq)``: whether the node has that event already. A
        line that begins as trio-chat writes an event and names one it has
        (or one sent earlier in this case) may be dropped unparsed, not
        refused (docs/PROTOCOL.md, "Duplicates").
        """
        if not self.lines:
            return Rendered(self.raw, self._chunks(self.raw))
        slots = {OWN_SIGNER: self.seed.hex(), HERE: f"127.0.0.1:{port}"}
        hello, first = self.lines[0].render(slots, True)
        lines = []
        verdicts = [first, AUTH_VERDICTS[self.auth]]
        sent: set[tuple[str, int]] = set()
        errors = 0
        for line in self.lines[1:]:
            data, verdict = line.render(slots, False)
            if verdict == OK and line.fields and line.fields.get("type") == "error":
                errors += 1
                if errors == 2:
                    verdict = CLOSED  # the node closes a link that errs twice
            if (head := EVENT_HEAD.match(data)) and len(head[2]) <= 100:
                key = (head[1].decode("utf-8", "replace"), int(head[2]))
                # (Past MAX_FRAME a line is too long before it is anything
                # else, a duplicate included: §1.)
                if verdict != OK and (key in sent or seen(*key)) and len(data) <= MAX_FRAME:
                    verdict = DUP_BIG if verdict == TOO_LONG else MAYBE
                sent.add(key)
            lines.append(data)
            verdicts.append(verdict)
        payload = b"".join(lines)
        return Rendered(
            payload,
            self._chunks(payload),
            first,
            outcomes_of(verdicts),
            self._chunks(hello),
            hello.removesuffix(b"\n").removesuffix(b"\r"),
            SigningKey.from_seed(self.seed),
            self.auth,
        )

    def _chunks(self, payload: bytes) -> list[bytes]:
        edges = sorted({0, len(payload), *(int(f * len(payload)) for f in self.cuts)})
        return [payload[a:b] for a, b in itertools.pairwise(edges)]


# How a line that may be a duplicate begins: as make_event writes an event
# (wider than the node's own test, so that whatever it drops unparsed is
# allowed for).
EVENT_HEAD = re.compile(rb'\{"type":"[^"]*","origin":"([^"]*)","seq":(\d+)')


@dataclass(frozen=True)
class Rendered:
    payload: bytes  # (JSON cases: what follows the handshake)
    chunks: list[bytes]
    first: str = OK  # verdict of the first line (JSON cases)
    outcomes: frozenset[str] = frozenset()  # what may happen (JSON cases)
    hello: list[bytes] = field(default_factory=list)  # the hello's chunks
    hello_raw: bytes = b""  # what the proofs cover of it
    key: SigningKey | None = None
    auth: str = "good"

    def auth_line(self, theirs: Hello) -> bytes:
        """Our answer to the node's hello and proof, as the case says."""
        assert self.key is not None
        if self.auth == "form":
            return b'{"type":"auth","sig":"not a signature"}\n'
        if self.auth == "other":
            return encode(Ping("not an auth"))
        side, mine = "dialler", self.hello_raw
        if self.auth == "wrong":
            mine += b" "
        elif self.auth == "replayed":
            side = "acceptor"
        return encode(Auth(self.key.sign(proof_message(side, mine, theirs.raw))))


def outcomes_of(verdicts: list[str]) -> frozenset[str]:
    """What may happen when the node reads lines of these verdicts in order."""
    possible = set()
    for verdict in verdicts:
        if verdict == OK:
            continue
        if verdict == MAYBE:
            possible.add(BAD)
            continue
        if verdict == DUP_BIG:
            possible.add(TOO_LONG)
            continue
        if verdict == MAYBE_BIG:
            possible.update((BAD, TOO_LONG))
            return frozenset(possible)
        possible.add(verdict)
        return frozenset(possible)
    return frozenset(possible | {OPEN})


cuts = st.lists(fractions, max_size=6).map(tuple)


@st.composite
def json_cases(draw: st.DrawFn) -> Case:
    first = draw(first_lines)
    lines = [first]
    if first.verdict == OK:  # (padding can still make it too long)
        lines += draw(st.lists(later_lines, min_size=1, max_size=8))
    return Case(tuple(lines), cuts=draw(cuts), seed=draw(seeds), auth=draw(AUTHS))


raw_payloads = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=300).map(str.encode),
    st.binary(max_size=200).map(lambda b: b"{" + b),
).filter(lambda b: b.count(b"\n") <= 30)  # under the burst of 50 lines
raw_cases = st.builds(Case, raw=raw_payloads, cuts=cuts)
cases = weighted((3, json_cases()), (1, raw_cases))


# --------------------------------------------------------------------------
# Running one case against the node

PLAIN_LINE = re.compile(rb"(\?\?:\?\?:\?\?|\d\d:\d\d:\d\d) |\*\*\* ")


async def send_chunks(stream: trio.abc.SendStream, chunks: list[bytes]) -> None:
    """Each chunk in its own send; the node closing the connection ends it."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        for chunk in chunks:
            await stream.send_all(chunk)


async def handshake(client: Client, case: Rendered) -> None:
    """The hello; if the node answers with its hello and proof, check the
    proof and give ours (as the case says), then the rest of the case."""
    stream = client.stream
    await send_chunks(stream, case.hello)
    await client.until(lambda: client.ended.is_set() or len(client.frames) >= 2)
    if client.ended.is_set():
        return
    theirs, proof = client.frames[:2]
    assert isinstance(theirs, Hello), client.frames
    assert isinstance(proof, Auth), client.frames
    # The node's own proof holds, over both hellos (§3).
    assert verify(theirs.key, proof.sig, proof_message("acceptor", case.hello_raw, theirs.raw))
    await send_chunks(stream, [case.auth_line(theirs)])
    await send_chunks(stream, case.chunks)


async def run_json_case(client: Client, case: Rendered, probe: str) -> str:
    """Send a JSON case; what happened: OPEN or the error code the node sent."""
    stream = client.stream
    assert isinstance(stream, trio.SocketStream)
    await handshake(client, case)
    if OPEN in case.outcomes:
        await send_chunks(stream, [encode(Ping(probe))])
    pong = Pong(probe)
    await client.until(lambda: client.ended.is_set() or pong in client.frames)
    frames = client.frames
    errors = [i for i, f in enumerate(frames) if isinstance(f, Error)]
    if pong in frames:
        assert errors == [], frames
        assert isinstance(frames[0], Hello), frames
        # Harmless: the node keeps it open until we close our side.
        await stream.send_eof()
        await client.ended.wait()
        assert not any(isinstance(f, Error) for f in client.frames), client.frames
        return OPEN
    if not errors and CLOSED in case.outcomes:
        return CLOSED  # it erred twice: closed without a word
    # Closed: the error is the node's last word, and there is one.
    assert errors == [len(frames) - 1], frames
    last = frames[-1]
    assert isinstance(last, Error)
    if isinstance(frames[0], Hello):
        assert case.first in (OK, MAYBE), frames
    else:
        # To a first line that is not a well-formed hello of protocol 2,
        # the error alone (§3).
        assert case.first in (BAD, TOO_LONG, MAYBE, UNSUPPORTED), frames
        assert len(frames) == 1, frames
    return last.code


async def run_raw_case(port: int, case: Rendered) -> None:
    """Send anything, close our side, read to the end: the node must close too."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await send_chunks(stream, case.chunks)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_eof()
        received = b""
        with contextlib.suppress(trio.BrokenResourceError):
            while data := await stream.receive_some(65536):
                received += data
    lines = received.splitlines()
    if case.payload.startswith(b"\x16"):
        # A TLS record to an open group: one JSON error naming why (§8).
        assert len(lines) == 1, received
        assert json.loads(lines[0])["code"] == UNSUPPORTED, received
    elif case.payload.startswith(b"{"):
        # A JSON first line that cannot be a hello: the error alone, or
        # nothing if it never ended.
        assert len(lines) <= 1, received
        if lines:
            error = json.loads(lines[0])
            assert error["type"] == "error", received
            assert error["code"] in (BAD, TOO_LONG), received
    else:
        # A plain-text client: plain text only, never JSON (§9).
        for line in lines:
            assert PLAIN_LINE.match(line), received


@dataclass
class Fuzz:
    """The node under test, the honest pair, and what has been seen so far."""

    handle: NodeHandle
    alice: Client
    bob: Client
    examples: int = 0
    rounds: int = 0
    seen: Counter[str] = field(default_factory=Counter)  # outcomes, for the report

    async def run_case(self, case: Case) -> None:
        node = self.handle.node
        honest = set(node.connections)  # alice's and bob's: the rest are this case's
        self.examples += 1
        rendered = case.render(self.handle.port, lambda o, n: not node.sequencer.is_new(o, n))
        try:
            with trio.fail_after(CASE_TIMEOUT):
                if case.is_json:
                    client = await Client.connect(self.handle.port, "fuzz", check_order=False)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(client.read_all)
                        outcome = await run_json_case(client, rendered, f"probe {self.examples}")
                        await client.aclose()
                    assert outcome in rendered.outcomes, f"got {outcome}"
                    self.seen[outcome] += 1
                else:
                    await run_raw_case(self.handle.port, rendered)
                    self.seen["raw"] += 1
                # Every connection of this case is closed at the node, too.
                await self.handle.until(lambda: set(node.connections) == honest)
        except (AssertionError, trio.TooSlowError) as exc:
            # What the node made of it, for the report hypothesis prints.
            mine = [c for c in node.connections if c not in honest]
            links = [(str(c.closing or "open"), c.decoder.buffered) for c in mine]
            raise AssertionError(
                f"{exc!r}\nexpected {sorted(rendered.outcomes) or 'the node to close'};"
                f" node's connections (close reason, bytes buffered): {links};"
                f" hello ({rendered.first}) {b''.join(rendered.hello)[:300]!r},"
                f" auth {rendered.auth};"
                f" payload {len(rendered.payload)} bytes: {rendered.payload[:600]!r}"
            ) from exc
        self.handle.forget()  # a long run must not keep every closed connection
        if self.examples % HONEST_EVERY == 0:
            await self.honest_round()

    async def honest_round(self) -> None:
        """Alice and Bob still hear each other."""
        self.rounds += 1
        n = self.rounds
        alice, bob = self.alice, self.bob
        with trio.fail_after(CASE_TIMEOUT):
            await alice.say(f"round {n} from alice")
            await bob.say(f"round {n} from bob")
            await bob.until(lambda: bob.msgs[alice.id] == n)
            await alice.until(lambda: alice.msgs[bob.id] == n)
        for client in (alice, bob):
            assert not client.ended.is_set()
            assert client.errors() == []


def run_property(fuzz: Fuzz) -> None:
    """Hypothesis's loop, in a worker thread; each case runs on the trio loop."""

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=cases)
    def node_survives(case: Case) -> None:
        trio.from_thread.run(fuzz.run_case, case)

    node_survives()


async def test_fuzzed_connections_never_hurt_the_node_or_the_honest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="chat")
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60 + FUZZ_EXAMPLES * 0.1):
            # A small history: every fuzzing peer is sent the catch-up.
            handle = await start_node(
                nursery,
                Config(
                    name="target",
                    history=20,
                    max_per_address=0,
                    max_text_per_address=0,
                    join_rate=0,
                ),
            )
            alice, bob = [
                await Client.connect(handle.port, name, keep_events=False, check_order=False)
                for name in ("alice", "bob")
            ]
            for client in (alice, bob):
                await client.handshake()
                await client.send(client.event("join").raw)
                nursery.start_soon(client.read_all)
            fuzz = Fuzz(handle, alice, bob)
            await fuzz.honest_round()

            await trio.to_thread.run_sync(run_property, fuzz)

            await fuzz.honest_round()
            assert fuzz.examples >= FUZZ_EXAMPLES
            assert not handle.finished.is_set()  # still running
            internal = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert internal == []
            router = handle.node.router
            print(
                f"fuzz: {fuzz.examples} cases, {fuzz.rounds} honest rounds, outcomes {fuzz.seen};"
                f" {router.signature_checks} signatures checked, {router.bad_signatures} dropped"
            )
            # Tampered and foreign-signed events reached the check and were dropped.
            assert router.bad_signatures > 0 or FUZZ_EXAMPLES < 500

            handle.node.stop()
            await handle.finished.wait()
            for client in (alice, bob):
                await client.ended.wait()
                assert handle.id in client.left
        nursery.cancel_scope.cancel()
