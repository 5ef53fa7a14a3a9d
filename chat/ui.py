"""The interactive terminal UI: prompt_toolkit, with trio as its guest.

Why guest mode: prompt_toolkit runs on asyncio, the node on trio. Hosting
trio on the asyncio loop that runs ``PromptSession.prompt_async``
(``trio.lowlevel.start_guest_run``) keeps both in one thread, so every way
out (Ctrl+C, Ctrl+D, /exit, SIGINT/SIGTERM from outside, the node failing)
ends in the same place with the terminal restored. The alternatives were
tried before this was written: ``prompt()`` in a worker thread left the
terminal raw when cancelled or sent SIGINT, and trio-asyncio hung on
Ctrl+C (trio-asyncio #118).

The UI never sees a socket. Lines typed go to the node side through a
trio memory channel (:attr:`ChatUI.lines`; closing it means "leave");
chat entries come back through :meth:`ChatUI.show`, which renders them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator

import trio
from outcome import Outcome
from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app_session
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText, to_plain_text
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.renderer import print_formatted_text
from prompt_toolkit.shortcuts import CompleteStyle
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import is_dumb_terminal
from prompt_toolkit.validation import ValidationError, Validator

from chat.attention import Attention
from chat.commands import COMMAND_NAMES
from chat.members import Entry
from chat.protocol import MAX_TEXT, name_problem
from chat.render import clock, describe, safe, sent

# Colours that read on dark and light backgrounds alike; a name keeps its
# colour for the whole session and across sessions (crc32, not hash()).
NAME_COLOURS = ("ansired", "ansigreen", "ansiyellow", "ansiblue", "ansimagenta", "ansicyan")

STYLE = Style.from_dict(
    {
        "time": "#888888",
        "system": "#888888 italic",
        "history": "#888888",
        "note": "#888888",
        "error": "ansired",
        "bottom-toolbar": "noreverse bg:#303030 #d0d0d0",
        "mention": "reverse",
        **{f"name-{i}": f"{colour} bold" for i, colour in enumerate(NAME_COLOURS)},
    }
)


def name_style(name: str) -> str:
    return f"class:name-{zlib.crc32(name.encode()) % len(NAME_COLOURS)}"


def formatted(entry: Entry, *, highlight: bool = False, marker: bool = False) -> FormattedText:
    """One chat entry as styled text: the render function of the UI.

    ``highlight``: it mentions you (reverse video; with ``marker``, where
    there may be no video attributes, a ``!`` in front instead).
    """
    parts: list[tuple[str, str]] = [("class:time", clock(entry.ts) + " ")]
    if highlight and marker:
        parts.append(("", "! "))
    if entry.history:
        parts.append(("class:history", "[history] "))
    if entry.sent is not None:
        parts.append(("class:history", sent(entry)))
    text_style = "class:history" if entry.history else ""
    if highlight and not marker:
        text_style = "class:mention"
    if entry.kind == "msg" and not entry.action:
        parts += [
            (name_style(entry.who), f"<{safe(entry.who)}>"),
            (text_style, f" {safe(entry.text)}"),
        ]
    elif entry.kind in ("msg", "pm"):
        parts.append((text_style or name_style(entry.who), describe(entry)))
    else:
        parts.append(("class:system", describe(entry)))
    return FormattedText(parts)


class _Completer(Completer):
    """Tab: command names after ``/``, else present members' shown names
    (``bob~XXXX`` where names clash); a name first on the line gets ``: ``."""

    def __init__(self, ui: ChatUI) -> None:
        self.ui = ui

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        before = document.text_before_cursor
        if before.startswith("/") and " " not in before:
            for command in COMMAND_NAMES:
                if command.startswith(before[1:]):
                    yield Completion(f"/{command} ", start_position=-len(before))
            return
        word = before.rsplit(" ", 1)[-1]
        first = before == word
        for name in self.ui.names():
            if name.lower().startswith(word.lower()):
                yield Completion(name + (": " if first else " "), start_position=-len(word))


class _MessageValidator(Validator):
    """Refuses an over-long message on Enter; the text stays in the input line."""

    def validate(self, document: object) -> None:
        text: str = getattr(document, "text", "")
        if not text.startswith("/") and len(text) > MAX_TEXT:
            raise ValidationError(
                len(text),
                f"not sent: {len(text)} characters, a message has at most {MAX_TEXT}",
            )


class _NameValidator(Validator):
    def validate(self, document: object) -> None:
        text: str = getattr(document, "text", "").strip()
        problem = name_problem(text)
        if problem:
            raise ValidationError(len(text), problem)


TrioMain = Callable[["ChatUI"], Awaitable[int]]


class ChatUI:
    """The prompt, the chat above it, and the bridge to the trio side."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        # Input line -> node side. Small: it holds what one person typed.
        self._lines_in, self.lines = trio.open_memory_channel[str](64)
        self.status: Callable[[], str] = lambda: ""
        # The name in the prompt; the node side points it at the node's name
        # so that /nick shows in the prompt at once.
        self.prompt_name: Callable[[], str] = lambda: self.name or ""
        # Set by the node side: what catches the person's eye (chat.attention),
        # this node's id (its own lines never ring), the names Tab completes.
        self.attention: Attention | None = None
        self.own: Callable[[], str] = lambda: ""
        self.names: Callable[[], list[str]] = list
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._session: PromptSession[str] | None = None

    # ------------------------------------------------- called from trio

    def show(self, entry: Entry) -> None:
        """Print a chat entry above the input line (thread-safe); highlight
        it and ring the bell as the person's attention settings say."""
        if not entry.shown:
            return
        mention = ring = False
        if self.attention is not None:
            mention, ring = self.attention.notice(entry, self.own(), time.monotonic())
        marker = bool(os.environ.get("NO_COLOR")) or is_dumb_terminal()
        self._print(formatted(entry, highlight=mention, marker=marker), bell=ring)

    def note(self, text: str, error: bool = False) -> None:
        """Print a line for the person only (status, command output)."""
        self._print(FormattedText([("class:error" if error else "class:note", text)]))

    def _print(self, text: FormattedText, bell: bool = False) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._print_now, text, bell)

    def _print_now(self, text: FormattedText, bell: bool = False) -> None:
        """Print above the prompt, in call order, without leaving raw mode.

        The shortcut ``print_formatted_text`` goes through
        ``run_in_terminal``, which first waits for the terminal's answer to
        a cursor-position request (so a later line could overtake an
        earlier one) and switches to cooked mode while it prints (so keys
        typed meanwhile were echoed into the chat). Here the prompt is
        erased, the line printed and the prompt redrawn at once.
        """
        output = get_app_session().output
        if bell:
            output.bell()  # BEL: the terminal decides how it rings
        if is_dumb_terminal():
            # No escape sequences at all, styles included: a carriage return
            # is the one control a dumb terminal is sure to honour.
            output.write("\r" + to_plain_text(text) + "\n")
            output.flush()
            return
        line = FormattedText([*text, ("", "\n")])
        app = self._session.app if self._session else None
        if app is None or not app.is_running:
            print_formatted_text(output, line, STYLE)
            return
        app.renderer.erase()
        print_formatted_text(output, line, STYLE)
        app.renderer.reset()
        app.renderer.request_absolute_cursor_position()
        app.invalidate()

    # ------------------------------------------------- the asyncio side

    def run(self, trio_main: TrioMain) -> int:
        """Ask the name if needed, run ``trio_main`` as guest; its exit code."""
        return asyncio.run(self._main(trio_main))

    async def _main(self, trio_main: TrioMain) -> int:
        loop = self._loop = asyncio.get_running_loop()
        # The net for stray output: anything printed bypassing print_formatted_text.
        with patch_stdout(raw=True):
            if self.name is None:
                try:
                    self.name = await self._ask_name()
                except (KeyboardInterrupt, EOFError):
                    return 0  # nothing joined yet: nothing to leave
            done: asyncio.Future[Outcome[int]] = loop.create_future()

            def finished(outcome: Outcome[int]) -> None:
                if not done.done():
                    done.set_result(outcome)
                if self._session and self._session.app.is_running:
                    self._session.app.exit()

            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self.leave)
            trio.lowlevel.start_guest_run(
                self._trio_side,
                trio_main,
                run_sync_soon_threadsafe=loop.call_soon_threadsafe,
                done_callback=finished,
                host_uses_signal_set_wakeup_fd=True,
            )
            await self._prompt_loop(done)
            outcome = await done
        try:
            return int(outcome.unwrap())
        except Exception as exc:  # the node failed: say so, no traceback
            print(f"trio-chat: stopped by an internal error: {exc!r}", file=sys.stderr)
            return 1

    async def _trio_side(self, trio_main: TrioMain) -> int:
        self._token = trio.lowlevel.current_trio_token()
        return await trio_main(self)

    async def _ask_name(self) -> str:
        session: PromptSession[str] = PromptSession(
            "your name: ", validator=_NameValidator(), validate_while_typing=False
        )
        return (await session.prompt_async()).strip()

    async def _prompt_loop(self, done: asyncio.Future[Outcome[int]]) -> None:
        keys = KeyBindings()

        @keys.add("c-c")
        def _(event: KeyPressEvent) -> None:
            # As shells do: Ctrl+C clears a line being typed; on an empty line, leave.
            buffer = event.app.current_buffer
            if buffer.text:
                buffer.reset()
            else:
                event.app.exit(exception=KeyboardInterrupt())

        session = self._session = PromptSession(
            history=InMemoryHistory(),
            completer=_Completer(self),
            complete_while_typing=False,
            # Tab as in a shell: the common part, then the choices printed
            # above; a menu would hold rows free under the input line and
            # scroll the chat away.
            complete_style=CompleteStyle.READLINE_LIKE,
            reserve_space_for_menu=0,
            key_bindings=keys,
            bottom_toolbar=lambda: " " + self.status(),
            validator=_MessageValidator(),
            validate_while_typing=False,
            refresh_interval=1.0,
            style=STYLE,
            # The accepted line goes: the node shows it back as a chat line.
            erase_when_done=True,
        )
        # Raw mode between prompts too: each line is its own prompt, and in
        # between a cooked terminal would echo keys typed (or pasted) ahead.
        with get_app_session().input.raw_mode():
            while not done.done():
                try:
                    # handle_sigint=False: our SIGINT handler (leave) stays in
                    # place between prompts; Ctrl+C typed is a key, not a signal.
                    text = await session.prompt_async(
                        lambda: f"{self.prompt_name()}> ", handle_sigint=False
                    )
                except (KeyboardInterrupt, EOFError):
                    self.leave()
                    return
                if text is not None and not done.done():
                    self._submit(text)

    def _submit(self, text: str) -> None:
        if self.attention is not None:
            self.attention.typed()  # the mentions have been seen
        token = self._token
        if token is None:
            return

        def push() -> None:
            try:
                self._lines_in.send_nowait(text)
            except trio.WouldBlock:
                self.note("busy: that line was not taken; try again", error=True)
            except trio.ClosedResourceError:
                pass

        token.run_sync_soon(push)

    def leave(self) -> None:
        """Ctrl+C, Ctrl+D, SIGINT, SIGTERM: close the line channel = leave."""
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._lines_in.close)
