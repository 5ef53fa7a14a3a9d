"""The command line's options, checked as they are read, and the config they make."""

from __future__ import annotations

import argparse
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chat import __version__
from chat.addr import split_addr
from chat.benchcli import add_arguments as add_bench_arguments
from chat.config import Config, Timing
from chat.group import SECRET_ENV, load_secret
from chat.identity import KnownNames, config_dir, load_identity
from chat.keys import SigningKey
from chat.logfile import ChatLog
from chat.protocol import name_problem
from chat.state import HISTORY_BYTES

RESERVED_FDS = 64  # descriptors a node keeps for itself beyond its connections


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (a number from 0 to 65535)")
    return int(text)


def _address(text: str) -> tuple[str, int]:
    where = split_addr(text)
    if where is None:
        raise argparse.ArgumentTypeError(f"invalid address {text!r} (expected HOST:PORT)")
    return where


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"invalid count {text!r} (a whole number)")
    return int(text)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid number {text!r} (0 or more)")
    return value


def config_from(
    args: argparse.Namespace,
    name: str,
    *,
    fd_limit: int = 0,
    identity: SigningKey | None = None,
    known: KnownNames | None = None,
    secret: bytes | None = None,
) -> Config:
    """The node's configuration from the options both roles share.

    Without ``--max-connections``, the limit follows the descriptors the
    process may open (``fd_limit``), less some for the node's own files.
    ``identity`` and ``known`` are read by :func:`load_files`.
    """
    keepalive = args.keepalive or 15.0
    timing = Timing(ping_after=keepalive, dead_after=3 * keepalive)
    max_connections = args.max_connections
    if max_connections is None:
        max_connections = max(16, fd_limit - RESERVED_FDS) if fd_limit else 1024
    words = getattr(args, "highlight", "") or ""
    log_path = getattr(args, "log", None)
    return Config(
        name,
        highlights=tuple(w.strip() for w in words.split(",") if w.strip()),
        log=ChatLog(log_path, json_mode=args.log_json) if log_path else None,
        identity=identity,
        known=known,
        secret=secret,
        history=args.history,
        history_bytes=args.history_bytes,
        degree=getattr(args, "degree", 0),
        timing=timing,
        rate=args.rate,
        burst=args.burst,
        link_rate=args.link_rate,
        max_connections=max_connections,
        max_per_address=args.max_per_address,
        max_text_per_address=args.max_text_per_address,
        join_rate=args.join_rate,
        origin_rate=args.origin_rate,
    )


@dataclass(frozen=True)
class Files:
    """What a node reads before it starts, besides its options."""

    identity: SigningKey
    known: KnownNames | None  # None: a hub, which shows no names to anyone
    secret: bytes | None  # a closed group's (§8)


def load_files(args: argparse.Namespace) -> Files:
    """The identity (created on first run), the names seen before and the
    group secret, as the options say. Raises
    :class:`~chat.identity.IdentityError` or :class:`~chat.group.SecretError`
    with what to do."""
    secret = load_secret(args.secret_file)
    identity = load_identity(args.identity)
    where = getattr(args, "known_names", None)
    if where is None and not hasattr(args, "known_names"):
        return Files(identity, None, secret)
    if where == "none":
        return Files(identity, KnownNames(None), secret)
    path = Path(where) if where else config_dir() / "known_names"
    return Files(identity, KnownNames(path), secret)


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one, as servers do; the result."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20  # what Linux allows at most by default (fs.nr_open)
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return hard if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft
    return hard


