"""A person's lines acted on: shared by the interactive UI and line mode."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field

import trio

from chat.addr import split_addr
from chat.attention import BELL_MODES
from chat.commands import HELP, Command, Say, parse
from chat.members import Member
from chat.node import Node
from chat.peer import PeerRole
from chat.render import clock


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
    if name in ("peers", "names"):
        return Outcome(peers_lines(node))
    if name == "me":
        if not arg:
            return Outcome(["usage: /me ACTION"])
        problem = node.say(arg, action=True)
        return Outcome([f"not sent: {problem}"]) if problem else Outcome(sent=True)
    if name == "msg":
        who, _, text = arg.partition(" ")
        if not who or not text.strip():
            return Outcome(["usage: /msg NAME TEXT"])
        problem = node.private(who, text.strip())
        return Outcome([f"not sent: {problem}"]) if problem else Outcome(sent=True)
    if name == "reply":
        if not arg:
            return Outcome(["usage: /reply TEXT"])
        problem = node.reply(arg)
        return Outcome([f"not sent: {problem}"]) if problem else Outcome(sent=True)
    if name in ("ignore", "unignore", "bell"):
        return Outcome(attention_command(node, name, arg))
    if name == "whois":
        if not arg:
            return Outcome(["usage: /whois NAME"])
        return Outcome(whois_lines(node, arg))
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


def attention_command(node: Node, name: str, arg: str) -> list[str]:
    """/ignore, /unignore and /bell (chat.attention)."""
    attention = node.attention
    if name == "bell":
        if arg not in BELL_MODES:
            return [f"usage: /bell off|mentions|all (now {attention.bell})"]
        attention.bell = arg
        return [f"bell: {arg}"]
    if name == "ignore" and not arg:
        if not attention.ignored:
            return ["nobody is ignored"]
        return [f"ignoring {who} ({fp})" for fp, who in attention.ignored.items()]
    if name == "unignore":
        gone = [fp for fp, who in attention.ignored.items() if arg in (who, fp)]
        gone += [
            m.fingerprint for m in node.members.find(arg) if m.fingerprint in attention.ignored
        ]
        for fp in set(gone):
            del attention.ignored[fp]
        return [f"no longer ignoring {arg}"] if gone else [f"{arg} is not ignored"]
    found = [m for m in node.members.find(arg) if m.node != node.id]
    if not found:
        return [f"nobody called {arg} is here; /peers lists who is"]
    if len(found) > 1:
        names = ", ".join(node.members.display_name(m.node) for m in found)
        return [f"{arg} is more than one person: say which ({names})"]
    member = found[0]
    attention.ignored[member.fingerprint] = member.name
    return [f"ignoring {member.name} ({member.fingerprint}): their lines are hidden, not stopped"]


def peers_lines(node: Node) -> list[str]:
    """Who is present, one line each: name, fingerprint, address, direct or via whom."""
    lines = []
    others = [m for m in node.members.present() if m.node != node.id]
    names = [node.members.display_name(m.node) for m in others]
    width = max(map(len, names), default=0)  # (a column)
    for name, member in zip(names, others, strict=True):
        where, how, _ = _route(node, member)
        start = f"  {name:<{width}}  {member.fingerprint}  "
        lines.append(start + (f"{where}  {how}" if where else how))
    header = f"{len(lines)} present besides you ({node.name}, {node.fingerprint})"
    return [header, *lines]


def whois_lines(node: Node, name: str) -> list[str]:
    """Who ``name`` is (``bob`` or ``bob~Ab3x``): what /whois shows (§2)."""
    found = node.members.find(name)
    if not found:
        return [f"nobody called {name} is here; /peers lists who is"]
    lines = []
    for member in found:
        shown = node.members.display_name(member.node)
        if member.node == node.id:
            shown += " (you)"
        if member.person:
            key = f"identity {member.fingerprint}"
        elif member.host:
            host = node.members.get(member.host)
            by = host.name if host else member.host[:8]
            if member.host == node.id:
                by = "this node"
            key = (
                f"no key of its own: a plain-text client vouched for by {by}"
                f" (run key {member.fingerprint})"
            )
        else:
            key = f"no identity: known by its run key {member.fingerprint}"
        where, how, since = _route(node, member)
        lines.append(f"{shown}: {key}")
        lines.append(f"  node {member.node}" + (f", address {where}" if where else ""))
        lines.append(f"  {how}, since {clock(since)}")
    return lines


def _route(node: Node, member: Member) -> tuple[str, str, float]:
    """How ``member`` is reached: its address, direct or via whom, and since when."""
    if member.node == node.id:
        return f"port {node.listen_port}" if node.listen_port else "", "this node", node.me.joined
    link = node.neighbours.get(member.node)
    if link is not None:
        role = link.hello.role if link.hello else "client"
        since = time.time() - (trio.current_time() - link.up_at)
        return link.addr or link.where, f"direct ({role})", since
    for session in node.router.audience.sessions:
        if session.author.id == member.node:
            return session.where, "plain-text client here", member.since
    via = node.role.via if isinstance(node.role, PeerRole) else {}
    hop = via.get(member.node)
    return "", (f"via {hop}" if hop else "via others"), member.since


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
