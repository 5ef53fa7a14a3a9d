"""``trio-chat``: argument parsing, then run the chosen role."""

from __future__ import annotations

import argparse
import errno
import getpass
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from chat import __version__
from chat.connection import Timing
from chat.node import Config, Node
from chat.peer import PeerRole
from chat.plain import Transcript, run_lines
from chat.protocol import MAX_NAME, join_addr, name_problem, split_addr

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
    peer.add_argument("dial", nargs="*", type=_address, metavar="HOST:PORT", help="peers or hubs to dial")
    peer.add_argument("--name", type=_name, help="your name (default: asked, or your login name)")
    peer.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all IPv4)")
    peer.add_argument("--json", action="store_true", help="transcript as JSON lines")
    peer.add_argument("--history", type=_count, default=1000, help="events kept for catch-up (default 1000)")
    peer.add_argument("--degree", type=_count, default=8, help="peers to dial by peer exchange (default 8)")
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


def _setup_status_log() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StatusFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


async def _listen(host: str, port: int) -> list[trio.SocketListener] | None:
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        print(f"trio-chat: cannot listen on {join_addr(host, port)}: {why}", file=sys.stderr)
        return None


async def _watch_signals(node: Node) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            node.stop()
            return


async def run_peer(args: argparse.Namespace) -> int:
    listeners = await _listen(args.host, args.port)
    if listeners is None:
        return 1
    name = args.name or login_name()
    config = Config(name=name, role="peer", history=args.history, degree=args.degree, timing=Timing())
    node = Node(config, PeerRole(), Transcript(sys.stdout, json_mode=args.json))

    async def front() -> None:
        await node.started.wait()
        log.info("listening on %s as %s", join_addr(args.host, node.listen_port or 0), name)
        for host, port in args.dial:
            node.connect(host, port)
        await run_lines(node, sys.stdin.buffer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, node)
        nursery.start_soon(front)
        await node.run(listeners)
        nursery.cancel_scope.cancel()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_status_log()
    try:
        return trio.run(run_peer, args)
    except KeyboardInterrupt:  # a second Ctrl+C while leaving
        return 130
