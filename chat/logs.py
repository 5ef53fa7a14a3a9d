"""Log lines: what a node says on stderr (or above the prompt), one safe line each.

Anything a remote sent (names, error codes and messages, addresses) may
reach a log line; the formatters here make every control character a
visible picture, as transcripts do (:func:`chat.render.safe`), so no frame
can forge a line, erase one or drive the terminal. A :class:`LineLimiter`
keeps one address from filling the log.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from typing import TextIO

from chat.flow import TokenBucket
from chat.render import safe

_COLOURS = {
    "SUCCESS": "\x1b[1;32m",
    "NEW CONNECTION": "\x1b[36m",
    "ACTIVE CONNECTIONS": "\x1b[34m",
    "RECEIVED": "\x1b[0m",
    "DISCONNECTED": "\x1b[33m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[1;31m",
    "INFO": "\x1b[2m",
}
_RESET = "\x1b[0m"


class SafeFormatter(logging.Formatter):
    """Formats the message as one line with every control character made visible.

    A traceback (ours) keeps its line breaks; each of its lines is made
    safe too, since an exception's text may quote a remote.
    """

    def message(self, record: logging.LogRecord) -> str:
        return safe(record.getMessage())

    def traceback(self, record: logging.LogRecord) -> str:
        if not record.exc_info:
            return ""
        lines = self.formatException(record.exc_info).splitlines()
        return "\n" + "\n".join(safe(line) for line in lines)


class StatusFormatter(SafeFormatter):
    """A peer's status lines: ``trio-chat: [warning: ]message``."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"trio-chat: {prefix}{self.message(record)}{self.traceback(record)}"


class HubFormatter(SafeFormatter):
    """``HH:MM:SS [TAG] message``; the tag coloured when ``colour`` is on.

    A record's tag is its ``tag`` attribute (``extra={"tag": ...}``), else
    its level name, so the node's own status lines fit in.
    """

    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        tag = getattr(record, "tag", None) or record.levelname
        label = f"[{tag}]"
        if self.colour:
            label = f"{_COLOURS.get(tag, '')}{label}{_RESET}"
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{clock} {label} {self.message(record)}{self.traceback(record)}"


def wants_colour(stream: TextIO) -> bool:
    """Colour only for a terminal, and never when NO_COLOR is set (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


class LineLimiter:
    """At most ``rate`` log lines a second per address (bursts of ``burst``).

    ``allow`` answers whether a line may go out now and, when it may after
    some were held back, how many were: the caller says "N more
    suppressed" then. :meth:`overdue` gives the counts nobody has reported
    after a quiet second, for a periodic flush.
    """

    def __init__(self, rate: float, burst: float, max_addresses: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[str, tuple[TokenBucket, list[float]]] = OrderedDict()

    def allow(self, address: str, now: float) -> tuple[bool, int]:
        entry = self._buckets.get(address)
        if entry is None:
            entry = self._buckets[address] = (TokenBucket(self.rate, self.burst), [0.0, now])
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        bucket, held = entry
        if bucket.take(now) > 0:
            bucket.tokens += 1.0  # not spent: nothing went out
            held[0] += 1
            held[1] = now
            return False, 0
        suppressed = int(held[0])
        held[0] = 0
        return True, suppressed

    def overdue(self, now: float) -> list[tuple[str, int]]:
        """Addresses with lines held back and quiet for a second: (address, count)."""
        out = []
        for address, (_, held) in self._buckets.items():
            if held[0] and now - held[1] >= 1.0:
                out.append((address, int(held[0])))
                held[0] = 0
        return out
