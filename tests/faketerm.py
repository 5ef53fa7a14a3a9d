"""A terminal without a terminal, and running the chat UI against it.

:class:`FakeTerminal` is a pyte screen behind prompt_toolkit's
``Vt100_Output``: what the UI writes lands on the screen, and cursor
position requests are answered through the pipe input, as a terminal does.
:func:`run_ui` runs the real :meth:`ChatUI.run` in an app session on that
pipe and that output, with a script as the trio side, bounded by
``fail_after`` and by a SIGALRM watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import TextIO, cast

import pyte
import trio
from prompt_toolkit.application import create_app_session
from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import PipeInput
from prompt_toolkit.output import Output
from prompt_toolkit.output.vt100 import Vt100_Output

from chat.ui import ChatUI

ENTER = "\r"
UP = "\x1b[A"
BACKSPACE = "\x7f"
CTRL_C = "\x03"
CTRL_D = "\x04"
CTRL_U = "\x15"

STEP = 5.0  # seconds the trio side of one test may take
WATCHDOG = 15  # seconds one whole ChatUI.run may take

# --------------------------------------------------------------------------
# A terminal without a terminal


class _TerminalFile:
    """What ``Vt100_Output`` writes to: straight into the emulated screen."""

    encoding = "utf-8"

    def __init__(self, terminal: FakeTerminal) -> None:
        self._terminal = terminal

    def write(self, data: str) -> int:
        self._terminal.feed(data)
        return len(data)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        # prompt_toolkit asks for the cursor position only on a tty.
        return self._terminal.cpr


class _AnsweringScreen(pyte.Screen):
    """A pyte screen whose replies (cursor position reports) go to ``answer``."""

    def __init__(self, columns: int, lines: int, answer: Callable[[str], None]) -> None:
        super().__init__(columns, lines)
        self.answer = answer

    def write_process_input(self, data: str) -> None:
        self.answer(data)


class FakeTerminal:
    """A pyte screen behind a ``Vt100_Output``, answering on a pipe input.

    With ``cpr`` the screen answers ``ESC[6n`` with the cursor position
    through the pipe, as a terminal does (``latency`` seconds later), and
    prompt_toolkit shows its bottom toolbar; without it prompt_toolkit
    renders as for a terminal that never answers. Newline does carriage
    return too (the tty's ``onlcr``).
    """

    def __init__(
        self, keys: PipeInput, rows: int, columns: int, *, cpr: bool = True, latency: float = 0.0
    ) -> None:
        self.keys = keys
        self.rows = rows
        self.columns = columns
        self.cpr = cpr
        self.latency = latency
        self.raw = bytearray()
        self.screen = _AnsweringScreen(columns, rows, self._answer)
        self.screen.set_mode(pyte.modes.LNM)
        self._stream = pyte.ByteStream(self.screen)
        self._triggers: list[tuple[Callable[[], bool], Callable[[], None]]] = []
        self.output = Vt100_Output(
            cast(TextIO, _TerminalFile(self)),
            lambda: Size(rows=rows, columns=columns),
            term="xterm",
        )

    def _answer(self, data: str) -> None:
        if self.latency:  # a terminal at the far end of a slow link (ssh)
            asyncio.get_running_loop().call_later(self.latency, self.keys.send_text, data)
        else:
            self.keys.send_text(data)

    def feed(self, data: str) -> None:
        chunk = data.encode()
        self.raw += chunk
        self._stream.feed(chunk)
        for trigger in list(self._triggers):
            predicate, action = trigger
            if predicate():
                self._triggers.remove(trigger)
                action()

    # ---------------------------------------------------------- reading

    def lines(self) -> list[str]:
        """The rows of the screen, trailing blanks stripped."""
        return [row.rstrip() for row in self.screen.display]

    def dump(self) -> str:
        return "\n".join(f"{i:2}|{row}" for i, row in enumerate(self.lines()))

    def has(self, text: str) -> bool:
        return any(text in row for row in self.lines())

    def row_starting(self, prefix: str) -> int | None:
        """The index of the last row that starts with ``prefix``."""
        found = None
        for i, row in enumerate(self.lines()):
            if row.startswith(prefix):
                found = i
        return found

    # ---------------------------------------------------------- waiting

    def when(self, predicate: Callable[[], bool], action: Callable[[], None]) -> None:
        """Run ``action`` (on the asyncio side) once the screen satisfies ``predicate``.

        For scripting before trio starts (the name question); triggers fire
        in the order the screen reaches them.
        """
        self._triggers.append((predicate, action))

    def when_shown(self, text: str, keys: str) -> None:
        """Type ``keys`` once ``text`` is on the screen."""
        self.when(lambda: self.has(text), lambda: self.keys.send_text(keys))

    async def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        """From the trio side: until the screen satisfies ``predicate``."""
        if predicate():
            return
        token = trio.lowlevel.current_trio_token()
        reached = trio.Event()
        self.when(predicate, lambda: token.run_sync_soon(reached.set))
        with trio.move_on_after(STEP):
            await reached.wait()
            return
        raise AssertionError(f"timed out waiting for {what}; the screen:\n{self.dump()}")


# --------------------------------------------------------------------------
# Running the UI


class _Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds: int, terminal: FakeTerminal | None = None) -> Iterator[None]:
    """Turn a hang of the whole run into a failure (SIGALRM in the main thread)."""

    def expired(signum: int, frame: FrameType | None) -> None:
        screen = f"; the screen:\n{terminal.dump()}" if terminal else ""
        raise _Hang(f"the UI did not finish within {seconds} s{screen}")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


Script = Callable[[ChatUI], Awaitable[int]]


def run_ui(ui: ChatUI, keys: PipeInput, output: Output | FakeTerminal, script: Script) -> int:
    """``ui.run`` with ``script`` as the trio side; a failure in it is raised here.

    ``ChatUI.run`` turns an exception of the trio side into exit code 1 and
    one line on stderr, so the script's exception is kept and re-raised.
    """
    failures: list[BaseException] = []

    async def trio_main(ui: ChatUI) -> int:
        try:
            with trio.fail_after(STEP):
                return await script(ui)
        except BaseException as exc:
            failures.append(exc)
            raise

    terminal = output if isinstance(output, FakeTerminal) else None
    out = output.output if isinstance(output, FakeTerminal) else output
    with create_app_session(input=keys, output=out), watchdog(WATCHDOG, terminal):
        code = ui.run(trio_main)
    if failures:
        raise failures[0]
    return code


async def read_all(ui: ChatUI) -> list[str]:
    """Every line that reaches the trio side until the channel ends (leave)."""
    return [line async for line in ui.lines]
