"""``trio-chat``: argument parsing, then run the chosen role."""

from __future__ import annotations

import argparse
import errno
import getpass
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import trio

from chat import __version__
from chat.hub import HubFormatter, HubRole, wants_colour
from chat.node import Config, Node
from chat.peer import PeerRole
from chat.plain import Transcript, run_lines
from chat.protocol import MAX_NAME, ProtocolError, join_addr, name_problem, split_addr

log = logging.getLogger("chat")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (a number from 0 to 65535)")
    return int(text)


def _address(text: str) -> tuple[str, int]:
    where = split_addr(text)
    if where is None:
        raise argparse.ArgumentTypeError(f"invalid address {text!r} (expected HOST:PORT)")
    return where


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid count {text!r} (a whole number)")
    return int(text)


def _name(text: str) -> str:
    problem = name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"invalid name {text!r}: {problem}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-chat", description="A group chat over TCP for the terminal."
    )
    parser.add_argument("--version", action="version", version=f"trio-chat {__version__}")
    roles = parser.add_subparsers(dest="role", required=True, metavar="{peer,hub}")

    peer = roles.add_parser("peer", help="join or start a serverless group (a mesh peer)")
    peer.add_argument("port", type=_port, help="TCP port to listen on (0: any free port)")
    peer.add_argument(
        "dial", nargs="*", type=_address, metavar="HOST:PORT", help="peers or hubs to dial"
    )
    peer.add_argument("--name", type=_name, help="your name (default: asked, or your login name)")
    peer.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all IPv4)")
    peer.add_argument("--json", action="store_true", help="transcript as JSON lines")
    peer.add_argument(
        "--history", type=_count, default=1000, help="events kept for catch-up (default 1000)"
    )
    peer.add_argument(
        "--degree", type=_count, default=8, help="peers to dial by peer exchange (default 8)"
    )

    hub = roles.add_parser("hub", help="run a central relay (no person behind it)")
    hub.add_argument("port", type=_port, help="TCP port to listen on (0: any free port)")
    hub.add_argument("dial", nargs="*", type=_address, metavar="HOST:PORT", help="hubs to link to")
    hub.add_argument("--name", type=_name, default="hub", help="the hub's name (default: hub)")
    hub.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all IPv4)")
    hub.add_argument("--history", type=_count, default=10000, help="events kept (default 10000)")
    hub.add_argument("--quiet", action="store_true", help="do not log every message")
    return parser


def login_name() -> str:
    """The login name made into a valid display name."""
    try:
        name = getpass.getuser()
    except Exception:  # no login name in some containers
        name = ""
    name = "".join(c for c in name if c.isprintable()).strip()[:MAX_NAME]
    return name if name and not name_problem(name) else "anon"


class _StatusFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        text = f"trio-chat: {prefix}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _setup_log(formatter: logging.Formatter) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


async def _listen(host: str, port: int) -> list[trio.SocketListener] | None:
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
        log.error("cannot listen on %s: %s", join_addr(host, port), why)
        return None


async def _run_node(
    node: Node,
    listeners: list[trio.SocketListener],
    dial: list[tuple[str, int]],
    front: Callable[[], Awaitable[None]] | None = None,
    stop_error: ProtocolError | None = None,
) -> None:
    """Run ``node`` with its diallers, front end and signal handling until it stops."""

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                node.stop(stop_error)
                return

    async def begin() -> None:
        await node.started.wait()
        for host, port in dial:
            node.connect(host, port)
        if front is not None:
            await front()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals)
        nursery.start_soon(begin)
        await node.run(listeners)
        nursery.cancel_scope.cancel()


async def run_peer(args: argparse.Namespace) -> int:
    _setup_log(_StatusFormatter())
    listeners = await _listen(args.host, args.port)
    if listeners is None:
        return 1
    name = args.name or login_name()
    config = Config(name=name, history=args.history, degree=args.degree)
    node = Node(config, PeerRole(), Transcript(sys.stdout, json_mode=args.json))

    async def front() -> None:
        log.info("listening on %s as %s", join_addr(args.host, node.listen_port or 0), name)
        await run_lines(node, sys.stdin.buffer)

    await _run_node(node, listeners, args.dial, front)
    return 0


async def run_hub(args: argparse.Namespace) -> int:
    _setup_log(HubFormatter(colour=wants_colour(sys.stderr)))
    listeners = await _listen(args.host, args.port)
    if listeners is None:
        return 1
    node = Node(Config(name=args.name, history=args.history), HubRole(quiet=args.quiet))

    async def front() -> None:
        where = join_addr(args.host, node.listen_port or 0)
        log.info("hub listening on %s", where, extra={"tag": "SUCCESS"})

    bye = ProtocolError("shutting_down", "the hub is shutting down")
    await _run_node(node, listeners, args.dial, front, stop_error=bye)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = run_hub if args.role == "hub" else run_peer
    try:
        return trio.run(run, args)
    except KeyboardInterrupt:  # a second Ctrl+C while leaving
        return 130
