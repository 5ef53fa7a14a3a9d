"""Soak: the chaos scenario plus slow consumers for minutes; memory must stay flat.

``python tests/soak.py --minutes 10`` (``--minutes 2`` for a quick check)
runs, for the given time:

- the chaos of :mod:`chaos` (8 peers chatting, SIGKILL + restart, SIGSTOP
  cuts), with the first ``--protected`` peers never killed so that their
  processes live through the whole soak (they are still stopped now and
  then), and the default history (1000 events) so memory reaches its steady
  state early: catch-up therefore only reaches back that far, and the
  delivery check accepts a run of messages that starts later, though no
  later than the first message sent after the holder started;
- slow consumers on peer ``p0``: one raw connection after another (a JSON
  peer that pings but never reads, then a plain-text client that sends empty
  lines but never reads, in turn) with a tiny receive buffer, each held open
  until ``p0`` reports it cut off (its writer stalls: "stopped reading");
- an RSS sampler reading ``VmRSS`` from ``/proc/PID/status`` of every node
  every few seconds;
- the :mod:`adversary` from 127.0.0.2, running its attacks at random on
  random live peers (``--attacks`` to choose some); its lines are left out
  of the delivery check, which still holds for every honest peer.

It exits 1 if the delivery check fails, if no slow consumer was cut off, if
the RSS of any process that was up before the first minute and is up at the
end grew by more than 20 % from its sample at one minute to its last, if the
adversary found a node that neither answered nor closed in time (a hang), or
if a node process ended other than by the driver's SIGKILL.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import signal
import socket
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import trio
from adversary import ATTACKS, Adversary, AdversaryStats
from chaos import HOST, ChaosConfig, Incarnation, Mesh, Report, budget, open_mesh
from procs import OutputEnded

from chat.framing import Decoder
from chat.handshake import Handshake
from chat.keys import SigningKey
from chat.protocol import Ping, TextLine, encode, make_hello

WARMUP = 60.0  # seconds: the sample compared with the last
GROWTH_LIMIT = 0.20
SAMPLE_EVERY = 5.0
SLOW_RCVBUF = 4096  # the kernel doubles it; small, so the node's writer stalls soon
HEARTBEAT = 0.5  # seconds between a slow consumer's writes
CUTOFF_WAIT = 60.0  # a slow consumer not cut off by then is a finding


def rss_kib(pid: int) -> int | None:
    """The resident set size of ``pid`` in KiB, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass
class RssLog:
    """RSS samples of every node: (seconds since the start, {label: KiB})."""

    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)

    def take(self, mesh: Mesh, t0: float) -> None:
        sample: dict[str, int] = {}
        for inc in mesh.current:
            kib = rss_kib(inc.proc.process.pid)
            if kib is not None and inc.proc.returncode is None:
                sample[inc.label] = kib
                self.pids[inc.label] = inc.proc.process.pid
        self.samples.append((trio.current_time() - t0, sample))

    def verdict(self) -> tuple[list[str], list[str]]:
        """A table of start / 1 min / end per long-lived node, and the problems."""
        if not self.samples:
            return [], ["no RSS sample was taken"]
        end_t, end = self.samples[-1]
        warm = next(((t, s) for t, s in self.samples if t >= WARMUP), None)
        table = [f"{'node':8} {'pid':>8} {'start':>9} {'at 1 min':>9} {'end':>9} {'growth':>8}"]
        problems: list[str] = []
        if warm is None:
            return table, [f"the soak ended at {end_t:.0f} s, before the {WARMUP:g} s sample"]
        warm_t, warm_sample = warm
        for label in sorted(self.pids, key=_slot_order):
            first = next(((t, s[label]) for t, s in self.samples if label in s), None)
            if first is None or label not in end or label not in warm_sample:
                continue  # not up for the whole window: not long-lived
            start_kib, at_warm, at_end = first[1], warm_sample[label], end[label]
            growth = at_end / at_warm - 1
            table.append(
                f"{label:8} {self.pids[label]:>8} {start_kib:>7}Ki {at_warm:>7}Ki"
                f" {at_end:>7}Ki {growth:>+7.1%}"
            )
            if growth > GROWTH_LIMIT:
                problems.append(
                    f"{label} RSS grew {growth:+.1%} from {at_warm} KiB at {warm_t:.0f} s"
                    f" to {at_end} KiB at {end_t:.0f} s (limit {GROWTH_LIMIT:.0%})"
                )
        if len(table) == 1:
            problems.append("no node lived through the whole soak")
        return table, problems