def _name(text: str) -> str:
    problem = name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"invalid name {text!r}: {problem}")
    return text


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and one parser per role.

    Each role parses with ``parse_intermixed_args`` so options may come
    before or after the addresses (argparse cannot intermix under
    subparsers, hence the two levels).
    """
    parser = argparse.ArgumentParser(
        prog="trio-chat",
        description="A group chat over TCP for the terminal.",
        epilog="trio-chat peer -h and trio-chat hub -h describe each role.",
    )
    parser.add_argument("--version", action="version", version=f"trio-chat {__version__}")
    parser.add_argument(
        "role",
        choices=["peer", "join", "hub", "bench", "secret"],
        help="run a mesh peer (join HOST:PORT: a peer on any free port that dials it),"
        " a hub, or the load tool; or make a group secret",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    peer = argparse.ArgumentParser(
        prog="trio-chat peer", description="Join or start a serverless group (a mesh peer)."
    )
    hub = argparse.ArgumentParser(
        prog="trio-chat hub", description="Run a central relay (no person behind it)."
    )
    for role in (peer, hub):
        role.add_argument("port", type=_port, help="TCP port to listen on (0: any free port)")
        role.add_argument(
            "dial", nargs="*", type=_address, metavar="HOST:PORT", help="peers or hubs to dial"
        )
        role.add_argument(
            "--host", default="0.0.0.0", help="address to listen on (default: all IPv4)"
        )
    for role in (peer, hub):
        closed = role.add_argument_group(
            "closed groups",
            "With a secret every connection is TLS 1.3 and both ends prove they know the"
            " secret before anything else passes (docs/PROTOCOL.md §8).",
        )
        closed.add_argument(
            "--secret-file",
            type=Path,
            metavar="PATH",
            help="the group's secret (make one with: trio-chat secret new PATH); else"
            f" ${SECRET_ENV}, else an open group. Never the secret itself on the command line",
        )
        closed.add_argument(
            "--plain-port",
            type=_port,
            metavar="PORT",
            help="also accept plain-text clients (netcat, telnet) of a closed group on this"
            " port, without TLS: whoever reaches it can read and write the chat",
        )
        closed.add_argument(
            "--plain-host",
            default="127.0.0.1",
            help="where --plain-port listens (default 127.0.0.1: this machine only)",
        )
        role.add_argument(
            "--identity",
            type=Path,
            metavar="PATH",
            help="your identity key file, created on first run, readable by you alone"
            " (default: $XDG_CONFIG_HOME/trio-chat/identity, else"
            " ~/.config/trio-chat/identity)",
        )
    for role in (peer, hub):
        limits = role.add_argument_group("limits (both roles)")
        limits.add_argument(
            "--rate",
            type=_number,
            default=20.0,
            help="events a second a connection may originate (default 20; 0: no limit)",
        )
        limits.add_argument(
            "--burst", type=_number, default=50.0, help="events allowed in a burst (default 50)"
        )
        limits.add_argument(
            "--link-rate",
            type=_number,
            default=5000.0,
            help="forwarded events a second per connection (default 5000; 0: no limit)",
        )
        limits.add_argument(
            "--origin-rate",
            type=_number,
            default=100.0,
            help="new events a second of any one origin, however they come"
            " (default 100, bursts of 1000; 0: no limit)",
        )
        limits.add_argument(
            "--max-connections",
            type=_count,
            default=None,
            help="connections accepted at once (default: as many as the open-files limit"
            f" allows, less {RESERVED_FDS})",
        )
        limits.add_argument(
            "--max-per-address",
            type=_count,
            default=64,
            help="connections from one IP address (default 64; 0: no limit)",
        )
        limits.add_argument(
            "--max-text-per-address",
            type=_count,
            default=16,
            help="plain-text clients from one IP address (default 16; 0: no limit)",
        )
        limits.add_argument(
            "--join-rate",
            type=_number,
            default=5.0,
            help="joins a second from one IP address, after a burst of 50 (default 5; 0: no limit)",
        )
        limits.add_argument(
            "--history-bytes",
            type=_count,
            default=HISTORY_BYTES,
            help=f"bytes of history kept at most (default {HISTORY_BYTES >> 20} MiB)",
        )
        limits.add_argument(
            "--keepalive",
            type=_number,
            default=15.0,
            help="seconds of silence before a ping; a link silent 3 times as long is lost"
            " (default 15, as the protocol says; shorter only for tests)",
        )
    peer.add_argument("--name", type=_name, help="your name (default: asked, or your login name)")
    peer.add_argument("--json", action="store_true", help="transcript as JSON lines")
    peer.add_argument(
        "--highlight",
        metavar="WORD,...",
        default="",
        help="words that highlight a line and ring the bell, besides your name",
    )
    peer.add_argument(
        "--log",
        metavar="PATH",
        help="append every line shown to this file (mode 0600); %%Y-%%m-%%d in it rotates"
        " the file daily. One path per group: at start its last lines are shown again",
    )
    peer.add_argument("--log-json", action="store_true", help="log JSON lines, as --json")
    peer.add_argument(
        "--known-names",
        metavar="PATH|none",
        help="where names seen before and their fingerprints are kept, to warn of a"
        " new identity under a known name (default: known_names beside the identity's"
        " default place; none: remember nothing)",
    )
    peer.add_argument(
        "--history", type=_count, default=1000, help="events kept for catch-up (default 1000)"
    )
    peer.add_argument(
        "--degree", type=_count, default=8, help="peers to dial by peer exchange (default 8)"
    )
    hub.add_argument("--name", type=_name, default="hub", help="the hub's name (default: hub)")
    hub.add_argument("--history", type=_count, default=10000, help="events kept (default 10000)")
    hub.add_argument("--quiet", action="store_true", help="do not log every message")
    hub.add_argument(
        "--bus",
        metavar="URL",
        help="join other hubs through Redis: redis://HOST:PORT/DB[?group=NAME] (or rediss://);"
        " a URL with a password goes in $TRIO_CHAT_BUS, never on the command line",
    )
    hub.add_argument(
        "--log-rate",
        type=_number,
        default=20.0,
        help="log lines a second about one address, after a burst of 100; the rest are"
        " counted in one line (default 20; 0: no limit)",
    )
    bench = argparse.ArgumentParser(
        prog="trio-chat bench", description="Load a hub or peer and measure it."
    )
    add_bench_arguments(bench)
    secret = argparse.ArgumentParser(
        prog="trio-chat secret",
        description="Make a closed group's secret: 256 random bits in a file only you can"
        " read (mode 0600). Give it to the members over a channel you trust.",
    )
    secret.add_argument("action", choices=["new"], help="new: write a new secret")
    secret.add_argument("path", type=Path, metavar="PATH", help="the file to create")
    return parser, {"peer": peer, "hub": hub, "bench": bench, "secret": secret}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    top, roles = build_parser()
    first = top.parse_args(argv)
    if first.role == "join":  # trio-chat join HOST:PORT = trio-chat peer 0 HOST:PORT
        args = roles["peer"].parse_intermixed_args(["0", *first.args])
        if not args.dial:
            roles["peer"].error("join needs the HOST:PORT of a peer or hub to join")
        args.role = "peer"
        return args
    args = roles[first.role].parse_intermixed_args(first.args)
    args.role = first.role
    return args
