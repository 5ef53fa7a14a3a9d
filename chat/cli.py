"""``trio-chat``: argument parsing, then run the chosen role."""

from __future__ import annotations

import argparse
import errno
import getpass
import importlib.util
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio

from chat.addr import join_addr
from chat.benchcli import main as run_bench
from chat.frontend import drive
from chat.group import SecretError, new_secret
from chat.hub import HubRole
from chat.identity import IdentityError
from chat.logs import HubFormatter, StatusFormatter, wants_colour
from chat.node import Node
from chat.options import Files, config_from, load_files, parse_args, raise_fd_limit
from chat.peer import PeerRole
from chat.plain import Transcript, note, stdin_lines
from chat.protocol import MAX_NAME, ProtocolError, name_problem
from chat.sockets import dialable
from chat.ui import ChatUI

if TYPE_CHECKING:
    from chat.bus import Bus

BUS_ENV = "TRIO_CHAT_BUS"  # the bus URL, a password in it too

log = logging.getLogger("chat")


def login_name() -> str:
    """The login name made into a valid display name."""
    try:
        name = getpass.getuser()
    except Exception:  # no login name in some containers
        name = ""
    name = "".join(c for c in name if c.isprintable()).strip()[:MAX_NAME]
    return name if name and not name_problem(name) else "anon"


