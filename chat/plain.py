"""The line-mode front end, for scripts, bots and pipes.

Each stdin line is a message or a command; end of input leaves. The
transcript goes to stdout one line (or one JSON object) per event, flushed
as it is written; notes for the person go to stderr, so stdout stays the
transcript.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import BinaryIO, TextIO

import trio

from chat import render
from chat.state import Entry


class Transcript:
    """A sink for the node's entries that writes them to a text stream."""

    def __init__(self, out: TextIO, *, json_mode: bool) -> None:
        self.out = out
        self.json_mode = json_mode
        self.broken = False

    def __call__(self, entry: Entry) -> None:
        if self.broken:
            return
        text = render.as_json(entry) if self.json_mode else render.line(entry)
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
            self.broken = True  # nobody reads the transcript any more


def note(text: str) -> None:
    print(f"trio-chat: {text}", file=sys.stderr, flush=True)


async def stdin_lines(stdin: BinaryIO) -> AsyncIterator[str]:
    """The lines of ``stdin`` until end of input, undecodable ones skipped with a note."""
    while True:
        # A worker thread per line: blocking reads work for pipes, files and
        # terminals alike, and abandon_on_cancel lets shutdown not wait.
        raw = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
        if not raw:
            return
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            note("not sent: the line is not valid UTF-8")
