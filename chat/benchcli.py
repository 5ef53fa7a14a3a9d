"""``trio-chat bench``'s command line: its options, and running it (chat.bench)."""

from __future__ import annotations

import argparse
import json
import resource
import sys
from dataclasses import asdict
from pathlib import Path

import trio

from chat.addr import split_addr
from chat.bench import WINDOW, Bench, Options
from chat.group import SecretError, load_secret


def raise_fd_limit(wanted: int) -> None:
    """Raise the soft open-files limit toward ``wanted`` (the hard limit caps it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="HOST:PORT", help="the hub or peer to load")
    parser.add_argument("--clients", type=int, default=50, help="clients to connect (default 50)")
    parser.add_argument("--senders", type=int, default=10, help="clients that send (default 10)")
    parser.add_argument("--messages", type=int, default=1000, help="messages per sender")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        metavar="N",
        help="messages each sender sends first, counted but not timed (default 0)",
    )
    parser.add_argument("--rate", type=float, default=0.0, help="total messages/s (default: max)")
    parser.add_argument("--window", type=int, default=WINDOW, help="messages in flight at most")
    parser.add_argument("--silent", type=int, default=0, help="clients that never read")
    parser.add_argument("--json", action="store_true", help="one JSON line of results")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="another hub of the same group (joined by --bus): clients are spread round-robin",
    )
    parser.add_argument(
        "--secret-file",
        type=Path,
        metavar="PATH",
        help="load a closed group: TLS and its secret (else $TRIO_CHAT_SECRET, else open)",
    )


def main(args: argparse.Namespace) -> int:
    where = split_addr(args.target)
    if where is None:
        print(
            f"trio-chat bench: invalid address {args.target!r} (expected HOST:PORT)",
            file=sys.stderr,
        )
        return 2
    others = [split_addr(other) for other in args.also]
    if None in others:
        print("trio-chat bench: --also takes HOST:PORT", file=sys.stderr)
        return 2
    # Senders are the first clients; silent ones sit before the last (the probe).
    room = args.clients - (args.silent + 1 if args.silent else 0)
    if not 1 <= args.senders <= room:
        print("trio-chat bench: need 1 <= senders and senders + silent < clients", file=sys.stderr)
        return 2
    if args.messages < 1 or args.warmup < 0:
        print("trio-chat bench: need --messages >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    try:
        secret = load_secret(args.secret_file)
    except SecretError as exc:
        print(f"trio-chat bench: {exc}", file=sys.stderr)
        return 2
    raise_fd_limit(args.clients + 100)
    # Senders (trio) and receivers (a thread) share the GIL: hand it over
    # every 0.2 ms rather than 5, or senders stall behind a busy receiver.
    sys.setswitchinterval(0.0002)
    options = Options(
        where[0],
        where[1],
        args.clients,
        args.senders,
        args.messages,
        args.rate,
        args.window,
        args.silent,
        secret=secret,
        more=tuple(o for o in others if o is not None),
        warmup=args.warmup,
    )
    bench = Bench(options)
    errors: list[BaseException] = []
    try:
        result = trio.run(bench.run, sys.stderr.isatty() and not args.json)
    except* OSError as group:  # ConnectionError included
        errors.extend(group.exceptions)
    except* (trio.BrokenResourceError, trio.ClosedResourceError) as group:
        # The node cut a client off mid-run (a limit, or a link it found dead).
        errors.extend(
            RuntimeError(f"the node cut a client off during the run ({exc})")
            for exc in group.exceptions
        )
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        print(f"trio-chat bench: {errors[0]}{more}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(result)) if args.json else result.table(), flush=True)
    return 0 if result.lost == 0 and result.duplicates == 0 else 1
