"""A person's lines acted on: shared by the interactive UI and line mode."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field

import trio

from chat.addr import split_addr
from chat.commands import HELP, Command, Say, parse
from chat.node import Node
from chat.peer import PeerRole


@dataclass
class Outcome:
    """What a typed line did: notes for the person, and whether to leave."""

    notes: list[str] = field(default_factory=list)
    leave: bool = False
    sent: bool = False  # the line went out as a message


def execute(node: Node, line: str) -> Outcome:
    """Act on one line typed by the person running ``node``."""
    action = parse(line)
    if action is None:
        return Outcome()  # empty lines are ignored
    if isinstance(action, Say):
        problem = node.say(action.text)
        return Outcome([f"not sent: {problem}"]) if problem else Outcome(sent=True)
    return _command(node, action)


def _command(node: Node, command: Command) -> Outcome:
    name, arg = command.name, command.arg
    if name in ("exit", "quit"):
        return Outcome(leave=True)
    if name == "help":
        return Outcome(HELP.splitlines())
    if name == "peers":
        return Outcome(peers_lines(node))
    if name == "nick":
        if not arg:
            return Outcome(["usage: /nick NAME"])
        problem = node.rename(arg)
        return Outcome([f"cannot use that name: {problem}"] if problem else [])
    if name == "connect":
        where = split_addr(arg)
        if where is None:
            return Outcome(["usage: /connect HOST:PORT"])
        if not node.connect(*where):
            return Outcome([f"already dialling {arg}"])
        return Outcome([f"dialling {arg}"])
    return Outcome([f"unknown command /{name}; /help lists the commands"])


def peers_lines(node: Node) -> list[str]:
    """Who is present, one line each: name, address, direct or via whom."""
    via = node.role.via if isinstance(node.role, PeerRole) else {}
    lines = []
    for member in node.members.present():
        if member.node == node.id:
            continue
        name = node.members.display_name(member.node)
        link = node.neighbours.get(member.node)
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