def _slot_order(label: str) -> tuple[int, int]:
    slot, _, number = label[1:].partition(".")
    return int(slot), int(number)


async def sample_rss(mesh: Mesh, log: RssLog, t0: float, every: float) -> None:
    """Sample every ``every`` seconds, and say how it goes once a minute."""
    next_report = 60.0
    while True:
        log.take(mesh, t0)
        t, sample = log.samples[-1]
        if t >= next_report:
            next_report += 60.0
            rss = " ".join(f"{label}={kib // 1024}M" for label, kib in sorted(sample.items()))
            c = mesh.counts
            print(f"{t:6.0f}s kills={c.kills} cuts={c.cuts} rss: {rss}", flush=True)
        await trio.sleep(every)  # pacing: the sampling period


@dataclass
class SlowStats:
    connected: int = 0
    cut_off: list[float] = field(default_factory=list)  # seconds until cut off
    reasons: Counter[str] = field(default_factory=Counter)
    not_cut: int = 0

    def line(self) -> str:
        took = ""
        if self.cut_off:
            median = statistics.median(self.cut_off)
            took = (
                f" after {median:.1f} s median ({min(self.cut_off):.1f}-{max(self.cut_off):.1f} s)"
            )
        reasons = ", ".join(f"{why}: {n}" for why, n in self.reasons.most_common())
        return (
            f"slow consumers: {self.connected} connected, {len(self.cut_off)} cut off{took}; "
            f"not cut off within {CUTOFF_WAIT:g} s: {self.not_cut}; reasons: {reasons or '-'}"
        )


async def slow_consumers(target: Incarnation, stats: SlowStats) -> None:
    """One slow consumer after another on ``target``, alternately JSON and plain text."""
    number = 0
    while True:
        number += 1
        await slow_consumer(target, f"slow-{number}", plain=number % 2 == 0, stats=stats)


async def slow_consumer(target: Incarnation, name: str, *, plain: bool, stats: SlowStats) -> None:
    """Connect, say hello, keep writing, never read; until ``target`` cuts us off."""
    proc = target.proc
    mark = len(proc.stderr)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    await sock.connect((HOST, target.slot.port))
    stream = trio.SocketStream(sock)
    if plain:
        first, beat = f"/nick {name}\n".encode(), b"\n"  # empty lines are ignored (§9)
    else:
        first, beat = b"", encode(Ping(0))
        with trio.move_on_after(CUTOFF_WAIT):
            await _handshake(stream, name)  # the node's hello and proof are read, nothing after
    stats.connected += 1
    began = trio.current_time()
    ended = re.compile(rf"connection to {re.escape(name)} (lost|closed) \((?P<why>.*)\)$")
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(_keep_writing, stream, first, beat)
        with trio.move_on_after(CUTOFF_WAIT) as waiting:
            try:
                found = ended.search(await proc.wait_stderr(ended, since=mark))
            except OutputEnded:
                found = None
        nursery.cancel_scope.cancel()
    if waiting.cancelled_caught or found is None:
        stats.not_cut += 1
        return
    stats.cut_off.append(trio.current_time() - began)
    why = re.sub(r"[\d.]+ s", "N s", found["why"])
    stats.reasons[f"{found[1]} ({why})"] += 1


async def _handshake(stream: trio.SocketStream, name: str) -> None:
    """The protocol-2 handshake as a dialling peer (§3)."""
    key = SigningKey()
    shake = Handshake(
        key, outgoing=True, make_hello=lambda nonce: make_hello(key, nonce, name, "peer", None, {})
    )
    decoder = Decoder()
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        for frame in shake.start():
            await stream.send_all(encode(frame))
        while not shake.done and (data := await stream.receive_some(65536)):
            for received in decoder.feed(data):
                if isinstance(received, TextLine) or shake.done:
                    return
                for answer in shake.receive(received):
                    await stream.send_all(encode(answer))


