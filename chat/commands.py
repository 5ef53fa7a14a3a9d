"""The commands typed inside the chat: one parser for every front end.

Pure: a typed line becomes a :class:`Say` or a :class:`Command`; what each
command does is up to the front end that reads it (the person's in
:mod:`chat.frontend`, a plain-text client's in :mod:`chat.textclient`).
"""

from __future__ import annotations

from dataclasses import dataclass

HELP = """\
commands:
  /help              this list
  /peers, /names     who is present: name, fingerprint, address, direct or via whom
  /whois NAME        who that is: identity, node, address, route, since when
  /nick NAME         change your name
  /me ACTION         say what you do: * alice waves
  /msg NAME TEXT     a private message, sealed to NAME alone (bob~XXXX if two)
  /reply TEXT        answer the last private message
  /ignore [NAME]     hide NAME's lines (by identity); alone: list who is hidden
  /unignore NAME     show NAME's lines again
  /bell MODE         when the bell rings: off, mentions (the default) or all
  /connect HOST:PORT dial another peer or hub
  /exit, /quit       leave the chat (also Ctrl+D; Ctrl+C on an empty line)
  //text             send a message that starts with "/"
Tab completes commands and names; Ctrl+C clears a line you are typing.
anything else is sent as a message."""


# What Tab completes after "/" (chat.ui).
COMMAND_NAMES = (
    "help", "peers", "names", "whois", "nick", "me", "msg", "reply",
    "ignore", "unignore", "bell", "connect", "exit", "quit",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Say:
    """A message to send."""

    text: str


@dataclass(frozen=True, slots=True)
class Command:
    """``/name arg``: ``name`` without its slash, ``arg`` stripped."""

    name: str
    arg: str
    line: str  # as typed, for a front end that sends unknown commands as text


def parse(line: str) -> Say | Command | None:
    """What a typed line asks for; None for a blank line (ignored).

    A line starting with ``//`` is a message starting with ``/``.
    """
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    if line.startswith("//"):
        return Say(line[1:])
    if line.startswith("/"):
        word, _, arg = line.partition(" ")
        return Command(word[1:], arg.strip(), line)
    return Say(line)
