"""Splitting a byte stream into frames (§1) or plain-text lines (§9).

Sans-IO, after h11's ``ReceiveBuffer``: bytes go in, frames come out, and no
byte is searched twice, so a maximal line trickled one byte at a time costs
time linear in its length. Input is bounded: at most ``MAX_FRAME`` bytes of
an unterminated line are ever held.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from chat.parse import parse_frame
from chat.protocol import MAX_FRAME, Duplicate, Frame, ProtocolError, TextLine

# The head of an event as trio-chat encodes it (protocol.make_event): enough
# to recognise a duplicate without parsing the JSON.
_EVENT_HEAD = re.compile(
    rb'\{"type":"[a-z_]{1,32}","origin":"([0-9a-f]{32})","seq":([1-9][0-9]{0,17}),'
)

Output = list[Frame | TextLine]
_LINE_END = re.compile(rb"[\r\n]")
MAX_TELNET = 4096  # bytes of one telnet command kept while it is incomplete


def _text(line: bytes) -> TextLine:
    # A person's terminal may not speak UTF-8: show what we can rather than
    # cut them off.
    return TextLine(line.decode("utf-8", errors="replace"))


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

    __slots__ = ("_iac", "_max", "_pending", "_seen", "_skip", "error", "plain_text", "scanned")

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
        # Plain text only: an incomplete telnet command cut by a read, and
        # whether a CR just ended a line (so a LF or NUL after it is its end too).
        self._iac = b""
        self._skip = False

    @property
    def buffered(self) -> int:
        """Bytes held of an incomplete line."""
        return len(self._pending) if self._pending else 0

    @property
    def partial(self) -> bool:
        """A plain-text line has begun and not ended: :meth:`flush` may end it."""
        return bool(self.plain_text and self._pending)

    def feed(self, data: bytes) -> Output:
        if self.error or not data:
            return []
        if self.plain_text is None:
            if data[:1] == b"\x16":  # a TLS handshake record: a closed group's member (§8)
                why = "TLS is not spoken here: this group is open (no secret)"
                self.error = ProtocolError("unsupported_protocol", why)
                self.plain_text = False  # a node, not a person: its failure is logged
                return []
            self.plain_text = data[:1] != b"{"
        if self.plain_text:
            return self._feed_text(data)
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
        return self.flush()

    def flush(self) -> Output:
        """A plain-text line that stopped without its line end: it counts now.

        The connection calls this once the remote has been silent for a
        moment after a partial line (a client that sends each message with
        no newline, as the relay seed's does).
        """
        if self.error or not self.partial:
            return []
        assert self._pending is not None
        line = bytes(self._pending)
        self._pending = None
        return [_text(line)]

    # ------------------------------------------------------------ plain text (§9)

    def _feed_text(self, data: bytes) -> Output:
        """Lines of a person's stream: LF, CR LF and a lone CR end a line (telnet
        sends CR NUL for a lone CR); telnet commands (IAC ...) are dropped."""
        if self._iac or b"\xff" in data:
            data = self._strip_telnet(self._iac + data)
        if self._skip and data[:1] in (b"\n", b"\0"):
            data = data[1:]
        self._skip = False
        out: Output = []
        start = 0
        self.scanned += len(data)
        for match in _LINE_END.finditer(data):
            end = match.start()
            if end < start:
                continue  # the LF or NUL of a CR LF / CR NUL already taken
            line = data[start:end]
            if self._pending:
                line = bytes(self._pending) + line
                self._pending = None
            if len(line) >= self._max:
                return self._fail("a line is at most {} bytes with its end", out)
            out.append(_text(line))
            start = end + 1
            if data[end : end + 1] == b"\r":
                if end + 1 == len(data):
                    self._skip = True  # the next read may begin with its LF
                elif data[end + 1 : end + 2] in (b"\n", b"\0"):
                    start = end + 2
        rest = data[start:]
        if rest:
            held = len(self._pending) if self._pending else 0
            if held + len(rest) > self._max:
                return self._fail("more than {} bytes arrived without a line end", out)
            if self._pending is None:
                self._pending = bytearray(rest)
            else:
                self._pending += rest
        return out

    def _strip_telnet(self, data: bytes) -> bytes:
        """``data`` without telnet's IAC commands (RFC 854); an incomplete one is kept."""
        out = bytearray()
        i, n = 0, len(data)
        self._iac = b""
        while i < n:
            j = data.find(b"\xff", i)
            if j < 0:
                out += data[i:]
                break
            out += data[i:j]
            command = data[j + 1] if j + 1 < n else None
            if command is None:
                end = None
            elif command == 0xFF:  # an escaped 255: the byte itself
                out.append(0xFF)
                end = j + 2
            elif command in (0xFB, 0xFC, 0xFD, 0xFE):  # WILL WONT DO DONT option
                end = j + 3 if j + 2 < n else None
            elif command == 0xFA:  # SB ... IAC SE
                se = data.find(b"\xff\xf0", j + 2)
                end = se + 2 if se >= 0 else None
            else:  # NOP, IP, AYT, ...: two bytes
                end = j + 2
            if end is None:
                if n - j <= MAX_TELNET:
                    self._iac = data[j:]  # cut by the read: the rest comes next
                break  # (an endless subnegotiation is dropped)
            i = end
        return bytes(out)

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
        if self._seen is not None and (head := _EVENT_HEAD.match(line)):
            origin, seq = head[1].decode(), int(head[2])
            if self._seen(origin, seq):
                return Duplicate(origin, seq)
        return parse_frame(line)

    def _fail(self, why: str, out: Output) -> Output:
        self.error = ProtocolError("frame_too_long", why.format(self._max))
        self._pending = None
        return out
