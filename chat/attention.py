"""What deserves a person's attention: mentions, the bell, people ignored (no I/O).

A line *mentions* you when your name, or a word of ``--highlight``, is in
someone else's live line as a whole word, case-insensitively. The bell
rings for mentions (``/bell mentions``, the default), for every line from
others (``/bell all``) or never (``/bell off``); never for history, your
own lines or ignored people, and at most once a second. ``/ignore`` hides
an identity (by fingerprint, so a ``/nick`` does not escape it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from chat.members import Entry

BELL_MODES = ("off", "mentions", "all")
BELL_EVERY = 1.0  # seconds between two bells, at least
LOUD = frozenset({"msg", "pm"})  # the lines a bell may ring for


def _words(words: Iterable[str]) -> re.Pattern[str] | None:
    alternatives = "|".join(re.escape(w) for w in words if w)
    # A whole word: not preceded or followed by a letter, a digit or "_".
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.I) if alternatives else None


@dataclass
class Attention:
    """The person's name and highlight words, the bell mode, the ignored."""

    name: Callable[[], str]  # the person's current name
    highlights: tuple[str, ...] = ()
    bell: str = "mentions"
    ignored: dict[str, str] = field(default_factory=dict)  # fingerprint -> name when ignored
    mentions: int = 0  # since the person last typed (the toolbar)
    _last_bell: float = -BELL_EVERY
    _pattern: tuple[str, re.Pattern[str] | None] = ("", None)

    def _matcher(self) -> re.Pattern[str] | None:
        name = self.name()
        if self._pattern[0] != name:
            self._pattern = (name, _words((name, *self.highlights)))
        return self._pattern[1]

    def hidden(self, entry: Entry) -> bool:
        """A line of someone ignored (their join, nick, messages and private ones)."""
        return bool(entry.fingerprint) and entry.fingerprint in self.ignored

    def mentioned(self, entry: Entry, own: str) -> bool:
        """Whether ``entry`` is someone else's live line that mentions you.

        Private messages to you count as mentions: they are meant for you.
        """
        if entry.kind not in LOUD or entry.history or entry.origin == own or entry.outgoing:
            return False
        if entry.kind == "pm":
            return True
        matcher = self._matcher()
        return matcher is not None and matcher.search(entry.text) is not None

    def notice(self, entry: Entry, own: str, now: float) -> tuple[bool, bool]:
        """(highlight it, ring the bell) for ``entry`` shown at ``now``."""
        if self.hidden(entry):
            return False, False
        mention = self.mentioned(entry, own)
        if mention:
            self.mentions += 1
        loud = (
            entry.kind in LOUD
            and not entry.history
            and entry.origin != own
            and not entry.outgoing
            and (self.bell == "all" or (self.bell == "mentions" and mention))
        )
        if loud and now - self._last_bell >= BELL_EVERY:
            self._last_bell = now
            return mention, True
        return mention, False

    def typed(self) -> None:
        """The person typed a line: the mentions have been seen."""
        self.mentions = 0
