"""Tests of the transcript lines and JSON objects (PROTOCOL.md §9)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.keys import SigningKey, fingerprint
from chat.members import Entry, Membership, tag
from chat.protocol import Event, EventKind, make_event
from chat.render import as_json, clock, describe, line, safe
from chat.state import Gap

KEYS = [SigningKey.from_seed(bytes([n]) * 32) for n in (1, 2, 3)]
A, B, C = (key.node_id for key in KEYS)
BY_ID = {key.node_id: key for key in KEYS}
A_TAG, B_TAG = (tag(fingerprint(key.public)) for key in KEYS[:2])  # for look-alike names
# 12:34:56.789 UTC, on the first day of the epoch.
TS = 12 * 3600 + 34 * 60 + 56.789


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Render in UTC so that the expected times are fixed."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def event(
    kind: EventKind,
    origin: str = A,
    seq: int = 1,
    name: str = "alice",
    *,
    text: str = "",
    node: str = "",
    ts: float = TS,
) -> Event:
    return make_event(kind, BY_ID[origin], seq, ts, name, text=text, node=node)


def entry_of(ev: Event, who: str = "", history: bool = False, text: str = "") -> Entry:
    return Entry(
        ev.kind,
        ev.ts,
        who or ev.name,
        text or ev.text,
        history=history,
        event=ev,
        origin=ev.origin,
    )


# --------------------------------------------------------------------------
# Lines (§9)


def test_msg_line() -> None:
    assert line(entry_of(event("msg", text="hello world"))) == "12:34:56 <alice> hello world"


def test_join_left_lost_lines() -> None:
    assert line(entry_of(event("join"))) == "12:34:56 *** alice joined"
    assert line(entry_of(event("leave", seq=4))) == "12:34:56 *** alice left"
    lost = event("lost", origin=B, seq=2, name="hub", node=A)
    # The line names the node that vanished, not the reporter.
    assert line(entry_of(lost, who="alice")) == "12:34:56 *** alice lost"


def test_nick_line() -> None:
    nick = event("nick", seq=3, name="alice2")
    assert line(entry_of(nick, who="alice", text="alice2")) == (
        "12:34:56 *** alice is now known as alice2"
    )


def test_gap_line() -> None:
    gap = Entry("gap", TS, "alice", missed=3, origin=A)
    assert line(gap) == "12:34:56 *** 3 messages from alice were missed"
    one = Entry("gap", TS, "bob", missed=1, origin=B)
    assert line(one) == "12:34:56 *** 1 messages from bob were missed"


def test_history_mark() -> None:
    msg = event("msg", text="earlier")
    assert line(entry_of(msg, history=True)) == "12:34:56 [history] <alice> earlier"
    assert line(entry_of(event("join"), history=True)) == "12:34:56 [history] *** alice joined"
    gap = Entry("gap", TS, "alice", missed=2, history=True, origin=A)
    assert line(gap) == "12:34:56 [history] *** 2 messages from alice were missed"


def test_describe_is_the_line_after_the_time() -> None:
    assert describe(entry_of(event("msg", text="x"))) == "<alice> x"
    assert describe(entry_of(event("join"), history=True)) == "*** alice joined"


def test_disambiguated_name_in_lines() -> None:
    msg = event("msg", text="hi", name="bob")
    assert line(entry_of(msg, who="bob#abcd")) == "12:34:56 <bob#abcd> hi"


def test_time_is_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "XST-2")  # POSIX: two hours east of UTC
    time.tzset()
    assert line(entry_of(event("join"))) == "14:34:56 *** alice joined"
    monkeypatch.setenv("TZ", "YST+5")
    time.tzset()
    assert clock(TS) == "07:34:56"


def test_clock() -> None:
    assert clock(0) == "00:00:00"
    assert clock(TS) == "12:34:56"
    assert clock(86399.999) == "23:59:59"
    assert clock(1763700000.123) == "04:40:00"


@pytest.mark.parametrize("ts", [float("inf"), float("-inf"), float("nan"), 1e300, -1e300])
def test_absurd_times_do_not_break_a_line(ts: float) -> None:
    assert clock(ts) == "??:??:??"
    assert line(entry_of(event("msg", text="hi", ts=ts))) == "??:??:?? <alice> hi"


def test_message_text_keeps_spacing() -> None:
    msg = event("msg", text="  two  spaces  ")
    assert line(entry_of(msg)) == "12:34:56 <alice>   two  spaces  "


# --------------------------------------------------------------------------
# Control characters


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text", "plain text"),
        ("\x1b[2J\x1b[31mred", "␛[2J␛[31mred"),
        ("bell\x07", "bell␇"),
        ("back\x08space", "back␈space"),
        ("cr\rover", "cr␍over"),
        ("nul\x00", "nul␀"),
        ("lf\n", "lf␊"),
        ("del\x7f", "del␡"),
        ("csi\x9b31m", "csi\ufffd31m"),
        ("nel\x85", "nel\ufffd"),
        ("unit\x1f", "unit␟"),
        ("émoji 🦀 ok", "émoji 🦀 ok"),
    ],
)
def test_safe(text: str, shown: str) -> None:
    assert safe(text) == shown


def test_control_characters_are_visible_in_lines() -> None:
    msg = event("msg", text="\x1b]0;pwned\x07\x1b[2J\r")
    assert line(entry_of(msg)) == "12:34:56 <alice> ␛]0;pwned␇␛[2J␍"
    nick = event("nick", seq=2, name="evil")
    assert line(entry_of(nick, who="a\x1bb", text="c\x9bd")) == (
        "12:34:56 *** a␛b is now known as c\ufffdd"
    )
    gap = Entry("gap", TS, "x\x1b", missed=2, origin=A)
    assert line(gap) == "12:34:56 *** 2 messages from x␛ were missed"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=50), st.text(max_size=20), st.booleans())
def test_no_line_carries_a_terminal_control(text: str, who: str, history: bool) -> None:
    for kind in ("msg", "nick", "join", "leave", "lost", "gap"):
        rendered = line(Entry(kind, TS, who, text, missed=1, history=history))
        assert not any((ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) <= 0x9F for c in rendered), (
            rendered
        )


# --------------------------------------------------------------------------
# JSON objects


def test_as_json_msg() -> None:
    msg = event("msg", seq=2, text="hi")
    out = as_json(entry_of(msg))
    assert "\n" not in out
    assert json.loads(out) == {
        "type": "msg",
        "origin": A,
        "seq": 2,
        "ts": TS,
        "name": "alice",
        "text": "hi",
        "history": False,
    }


@pytest.mark.parametrize("kind", ["join", "nick", "leave"])
def test_as_json_plain_events(kind: EventKind) -> None:
    ev = event(kind, seq=3)
    assert json.loads(as_json(entry_of(ev, history=True))) == {
        "type": kind,
        "origin": A,
        "seq": 3,
        "ts": TS,
        "name": "alice",
        "history": True,
    }


def test_as_json_lost() -> None:
    lost = event("lost", origin=B, seq=5, name="hub", node=A)
    assert json.loads(as_json(entry_of(lost, who="alice"))) == {
        "type": "lost",
        "origin": B,
        "seq": 5,
        "ts": TS,
        "name": "hub",
        "node": A,
        "history": False,
    }


def test_as_json_gap() -> None:
    gap = Entry("gap", TS, "alice", missed=3, origin=A)
    assert json.loads(as_json(gap)) == {"type": "gap", "origin": A, "name": "alice", "missed": 3}


def test_as_json_keeps_the_protocol_values_unescaped_for_the_reader() -> None:
    msg = event("msg", text="\x1b[31m héllo 🦀", name="zoë")
    out = as_json(entry_of(msg))
    assert "héllo 🦀" in out
    assert "zoë" in out
    assert "\x1b" not in out  # JSON escapes control characters
    assert json.loads(out)["text"] == "\x1b[31m héllo 🦀"


def test_as_json_is_strict_json() -> None:
    out = as_json(entry_of(event("msg", text="x")))

    def refuse(name: str) -> None:
        raise ValueError(name)

    assert json.loads(out, parse_constant=refuse)["type"] == "msg"


# --------------------------------------------------------------------------
# Membership and render together: what a transcript shows


def test_transcript_of_a_session() -> None:
    members = Membership()
    deliveries: list[Event | Gap] = [
        event("join", A, 1, "bob", ts=TS - 60),
        event("msg", A, 2, "bob", text="before you came", ts=TS - 30),
        event("join", B, 1, "bob", ts=TS),
        event("msg", A, 3, "bob", text="two bobs", ts=TS + 1),
        event("nick", B, 2, "robert", ts=TS + 2),
        Gap(A, "bob", 2, TS + 3),
        event("msg", A, 6, "bob", text="back", ts=TS + 3),
        event("lost", C, 1, "hub", node=A, ts=TS + 4),
        event("lost", B, 3, "robert", node=A, ts=TS + 4),
        event("leave", A, 7, "bob", ts=TS + 5),
        event("leave", B, 4, "robert", ts=TS + 6),
    ]
    lines = []
    for d in deliveries:
        entry = members.apply(d, history=d.ts < TS)
        if entry is not None:
            lines.append(line(entry))
    assert lines == [
        "12:33:56 [history] *** bob joined",
        "12:34:26 [history] <bob> before you came",
        f"12:34:56 *** bob~{B_TAG} joined",
        f"12:34:57 <bob~{A_TAG}> two bobs",
        f"12:34:58 *** bob~{B_TAG} is now known as robert",
        "12:34:59 *** 2 messages from bob were missed",
        "12:34:59 <bob> back",
        "12:35:00 *** bob lost",
        "12:35:02 *** robert left",
    ]