def _setup_log(formatter: logging.Formatter) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def _bind(host: str, port: int) -> socket.socket | None:
    """Bind the listening socket before anything else, so a busy port is one
    clear line and exit 1, before any question is asked."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
            0
        ][0]
        return socket.create_server((host, port), family=family, backlog=512)
    except OSError as exc:
        why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
        log.error("cannot listen on %s: %s", join_addr(host, port), why)
        return None


def _listeners(sock: socket.socket) -> list[trio.SocketListener]:
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]


async def _run_node(
    node: Node,
    sock: socket.socket,
    dial: list[tuple[str, int]],
    front: Callable[[], Awaitable[None]] | None = None,
    *,
    stop_error: ProtocolError | None = None,
    signals: bool = True,
    plain: socket.socket | None = None,
) -> int:
    """Run ``node`` with its diallers, front end and signal handling until it stops."""

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for _ in received:
                node.stop(stop_error)
                return

    async def begin() -> None:
        await node.started.wait()
        for host, port in dial:
            node.connect(host, port)
        if front is not None:
            await front()

    async with trio.open_nursery() as nursery:
        if signals:
            nursery.start_soon(watch_signals)
        nursery.start_soon(begin)
        text = _listeners(plain) if plain is not None else []
        await node.run(_listeners(sock), text_listeners=text)
        nursery.cancel_scope.cancel()
    return 0


def status_text(node: Node) -> str:
    """The toolbar: connection state and how many are connected."""
    peers = sum(1 for link in node.neighbours.values() if link.is_peer)
    hubs = len(node.neighbours) - peers
    if node.stopping:
        state = "leaving"
    elif node.neighbours:
        state = "connected"
    elif node.dialler.trying:
        state = "still trying " + ", ".join(node.dialler.trying)
    else:
        state = "alone (waiting for peers)"
    parts = [f"{node.name} on port {node.listen_port}", state, f"{peers} peer{'s' * (peers != 1)}"]
    if hubs:
        parts.append(f"{hubs} hub{'s' * (hubs != 1)}")
    mentions = node.attention.mentions
    if mentions:
        parts.append(f"{mentions} mention{'s' * (mentions != 1)}")
    return " | ".join(parts)


def ready_text(node: Node, host: str) -> str:
    """The first line: who, with which identity, where others can dial."""
    where = join_addr(dialable(host), node.listen_port or 0)
    return (
        f"ready: {node.name} ({node.fingerprint}) on {where} \u2014 others join with:"
        f" trio-chat peer 0 {where}; /help for commands"
    )


def _files(args: argparse.Namespace) -> Files | None:
    """The identity, known names and secret, or None after saying why they
    cannot be used."""
    try:
        return load_files(args)
    except (IdentityError, SecretError) as exc:
        log.error("%s", exc)
        return None


def _start(args: argparse.Namespace) -> tuple[socket.socket, socket.socket | None, Files] | None:
    """The listening sockets and the files, or None after saying what is wrong."""
    sock = _bind(args.host, args.port)
    if sock is None:
        return None
    files = _files(args)
    if files is None:
        return None
    if args.plain_port is None:
        return sock, None, files
    if files.secret is None:
        log.error("--plain-port is for closed groups: an open group takes netcat on its port")
        return None
    plain = _bind(args.plain_host, args.plain_port)
    return (sock, plain, files) if plain is not None else None


def _ready(node: Node, args: argparse.Namespace, plain: socket.socket | None) -> str:
    """What the group is, for the first line: closed or open, and the plain port."""
    if node.tls is None:
        return "an open group"
    if plain is None:
        return "a closed group (TLS and a secret)"
    where = join_addr(args.plain_host, plain.getsockname()[1])
    return f"a closed group (TLS and a secret); plain-text clients on {where}"


def run_peer(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    _setup_log(StatusFormatter())
    started = _start(args)
    if started is None:
        return 1
    sock, plain, files = started
    if interactive:
        return _run_interactive(args, sock, files, plain)
    name = args.name or login_name()
    node = Node(
        config_from(
            args,
            name,
            fd_limit=raise_fd_limit(),
            identity=files.identity,
            known=files.known,
            secret=files.secret,
        ),
        PeerRole(),
        Transcript(sys.stdout, json_mode=args.json),
    )

    async def front() -> None:
        where = join_addr(args.host, node.listen_port or 0)
        log.info("listening on %s as %s (identity %s)", where, name, node.fingerprint)
        log.info("%s", ready_text(node, args.host))
        if node.config.log is not None:
            for line in node.config.log.replay():
                log.info("[log] %s", line)
        if node.tls is not None:
            log.info("this is %s", _ready(node, args, plain))
        await drive(node, stdin_lines(sys.stdin.fileno()), note)

    return trio.run(partial(_run_node, node, sock, args.dial, front, plain=plain))


def _run_interactive(
    args: argparse.Namespace,
    sock: socket.socket,
    files: Files | None = None,
    plain: socket.socket | None = None,
) -> int:
    ui = ChatUI(args.name)

    async def trio_main(ui: ChatUI) -> int:
        assert ui.name is not None
        limit = raise_fd_limit()
        config = config_from(
            args,
            ui.name,
            fd_limit=limit,
            identity=files.identity if files else None,
            known=files.known if files else None,
            secret=files.secret if files else None,
        )
        node = Node(config, PeerRole(), ui.show)
        log.handlers[:] = [_UIHandler(ui)]
        ui.status = lambda: status_text(node)
        ui.prompt_name = lambda: node.name
        ui.attention, ui.own = node.attention, lambda: node.id
        ui.names = lambda: [
            node.members.display_name(m.node) for m in node.members.present() if m.node != node.id
        ]

        async def front() -> None:
            ui.note(ready_text(node, args.host))
            for line in node.config.log.replay() if node.config.log else ():
                ui.note(f"[log] {line}")
            if node.tls is not None:
                ui.note(f"this is {_ready(node, args, plain)}")
            await drive(node, ui.lines, ui.note)

        return await _run_node(node, sock, args.dial, front, signals=False, plain=plain)

    return ui.run(trio_main)


class _UIHandler(logging.Handler):
    """Status lines go above the prompt, not through stderr under it."""

    def __init__(self, ui: ChatUI) -> None:
        super().__init__()
        self.ui = ui
        self.setFormatter(StatusFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.ui.note(self.format(record), error=record.levelno >= logging.WARNING)


def run_hub(args: argparse.Namespace) -> int:
    _setup_log(HubFormatter(colour=wants_colour(sys.stderr)))
    started = _start(args)
    if started is None:
        return 1
    sock, plain, files = started
    config = config_from(
        args, args.name, fd_limit=raise_fd_limit(), identity=files.identity, secret=files.secret
    )
    role = HubRole(quiet=args.quiet, log_rate=args.log_rate)
    node = Node(config, role)
    usable, bus = _bus(args, node)
    if not usable:
        return 2
    role.bus = bus  # from the hub's own join on, what it accepts is appended

    async def front() -> None:
        where = join_addr(args.host, node.listen_port or 0)
        log.info(
            "hub listening on %s (identity %s)", where, node.fingerprint, extra={"tag": "SUCCESS"}
        )
        if node.tls is not None:
            log.info("this is %s", _ready(node, args, plain), extra={"tag": "SUCCESS"})
        if bus is not None:
            log.info("joined to other hubs through %s", bus.address.shown, extra={"tag": "SUCCESS"})
            await bus.run()

    bye = ProtocolError("shutting_down", "the hub is shutting down")
    return trio.run(partial(_run_node, node, sock, args.dial, front, stop_error=bye, plain=plain))


def _bus(args: argparse.Namespace, node: Node) -> tuple[bool, Bus | None]:
    """The hub's bus (``--bus``, else ``$TRIO_CHAT_BUS``; None without one),
    or False after saying why it cannot be used. chat.bus (and coredis) are
    imported only here, only with a bus."""
    url = args.bus or os.environ.get(BUS_ENV)
    if not url:
        return True, None
    from chat.bus import Bus, parse_bus  # noqa: PLC0415 (only with a bus)

    try:
        address = parse_bus(url)
    except ValueError as exc:
        print(f"trio-chat: --bus: {exc}", file=sys.stderr)
        return False, None
    if args.bus and urlsplit(args.bus).password:
        print(
            f"trio-chat: --bus: a password on the command line is visible to everyone on this"
            f" machine (ps); give the whole URL in ${BUS_ENV} instead",
            file=sys.stderr,
        )
        return False, None
    if importlib.util.find_spec("coredis") is None:
        print("trio-chat: --bus needs coredis: pip install 'trio-chat[bus]'", file=sys.stderr)
        return False, None
    return True, Bus(address, node.router, history=args.history)


def run_secret(args: argparse.Namespace) -> int:
    """``trio-chat secret new PATH``."""
    try:
        new_secret(args.path)
    except SecretError as exc:
        print(f"trio-chat: {exc}", file=sys.stderr)
        return 1
    print(
        f"trio-chat: wrote a new group secret to {args.path} (mode 0600). Give it to the"
        " group's members over a channel you trust; each runs with --secret-file PATH.",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = {"hub": run_hub, "peer": run_peer, "bench": run_bench, "secret": run_secret}[args.role]
    try:
        return run(args)
    except KeyboardInterrupt:  # a second Ctrl+C while leaving
        return 130
