"""Splitting a byte stream into frames (§1) or plain-text lines (§9).

Sans-IO, after h11's ``ReceiveBuffer``: bytes go in, frames come out, and no
byte is searched twice, so a maximal line trickled one byte at a time costs
time linear in its length. Input is bounded: at most ``MAX_FRAME`` bytes of
an unterminated line are ever held.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from chat.protocol import MAX_FRAME, Duplicate, Frame, ProtocolError, TextLine, parse_frame

# The head of an event as trio-chat encodes it (protocol.make_event): enough
# to recognise a duplicate without parsing the JSON.
_EVENT_HEAD = re.compile(
    rb'\{"type":"(?:join|msg|nick|leave|lost)","origin":"([0-9a-f]{32})","seq":([1-9][0-9]{0,17}),'
)

Output = list[Frame | TextLine]


class Decoder:
    """Splits a byte stream into frames (§1), or into text lines (§9).

    ``feed(data)`` returns every frame completed by ``data``; an incomplete
    line is kept (never more than ``max_frame`` bytes of it). The first byte
    decides the mode for good: one that is not ``{`` makes this a plain-text
    connection whose lines come out as :class:`TextLine`.

    When the remote breaks the rules, ``feed`` still returns the good frames
    that came before the fault (nothing valid is lost) and sets ``error``;
    from then on it returns nothing, as the connection is to be closed.
    """

    __slots__ = ("_max", "_pending", "_seen", "error", "plain_text", "scanned")

    def __init__(
        self, max_frame: int = MAX_FRAME, seen: Callable[[str, int], bool] | None = None
    ) -> None:
        self._max = max_frame
        # In a full mesh every event arrives once per neighbour: with
        # ``seen``, a copy already seen is answered as Duplicate without
        # parsing (its validity no longer matters: it is dropped anyway).
        self._seen = seen
        # The unterminated tail, which holds no newline: only bytes that
        # arrive later are searched. None when empty: most connections
        # hold no partial line, and an empty bytearray is 56 bytes (W3).
        self._pending: bytearray | None = None
        self.plain_text: bool | None = None  # None until the first byte
        self.error: ProtocolError | None = None
        # Bytes searched for a line end so far: the decoder's work, counted
        # in operations (each byte at most once), for tests and benchmarks.
        self.scanned = 0

    @property
    def buffered(self) -> int:
        """Bytes held of an incomplete line."""
        return len(self._pending) if self._pending else 0

    def feed(self, data: bytes) -> Output:
        if self.error or not data:
            return []
        if self.plain_text is None:
            self.plain_text = data[:1] != b"{"
        out: Output = []
        pending = self._pending
        start = 0
        if pending:
            end = data.find(b"\n")
            self.scanned += end + 1 if end >= 0 else len(data)
            if end < 0:
                if len(pending) + len(data) > self._max:
                    return self._fail("more than {} bytes arrived without a newline", out)
                pending += data
                return out
            pending += data[: end + 1]
            line = bytes(pending)
            self._pending = None
            start = end + 1
            if not self._take(line, out):
                return out
        # bytes.find does the scanning in C; Python only touches whole lines.
        while (end := data.find(b"\n", start)) >= 0:
            self.scanned += end + 1 - start
            line = data[start : end + 1]
            start = end + 1
            if not self._take(line, out):
                return out
        self.scanned += len(data) - start
        if len(data) - start > self._max:
            return self._fail("more than {} bytes arrived without a newline", out)
        if start < len(data):
            self._pending = bytearray(data[start:])
        return out

    def close(self) -> Output:
        """End of input: a plain-text client's last line counts without newline."""
        if self.error or not self._pending or not self.plain_text:
            return []  # an unfinished JSON frame is nothing
        return self.feed(b"\n")

    def _take(self, line: bytes, out: Output) -> bool:
        """Decode one complete line into ``out``; False once the remote is at fault."""
        if len(line) > self._max:
            self._fail("a frame is at most {} bytes with its newline", out)
            return False
        try:
            out.append(self._line(line))
        except ProtocolError as exc:
            self.error = exc
            self._pending = None
            return False
        return True

    def _line(self, line: bytes) -> Frame | TextLine:
        if not self.plain_text:
            if self._seen is not None and (head := _EVENT_HEAD.match(line)):
                origin, seq = head[1].decode(), int(head[2])
                if self._seen(origin, seq):
                    return Duplicate(origin, seq)
            return parse_frame(line)
        body = line[:-1]
        if body.endswith(b"\r"):
            body = body[:-1]
        # A person's terminal may not speak UTF-8: show what we can rather
        # than cut them off.
        return TextLine(body.decode("utf-8", errors="replace"))

    def _fail(self, why: str, out: Output) -> Output:
        self.error = ProtocolError("frame_too_long", why.format(self._max))
        self._pending = None
        return out
