"""``--log PATH``: every line shown, once, appended to a file (mode 0600).

``%Y-%m-%d`` (any ``strftime`` field) in the path rotates the file: the
path is worked out for each line's time. Each line carries its date:
``2026-11-30 10:02:24 <bob> hi`` (or one JSON object with ``--log-json``).
An event is logged once: within a run by its (origin, seq), and after a
restart a ``[history]`` line that is already in the file is not written
again; so the catch-up a restarted peer receives, or a reconnection, never
logs a line twice, while two equal messages in one second are both kept;
at start the last lines logged are shown again, marked ``[log]``, so a
person who was the last one in the room still has the conversation. One
log path is one group's log.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections import OrderedDict
from pathlib import Path

from chat import render
from chat.members import Entry

REPLAY = 20  # lines shown again at start
REMEMBERED = 5000  # lines whose keys are kept, to log each once
LOOK_BACK_DAYS = 31  # how far back a rotated log is looked for, at start


class ChatLog:
    """Appends the lines a person is shown to the file ``template`` names."""

    def __init__(self, template: str, *, json_mode: bool = False) -> None:
        self.template = template
        self.json_mode = json_mode
        self.broken = ""  # why writing stopped, once it has
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._last: list[str] = []
        newest = self._newest()
        if newest is not None:
            lines = _tail(newest, REMEMBERED)
            for line in lines:
                self._remember(self._key_of_line(line))
            self._last = lines[-REPLAY:]

    def replay(self) -> list[str]:
        """The last lines logged before this run, as they were written."""
        return list(self._last)

    def path(self, when: float) -> Path:
        return Path(time.strftime(self.template, time.localtime(when))).expanduser()

    def write(self, entry: Entry) -> None:
        """Log ``entry`` unless it is logged already (or writing has failed)."""
        if self.broken or not entry.shown:
            return
        line = self._render(entry)
        event = entry.event
        # This run's events by their id; lines from before the restart by
        # their text, for history only (a live event is new).
        key = f"{entry.kind} {event.origin} {event.seq}" if event is not None else line
        if key in self._seen or (entry.history and self._key_of_line(line) in self._seen):
            return
        self._remember(key)
        path = self.path(entry.ts)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError as exc:
            self.broken = f"cannot write the log {path}: {exc.strerror or exc}"

    # ------------------------------------------------------------ helpers

    def _render(self, entry: Entry) -> str:
        if self.json_mode:
            return render.as_json(entry)
        stamp = datetime.datetime.fromtimestamp(entry.ts).strftime("%Y-%m-%d %H:%M:%S")
        return f"{stamp} {render.sent(entry)}{render.describe(entry)}"

    def _key_of_line(self, line: str) -> str:
        if not self.json_mode:
            return line
        try:
            obj = json.loads(line)
        except ValueError:
            return line
        # The same event, however it came (catch-up, a reconnection): its id.
        if isinstance(obj, dict) and "origin" in obj and "seq" in obj:
            return f"{obj.get('type')} {obj['origin']} {obj['seq']}"
        return line

    def _remember(self, key: str) -> None:
        self._seen[key] = None
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)

    def _newest(self) -> Path | None:
        """The log file of today, else of the latest day before that has one."""
        now = time.time()
        looked: set[Path] = set()
        for day in range(LOOK_BACK_DAYS + 1):
            path = self.path(now - day * 86400)
            if path not in looked:  # (a template without date fields: one file)
                looked.add(path)
                if path.exists():
                    return path
        return None


def _tail(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of ``path`` (read whole: logs are text)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return lines[-count:]