async def _keep_writing(stream: trio.SocketStream, first: bytes, beat: bytes) -> None:
    try:
        await stream.send_all(first)
        while True:
            await trio.sleep(HEARTBEAT)  # pacing: alive, but never reading
            await stream.send_all(beat)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # cut off


def unexpected_exits(mesh: Mesh) -> list[str]:
    """Node processes that have ended, other than by the driver's SIGKILL."""
    out = []
    for inc in mesh.incarnations:
        code = inc.proc.returncode
        if code is not None and not (inc.killed and code == -signal.SIGKILL):
            how = "before the driver killed it" if inc.killed else "unexpectedly"
            out.append(f"{inc.label} exited {how} (code {code})")
    return out


@dataclass
class SoakResult:
    report: Report
    rss_table: list[str]
    problems: list[str]
    slow: SlowStats
    adversary: AdversaryStats


async def soak(config: ChaosConfig, every: float, attacks: list[str] | None = None) -> SoakResult:
    """Chaos, slow consumers, the adversary and the sampler together; then the verdicts."""
    log = RssLog()
    slow = SlowStats()
    with trio.fail_after(budget(config) + CUTOFF_WAIT):
        async with open_mesh(config) as mesh:
            t0 = mesh.t0
            rng = random.Random(mesh.seed + 1)
            adversary = Adversary(mesh.outsiders, rng, attacks, log=mesh.note, t0=t0)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_rss, mesh, log, t0, every)
                nursery.start_soon(slow_consumers, mesh.slots[0].current, slow)
                nursery.start_soon(adversary.run, lambda: mesh.current)
                report = await mesh.run()
                nursery.cancel_scope.cancel()
            log.take(mesh, t0)  # after settling: the last sample
            exits = unexpected_exits(mesh)  # before open_mesh kills them all
            adversary.sweep(mesh.incarnations)
    table, problems = log.verdict()
    if not slow.cut_off:
        problems.append("no slow consumer was ever cut off")
    problems += [f"adversary: a node did not answer: {hang}" for hang in adversary.stats.hangs]
    problems += exits
    return SoakResult(report, table, report.problems + problems, slow, adversary.stats)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="of chaos (default 10)")
    parser.add_argument("--peers", type=int, default=8, help="peers (default 8)")
    parser.add_argument(
        "--protected", type=int, default=4, help="first peers never killed (default 4)"
    )
    parser.add_argument("--rate", type=float, default=5.0, help="messages/s per peer (default 5)")
    parser.add_argument("--sample", type=float, default=SAMPLE_EVERY, help="RSS period, s")
    parser.add_argument("--seed", type=int, help="for the driver's choices")
    parser.add_argument("--keep", type=Path, help="write every transcript into this directory")
    parser.add_argument("--verbose", action="store_true", help="print the driver log live")
    parser.add_argument(
        "--attacks",
        type=lambda text: [name for name in text.split(",") if name],
        default=None,
        help=f"the adversary's attacks, comma-separated (default all: {','.join(ATTACKS)})",
    )
    args = parser.parse_args(argv)
    if not 0 < args.protected < args.peers:
        parser.error("--protected must be between 1 and --peers - 1")
    unknown = set(args.attacks or ()) - set(ATTACKS)
    if unknown or args.attacks == []:
        parser.error(f"--attacks: unknown {', '.join(sorted(unknown)) or 'empty list'}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = ChaosConfig(
        peers=args.peers,
        seconds=args.minutes * 60,
        rate=args.rate,
        protected=args.protected,
        history=None,
        strict=False,
        seed=args.seed,
        keep=args.keep,
        verbose=args.verbose,
    )
    result = trio.run(soak, config, args.sample, args.attacks)
    print("RSS per long-lived node (start, at 1 min, end):")
    print("\n".join(f"  {row}" for row in result.rss_table))
    print(result.slow.line())
    print("\n".join(result.adversary.lines()))
    print(result.report.summary())
    if result.problems:
        print("\n".join(result.problems[:60]))
        if not args.verbose:
            print("driver log (last 40 lines):")
            print("\n".join(result.report.log[-40:]))
        print("soak FAILED")
        return 1
    print("soak passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
