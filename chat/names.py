"""What a name and a message may be, and when two names look alike (no I/O).

A name is a label people read beside a line, so it must not be able to
fake one (docs/PROTOCOL.md §2): 1 to 32 characters, in Unicode NFC, with
no ``<`` or ``>``, no leading or trailing space, and no character that
shows as nothing or reorders text (controls, format characters such as
zero-width spaces and bidi marks, line and paragraph separators,
surrogates). Two names *look alike* when their skeletons are equal: case
folded (NFKC), with a documented subset of Unicode's confusables mapped to
the Latin letter they imitate (:data:`CONFUSABLES`).
"""

from __future__ import annotations

import unicodedata
from typing import Final

MAX_TEXT: Final = 4096  # characters of a message text (§4)
MAX_NAME: Final = 32  # characters of a display name (§2)

_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"})

# Letters that imitate Latin ones (Cyrillic, Greek, Armenian, ...), and
# digits that pass for letters: a subset of Unicode's confusables.txt, the
# part that makes a Latin name look the same in a terminal.
CONFUSABLES: Final = {
    # Cyrillic
    "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "і": "i", "ј": "j",
    "к": "k", "ӏ": "l", "м": "m", "н": "h", "о": "o", "р": "p", "ԛ": "q", "ѕ": "s",
    "т": "t", "у": "y", "ԝ": "w", "х": "x", "ү": "y", "ɡ": "g", "ո": "n", "ս": "u",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w",
    # Latin look-alikes and digits
    "ı": "i", "ℓ": "l", "0": "o", "1": "l", "|": "l", "5": "s", "$": "s", "@": "a",
}  # fmt: skip
_SEQUENCES: Final = (("rn", "m"), ("vv", "w"), ("cl", "d"))  # two letters read as one


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a display name (§2), or None if it can."""
    if not 1 <= len(name) <= MAX_NAME:
        return f"a name has 1 to {MAX_NAME} characters (this one has {len(name)})"
    if name.isascii() and name.isprintable():  # most names: no invisible, already NFC
        if "<" in name or ">" in name:
            return "a name cannot contain < or >"
        return "a name cannot begin or end with a space" if name != name.strip() else None
    if not _encodable(name):
        return "a name must be valid Unicode text"
    if any(unicodedata.category(c) in _INVISIBLE for c in name):
        return "a name cannot contain control, invisible or direction characters"
    if "<" in name or ">" in name:
        return "a name cannot contain < or >"
    if name != name.strip():
        return "a name cannot begin or end with a space"
    if unicodedata.normalize("NFC", name) != name:
        return "a name must be in Unicode NFC form"
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


def skeleton(name: str) -> str:
    """What ``name`` looks like: names with equal skeletons are told apart."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    out = "".join(CONFUSABLES.get(c, c) for c in folded)
    for pair, letter in _SEQUENCES:
        out = out.replace(pair, letter)
    return out


def _encodable(text: str) -> bool:
    # JSON escapes like "\ud800" decode to lone surrogates, which no terminal
    # or UTF-8 stream can carry.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
