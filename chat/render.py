"""Turning chat entries into transcript lines and JSON objects (§9).

Pure functions: the non-interactive peer, plain-text clients and the
interactive UI all show the chat through these, so they agree.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from chat.members import Entry

# C0 and C1 controls but tab, DEL, and the bidi embeddings, overrides and
# isolates that reorder what follows them on the line.
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe(text: str) -> str:
    """``text`` with control characters made visible.

    The protocol lets a message carry any character but newline and NUL; an
    escape sequence from a remote must not drive the reader's terminal, so
    C0/C1 controls are shown as Unicode control pictures (ESC as ␛), and
    bidi controls that would reorder the rest of a line as U+FFFD.
    """
    return _UNSAFE.sub(_picture, text)


def _picture(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)
    return "\u2421" if code == 0x7F else "\ufffd"  # DEL; C1 and bidi controls


def clock(ts: float) -> str:
    """``HH:MM:SS`` in the local time zone; absurd times shown as ``??:??:??``."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(ts))
    except (OverflowError, OSError, ValueError):
        return "??:??:??"


def describe(entry: Entry) -> str:
    """The part of a transcript line after the time (and history mark)."""
    who = safe(entry.who)
    kind = entry.kind
    if kind == "msg":
        if entry.action:
            return f"* {who} {safe(entry.text)}"
        return f"<{who}> {safe(entry.text)}"
    if kind == "pm":
        if entry.outgoing:
            return f"-> {who}: {safe(entry.text)}"
        return f"[private] <{who}> {safe(entry.text)}"
    if kind == "join":
        return f"*** {who} joined"
    if kind == "leave":
        return f"*** {who} left"
    if kind == "lost":
        return f"*** {who} lost"
    if kind == "nick":
        return f"*** {who} is now known as {safe(entry.text)}"
    if kind == "gap":
        return f"*** {entry.missed} messages from {who} were missed"
    if kind == "warning":
        return f"*** warning: {safe(entry.text)}"
    return f"*** {who}: {kind}"


def sent(entry: Entry) -> str:
    """The mark of a line shown at its arrival time: ``(sent 09:14:02) ``, or ""."""
    if entry.sent is None:
        return ""
    try:
        claimed = time.localtime(entry.sent)
        if claimed[:3] == time.localtime(entry.ts)[:3]:
            when = time.strftime("%H:%M:%S", claimed)
        else:
            when = time.strftime("%Y-%m-%d %H:%M", claimed)
    except (OverflowError, OSError, ValueError):
        when = "??"
    return f"(sent {when}) "


def line(entry: Entry) -> str:
    """One transcript line, without newline: ``HH:MM:SS [history] ...``."""
    mark = "[history] " if entry.history else ""
    return f"{clock(entry.ts)} {mark}{sent(entry)}{describe(entry)}"


def as_json(entry: Entry) -> str:
    """One JSON object for ``--json`` output: protocol fields plus ``history``."""
    obj: dict[str, Any]
    if entry.kind == "warning":
        obj = {"type": "warning", "origin": entry.origin, "name": entry.who, "text": entry.text}
    elif entry.event is None:
        obj = {"type": "gap", "origin": entry.origin, "name": entry.who, "missed": entry.missed}
    else:
        obj = entry.event.fields()
        if entry.subject:
            # A client gone with its host: a lost line about it (its node id),
            # from the same report (origin, seq, name), naming the host.
            host = obj.get("node", entry.origin) if obj["type"] == "lost" else entry.origin
            obj.update(type="lost", node=entry.subject, hosted_by=host)
        obj["history"] = entry.history
        if entry.sent is not None:
            obj["shown_at"] = entry.ts  # its ts was too far off this node's clock
        if entry.kind == "pm" and entry.shown:  # opened here: the text, and with whom
            obj.update(text=entry.text, private_with=entry.who, outgoing=entry.outgoing)
    if entry.fingerprint:
        obj["fingerprint"] = entry.fingerprint
    return json.dumps(obj, ensure_ascii=False)
