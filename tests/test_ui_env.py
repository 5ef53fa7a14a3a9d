"""The interactive UI honours NO_COLOR and a dumb terminal (real tmux panes)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_tmux import TRIO_CHAT, Pane, Tmux

pytestmark = pytest.mark.needs("tmux")  # skipped with a reason where tmux is missing

# SGR colour parameters: 30-37/90-97 foreground, 38;... extended colours.
COLOUR = re.compile(r"\x1b\[[0-9;]*(?:3[0-8]|9[0-7])[0-9;]*m")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    server = Tmux(tmp_path)
    try:
        yield server
    finally:
        server.close()


def start(tmux: Tmux, name: str, env: dict[str, str]) -> Pane:
    """``trio-chat peer`` in a pane with ``env`` set, as a person's shell would."""
    pane = Pane(tmux, name, tmux.files)
    setting = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
    command = shlex.join([TRIO_CHAT, "peer", "0", "--host", "127.0.0.1", "--name", name])
    shell = f"env {setting} {command}; echo EXIT=$?; sleep 60"
    tmux.run("new-session", "-d", "-s", name, "-x", "100", "-y", "30", shell)
    return pane


def styled_rows(tmux: Tmux, pane: Pane) -> str:
    """The pane with its escape sequences (``capture-pane -e``)."""
    return tmux.run("capture-pane", "-e", "-p", "-t", pane.name)


def say_from_a_script(port: int, text: str) -> None:
    """A non-interactive peer joins, says ``text`` and leaves."""
    command = [sys.executable, "-m", "chat", "peer", "0", "--host", "127.0.0.1", "--name", "bob"]
    subprocess.run(
        [*command, f"127.0.0.1:{port}"],
        input=f"{text}\n".encode(),
        capture_output=True,
        timeout=20,
        check=True,
    )


def test_no_color_means_no_colour(tmux: Tmux) -> None:
    plain = start(tmux, "plain", {"NO_COLOR": "1"})
    colour = start(tmux, "colour", {"TERM": "xterm-256color"})
    plain_port, colour_port = plain.ready_port(), colour.ready_port()
    say_from_a_script(plain_port, "in plain text")
    say_from_a_script(colour_port, "in colour")
    plain.wait_text("<bob> in plain text")
    colour.wait_text("<bob> in colour")
    # The same line is coloured without NO_COLOR (so the check can fail)...
    assert COLOUR.search(styled_rows(tmux, colour)), styled_rows(tmux, colour)
    # ...and carries no colour with it.
    assert not COLOUR.search(styled_rows(tmux, plain)), styled_rows(tmux, plain)
    for pane in (plain, colour):
        pane.press("C-d")
        assert pane.exit_code() == 0


def test_a_dumb_terminal_gets_no_escape_sequences(tmux: Tmux) -> None:
    dumb = start(tmux, "dumb", {"TERM": "dumb"})
    port = dumb.ready_port()
    say_from_a_script(port, "hello dumb terminal")
    dumb.wait_text("<bob> hello dumb terminal")
    dumb.type("typed on a dumb terminal")
    dumb.press("Enter")
    dumb.wait_text("<dumb> typed on a dumb terminal")
    screen = styled_rows(tmux, dumb)
    assert "\x1b" not in screen, repr(screen)
    dumb.press("C-d")
    assert dumb.exit_code() == 0
    assert not any("Traceback" in row for row in dumb.rows())
