"""The real ``trio-chat`` command as subprocesses, for end-to-end CLI tests.

A :class:`ChatProcess` is one child process with its stdin a pipe (so the
command runs non-interactively) and two background tasks that read its
stdout and stderr into line lists. Waiting for output is driven by those
readers: each new line wakes the waiters, which look at the lines they have
not seen yet, so a test never polls with ``sleep``. A waiter whose stream
ends before a matching line arrives gets :class:`OutputEnded` at once, with
the process's output in the message, rather than running into its deadline.

Processes belong to a :class:`ProcessGroup` (see :func:`process_group`),
which kills every one of them with SIGKILL when it closes, however the test
ended, so nothing outlives a test.
"""

from __future__ import annotations

import os
import re
import signal as signals
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeAlias

import trio

Matcher: TypeAlias = Callable[[str], bool] | str | re.Pattern[str]
"""What a line is waited for with: a predicate, or a regex searched in the line."""

PYTHON_M: tuple[str, ...] = (sys.executable, "-m", "chat")
"""``python -m chat`` with the interpreter running the tests."""

SCRIPT: tuple[str, ...] = (str(Path(sys.executable).with_name("trio-chat")),)
"""The ``trio-chat`` console script installed next to that interpreter."""

LISTENING = re.compile(
    r"^trio-chat: listening on (?P<host>.+):(?P<port>\d+) as (?P<name>.+)"
    r" \(identity (?P<fingerprint>SHA256:[A-Za-z0-9+/]{12})\)$"
)
"""The status line a peer writes to stderr once it accepts connections."""

REAP_TIMEOUT = 10.0  # seconds to wait for a SIGKILLed child to be reaped


class OutputEnded(Exception):
    """A stream ended (the process exited) before the awaited line came."""


def _matcher(match: Matcher) -> Callable[[str], bool]:
    if isinstance(match, str):
        match = re.compile(match)
    if isinstance(match, re.Pattern):
        pattern = match
        return lambda line: pattern.search(line) is not None
    return match


class Lines:
    """The lines of one output stream, complete lines only, as they arrive."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.lines: list[str] = []
        self.ended = trio.Event()
        self._changed = trio.Event()

    def add(self, line: str) -> None:
        self.lines.append(line)
        self._wake()

    def end(self) -> None:
        self.ended.set()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, match: Matcher, *, since: int = 0) -> str:
        """The first line from index ``since`` on that matches, once it is there."""
        test = _matcher(match)
        index = since
        while True:
            while index < len(self.lines):
                if test(self.lines[index]):
                    return self.lines[index]
                index += 1
            if self.ended.is_set():
                raise OutputEnded(f"{self.label} ended without a line matching {match!r}")
            await self._changed.wait()

    def matching(self, match: Matcher) -> list[str]:
        """Every line so far that matches."""
        test = _matcher(match)
        return [line for line in self.lines if test(line)]

    def count(self, match: Matcher) -> int:
        return len(self.matching(match))

    def __len__(self) -> int:
        return len(self.lines)


async def _pump(stream: trio.abc.ReceiveStream, lines: Lines) -> None:
    """Split what ``stream`` carries into ``lines`` until it ends."""
    pending = b""
    try:
        async for chunk in stream:
            *complete, pending = (pending + chunk).split(b"\n")
            for raw in complete:
                # backslashreplace: invalid UTF-8 shows up in a failing
                # assertion instead of killing the reader.
                lines.add(raw.decode("utf-8", "backslashreplace").removesuffix("\r"))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        if pending:
            lines.add(pending.decode("utf-8", "backslashreplace"))
        lines.end()


class ChatProcess:
    """One running ``trio-chat`` child, its stdin a pipe, its output collected."""

    def __init__(self, process: trio.Process, label: str) -> None:
        self.process = process
        self.label = label
        self.stdout = Lines(f"{label} stdout")
        self.stderr = Lines(f"{label} stderr")
        self.host = ""
        self.port = 0
        self.name = ""
        self.fingerprint = ""  # its identity's (§2), from the listening line

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def address(self) -> str:
        """``host:port`` to dial this peer at (after :meth:`wait_listening`)."""
        return f"{self.host}:{self.port}"

    async def wait_stdout(self, match: Matcher, *, since: int = 0) -> str:
        """Wait for a stdout line that matches; return it."""
        try:
            return await self.stdout.wait_for(match, since=since)
        except OutputEnded as exc:
            raise OutputEnded(f"{exc}\n{self.describe()}") from None

    async def wait_stderr(self, match: Matcher, *, since: int = 0) -> str:
        """Wait for a stderr line that matches; return it."""
        try:
            return await self.stderr.wait_for(match, since=since)
        except OutputEnded as exc:
            raise OutputEnded(f"{exc}\n{self.describe()}") from None

    async def wait_listening(self) -> int:
        """Wait for the ``listening on HOST:PORT as NAME`` line; return the port."""
        found = LISTENING.match(await self.wait_stderr(LISTENING))
        assert found is not None
        self.host, self.port, self.name = found["host"], int(found["port"]), found["name"]
        self.fingerprint = found["fingerprint"]
        return self.port

    async def send_line(self, text: str) -> None:
        """Write ``text`` and a newline to the process's stdin."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode("utf-8") + b"\n")

    async def close_stdin(self) -> None:
        """End the process's input (what Ctrl+D or the end of a pipe does)."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process if it is still running."""
        if self.process.returncode is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the process vanishes without a word to anyone."""
        self.signal(signals.SIGKILL)

    async def wait(self) -> int:
        """Wait for the exit and the end of both outputs; the exit code."""
        code = await self.process.wait()
        await self.stdout.ended.wait()
        await self.stderr.ended.wait()
        return code

    def describe(self) -> str:
        """The process's output so far, for assertion messages."""
        out = "\n".join(f"    {line}" for line in self.stdout.lines)
        err = "\n".join(f"    {line}" for line in self.stderr.lines)
        return f"--- {self.label} (exit code {self.returncode})\n  stdout:\n{out}\n  stderr:\n{err}"


