"""The line-mode front end, for scripts, bots and pipes.

Each stdin line is a message or a command; end of input leaves. The
transcript goes to stdout one line (or one JSON object) per event, flushed
as it is written; notes for the person go to stderr, so stdout stays the
transcript.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from typing import TextIO

import trio

from chat import render
from chat.members import Entry


class Transcript:
    """A sink for the node's entries that writes them to a text stream."""

    def __init__(self, out: TextIO, *, json_mode: bool) -> None:
        self.out = out
        self.json_mode = json_mode
        self.broken = False

    def __call__(self, entry: Entry) -> None:
        if self.broken or not (entry.shown or self.json_mode):
            return
        text = render.as_json(entry) if self.json_mode else render.line(entry)
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
            self.broken = True  # nobody reads the transcript any more


def note(text: str) -> None:
    print(f"trio-chat: {text}", file=sys.stderr, flush=True)


async def stdin_lines(fd: int) -> AsyncIterator[str]:
    """The lines of file descriptor ``fd`` until end of input.

    Reads happen in a worker thread, which works for pipes, files and
    terminals alike; ``abandon_on_cancel`` lets leaving not wait for input.
    The thread uses ``os.read``, not a buffered ``readline``: an abandoned
    thread blocked in the buffered reader holds its lock, and the
    interpreter then aborts at exit ("could not acquire lock ... at
    interpreter shutdown"). A line that is not UTF-8 is skipped with a note.
    """
    buf = b""
    eof = False
    while not eof:
        chunk = await trio.to_thread.run_sync(os.read, fd, 65536, abandon_on_cancel=True)
        eof = not chunk
        *lines, buf = (buf + chunk).split(b"\n")
        if eof and buf:
            lines.append(buf)  # a last line without a newline still counts
        for raw in lines:
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                note("not sent: the line is not valid UTF-8")
