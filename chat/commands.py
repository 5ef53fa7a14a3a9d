"""The commands a person types inside the chat, shared by every front end."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field

import trio

from chat.node import Node
from chat.peer import PeerRole
from chat.protocol import split_addr

HELP = """\
commands:
  /help              this list
  /peers             who is present: name, address, direct or via whom
  /nick NAME         change your name
  /connect HOST:PORT dial another peer or hub
  /exit, /quit       leave the chat (also Ctrl+D, Ctrl+C)
  //text             send a message that starts with "/"
anything else is sent as a message."""


@dataclass
class Outcome:
    """What a typed line did: notes for the person, and whether to leave."""

    notes: list[str] = field(default_factory=list)
    leave: bool = False
    sent: bool = False  # the line went out as a message


def execute(node: Node, line: str) -> Outcome:
    """Act on one line typed by the person running ``node``."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return Outcome()  # empty lines are ignored
    if line.startswith("/") and not line.startswith("//"):
        return _command(node, line)
    text = line[1:] if line.startswith("//") else line
    problem = node.say(text)
    if problem:
        return Outcome([f"not sent: {problem}"])
    return Outcome(sent=True)


def _command(node: Node, line: str) -> Outcome:
    command, _, arg = line.partition(" ")
    arg = arg.strip()
    if command in ("/exit", "/quit"):
        return Outcome(leave=True)
    if command == "/help":
        return Outcome(HELP.splitlines())
    if command == "/peers":
        return Outcome(peers_lines(node))
    if command == "/nick":
        if not arg:
            return Outcome(["usage: /nick NAME"])
        problem = node.rename(arg)
        return Outcome([f"cannot use that name: {problem}"] if problem else [])
    if command == "/connect":
        where = split_addr(arg)
        if where is None:
            return Outcome(["usage: /connect HOST:PORT"])
        if not node.connect(*where):
            return Outcome([f"already dialling {arg}"])
        return Outcome([f"dialling {arg}"])
    return Outcome([f"unknown command {command}; /help lists the commands"])


def peers_lines(node: Node) -> list[str]:
    """Who is present, one line each: name, address, direct or via whom."""
    via = node.role.via if isinstance(node.role, PeerRole) else {}
    lines = []
    for member in node.members.present():
        if member.node == node.id:
            continue
        name = node.members.display_name(member.node)
        link = node.links.get(member.node)
        if link is not None:
            role = link.hello.role if link.hello else "client"
            lines.append(f"  {name}  {link.addr or link.where}  direct ({role})")
        else:
            hop = via.get(member.node)
            lines.append(f"  {name}  " + (f"via {hop}" if hop else "plain-text client here"))
    header = f"{len(lines)} present besides you ({node.name})"
    return [header, *lines]


async def drive(node: Node, lines: AsyncIterable[str], note: Callable[[str], None]) -> None:
    """Act on the person's lines until /exit or the end of ``lines``; then leave."""
    await node.started.wait()
    async for line in lines:
        outcome = execute(node, line)
        for text in outcome.notes:
            note(text)
        if outcome.leave or node.stopping:
            break
    # What was said before the first links were up leaves with their
    # catch-up, not with us: wait for them (within the handshake time).
    with trio.move_on_after(node.config.timing.handshake):
        await node.dials_settled()
    node.stop()