class ProcessGroup:
    """Starts chat processes in one nursery and kills them all at the end."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.processes: list[ChatProcess] = []

    async def start(
        self,
        *args: str,
        command: Sequence[str] = PYTHON_M,
        env: Mapping[str, str] | None = None,
        label: str = "",
    ) -> ChatProcess:
        """Run ``command args...`` with stdin, stdout and stderr as pipes."""
        environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        process = await trio.lowlevel.open_process(
            [*command, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
        )
        proc = ChatProcess(process, label or f"process {len(self.processes) + 1}")
        self.processes.append(proc)
        assert process.stdout is not None
        assert process.stderr is not None
        self.nursery.start_soon(_pump, process.stdout, proc.stdout)
        self.nursery.start_soon(_pump, process.stderr, proc.stderr)
        return proc

    async def peer(
        self,
        name: str | None,
        *dial: str,
        port: int = 0,
        json: bool = False,
        command: Sequence[str] = PYTHON_M,
        env: Mapping[str, str] | None = None,
    ) -> ChatProcess:
        """A ``trio-chat peer`` on 127.0.0.1, once it is listening.

        ``name`` None leaves ``--name`` out; ``dial`` are ``HOST:PORT``s.
        """
        args = ["peer", str(port), *dial, "--host", "127.0.0.1"]
        if name is not None:
            args += ["--name", name]
        if json:
            args.append("--json")
        proc = await self.start(*args, command=command, env=env, label=name or "peer")
        await proc.wait_listening()
        return proc

    def kill_all(self) -> None:
        for proc in self.processes:
            proc.kill()

    def describe(self) -> str:
        """Every process's output, for assertion messages."""
        return "\n".join(proc.describe() for proc in self.processes)


@asynccontextmanager
async def process_group() -> AsyncIterator[ProcessGroup]:
    """A :class:`ProcessGroup` whose processes are all killed and reaped on exit."""
    async with trio.open_nursery() as nursery:
        group = ProcessGroup(nursery)
        try:
            yield group
        finally:
            group.kill_all()
            # Reap even when the test was cancelled (fail_after), so no
            # zombie or stray peer outlives it; the readers then see EOF.
            with trio.CancelScope(shield=True), trio.move_on_after(REAP_TIMEOUT):
                for proc in group.processes:
                    await proc.process.wait()
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------ transcript lines

CLOCK = r"\d\d:\d\d:\d\d"


def line_pattern(body: str, history: bool | None) -> re.Pattern[str]:
    """A whole transcript line; ``history`` None accepts it with or without the mark."""
    mark = {True: r"\[history\] ", False: "", None: r"(?:\[history\] )?"}[history]
    return re.compile(rf"^{CLOCK} {mark}{body}$")


def said(name: str, text: str, *, history: bool | None = False) -> re.Pattern[str]:
    return line_pattern(rf"<{re.escape(name)}> {re.escape(text)}", history)


def joined(name: str, *, history: bool | None = False) -> re.Pattern[str]:
    return line_pattern(rf"\*\*\* {re.escape(name)} joined", history)


def left(name: str) -> re.Pattern[str]:
    return line_pattern(rf"\*\*\* {re.escape(name)} left", None)


def lost(name: str) -> re.Pattern[str]:
    return line_pattern(rf"\*\*\* {re.escape(name)} lost", None)


# ------------------------------------------------------------ bad command lines


async def assert_usage_errors(usage: dict[str, ChatProcess], role: str) -> None:
    """Each process was a usage error: exit 2, usage and one error line, no output."""
    for what, proc in usage.items():
        assert await proc.wait() == 2, proc.describe()
        assert proc.stderr.lines, what
        assert proc.stderr.lines[0].startswith(f"usage: trio-chat {role}"), proc.describe()
        assert proc.stderr.count(rf"^trio-chat {role}: error: ") == 1, proc.describe()
        assert proc.stdout.lines == [], proc.describe()


def assert_busy_port(busy: ChatProcess, code: int, port: int) -> None:
    """A busy port: exit 1 and one stderr line naming the address."""
    assert code == 1, busy.describe()
    assert len(busy.stderr.lines) == 1, busy.describe()
    assert f"127.0.0.1:{port}" in busy.stderr.lines[0], busy.describe()
    assert "already in use" in busy.stderr.lines[0], busy.describe()
    assert busy.stdout.lines == [], busy.describe()
