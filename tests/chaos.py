"""Chaos for the mesh: peers chat while processes die and links are cut.

Eight ``trio-chat peer`` processes on 127.0.0.1 (``--json --keepalive 1``)
form a ring of command-line dials (each dials the one before it, the last
also the first; peer exchange then makes a full mesh) and exchange numbered
messages through their stdin: each incarnation of peer ``p3`` says
``p3.1:1``, ``p3.1:2``, ... and, after a restart, ``p3.2:1``, ... Meanwhile
a driver repeatedly

- SIGKILLs a peer and restarts it on the port it had, dialling both its ring
  neighbours: a new node id, so a new origin and a new incarnation label;
- cuts every link of a peer by stopping it with SIGSTOP for longer than
  3 x keepalive (the dead-link rule of §7 closes them), then SIGCONT.

Then the driver and the senders stop, the mesh settles (each survivor's
transcript is awaited, line by line, until it shows the last message of
every surviving incarnation), and the ``--json`` transcripts are checked
against §5 and §6:

- every surviving peer holds every message of every surviving incarnation,
  from that incarnation's first (with a history long enough to hold the
  whole run; ``strict=False`` accepts a run that starts later, but no later
  than the first message sent after the holder started), exactly once and in
  order; no gap is reported for them;
- messages of killed incarnations, where held at all, are held once and in
  order; every origin's events are delivered once, in ``seq`` order;
- ``history`` is true exactly for events older than the holder's own join;
- an outsider's lines (an origin in ``Mesh.outsiders``, or one shown with a
  text starting ``OUTSIDER_TEXT`` or named after an address of
  ``OUTSIDER_HOST``, and never a peer's) are not checked (``soak.py``'s
  adversary).

``python tests/chaos.py --seconds 30`` runs it alone; ``test_chaos.py`` and
``soak.py`` import :func:`open_mesh` and :class:`Mesh`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from procs import ChatProcess, OutputEnded, ProcessGroup, process_group

HOST = "127.0.0.1"
TEXT = re.compile(r"^(?P<label>p\d+\.\d+):(?P<n>\d+)$")
RESTART_TRIES = 10  # a restarted peer's port may be briefly held by another socket
RESTART_PAUSE = 0.5
CHECKED_KINDS = {"join", "msg", "nick", "leave", "lost"}
# An outsider (tests/adversary.py) connects from OUTSIDER_HOST and starts every
# text with OUTSIDER_TEXT; its lines are skipped by the check, never a peer's.
OUTSIDER_HOST = "127.0.0.2"
OUTSIDER_TEXT = "adversary"


class ChaosError(Exception):
    """The driver itself could not go on (not a finding about the chat)."""


@dataclass
class ChaosConfig:
    """The size and pace of one chaos run."""

    peers: int = 8
    seconds: float = 30.0  # of chaos, before the settling
    rate: float = 5.0  # messages a second per peer
    keepalive: float = 1.0
    stop: tuple[float, float] = (3.5, 4.5)  # SIGSTOP durations, > 3 x keepalive
    pause: tuple[float, float] = (1.0, 2.5)  # between two driver actions
    max_stopped: int = 2  # peers stopped at once
    protected: int = 0  # the first this many peers are never killed
    history: int | None = 20000  # --history (None: the default)
    node_rate: float | None = None  # --rate (None: the default flood control)
    strict: bool = True  # every message from n=1 (needs history for the whole run)
    settle: float = 30.0  # seconds allowed for the mesh to settle
    seed: int | None = None
    keep: Path | None = None  # write every transcript here
    verbose: bool = False  # print the driver log as it happens


@dataclass(eq=False)
class Incarnation:
    """One process of a slot, from its start to its SIGKILL (or the end)."""

    slot: Slot
    number: int
    proc: ChatProcess
    started: float  # trio clock, when it listened
    origin: str = ""  # its node id, from its own join
    joined: float = 0.0  # the ts of its own join (wall clock)
    sent: list[float] = field(default_factory=list)  # send time of message n at [n-1]
    killed: bool = False
    stopped: bool = False
    cuts: list[tuple[float, float]] = field(default_factory=list)  # (SIGSTOP, SIGCONT)

    @property
    def label(self) -> str:
        return f"{self.slot.name}.{self.number}"


@dataclass(eq=False)
class Slot:
    """A peer's name and port, kept across restarts."""

    index: int
    name: str
    port: int = 0
    incarnations: list[Incarnation] = field(default_factory=list)

    @property
    def current(self) -> Incarnation:
        return self.incarnations[-1]


@dataclass
class Counts:
    kills: int = 0
    cuts: int = 0
    links_cut: int = 0  # dead-link reports by the others during the stops
    sent: int = 0
    kept: int = 0  # sent by the surviving incarnations
    deliveries: int = 0
    survivors: int = 0
    incarnations: int = 0
    gaps: int = 0
    caught_up: int = 0  # messages a cut peer can only have had by catch-up (§6)
    cut_survivors: int = 0  # survivors that were stopped at least once
    settle: float = 0.0

    def line(self) -> str:
        return (
            f"kills={self.kills} cuts={self.cuts} links_cut={self.links_cut} "
            f"messages={self.sent} (survivors' {self.kept}) deliveries={self.deliveries} "
            f"survivors={self.survivors} incarnations={self.incarnations} "
            f"caught_up={self.caught_up} gaps={self.gaps} "
            f"settle={self.settle:.1f}s"
        )


@dataclass
class Report:
    """What a run did and what the check found."""

    seed: int
    counts: Counts
    problems: list[str]
    log: list[str]
    seconds: float = 0.0  # the whole run

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        verdict = "PASS" if self.ok else f"FAIL ({len(self.problems)} problems)"
        return f"chaos {verdict}: {self.counts.line()} seed={self.seed} run={self.seconds:.1f}s"

    def details(self) -> str:
        """The summary, every problem, and the driver's log."""
        shown = self.problems[:40]
        more = len(self.problems) - len(shown)
        parts = [self.summary(), *shown]
        if more:
            parts.append(f"... and {more} more problems")
        parts += ["driver log:", *self.log]
        return "\n".join(parts)


class Mesh:
    """The peers of one run, the driver that abuses them, and the check."""

    def __init__(self, group: ProcessGroup, config: ChaosConfig, home: Path) -> None:
        self.group = group
        self.config = config
        self.home = home  # each slot's identity file: a restart is the same person
        self.seed = config.seed if config.seed is not None else random.randrange(1 << 32)
        self.rng = random.Random(self.seed)
        self.slots = [Slot(i, f"p{i}") for i in range(config.peers)]
        self.counts = Counts()
        self.log: list[str] = []
        self.t0 = trio.current_time()
        self.quiet = False  # senders stop at their next turn
        self.driver_problems: list[str] = []  # what the driver saw go wrong
        self.outsiders: set[str] = set()  # origins an outsider made up: not checked
        self._senders: trio.Nursery | None = None

    # ------------------------------------------------------------- the peers

    def note(self, text: str) -> None:
        entry = f"{trio.current_time() - self.t0:7.2f}  {text}"
        self.log.append(entry)
        if self.config.verbose:
            print(entry, flush=True)

    def ring(self, slot: Slot) -> list[Slot]:
        """The slot's two neighbours on the ring of command-line dials."""
        n = len(self.slots)
        return [self.slots[(slot.index - 1) % n], self.slots[(slot.index + 1) % n]]

    async def start(self) -> None:
        """Start every peer on port 0, each dialling the one before it."""
        self.t0 = trio.current_time()
        for slot in self.slots:
            dial = [other for other in self.ring(slot) if other.port]
            await self.launch(slot, dial)
        self.note(
            f"{len(self.slots)} peers up: " + " ".join(f"{s.name}@{s.port}" for s in self.slots)
        )

    async def launch(self, slot: Slot, dial: Iterable[Slot]) -> Incarnation:
        """Start the slot's next incarnation (on its port, once it has one)."""
        config = self.config
        number = len(slot.incarnations) + 1
        args = ["peer", str(slot.port), *(f"{HOST}:{other.port}" for other in dial)]
        args += ["--host", HOST, "--name", slot.name, "--json"]
        args += ["--identity", str(self.home / f"{slot.name}.key"), "--known-names", "none"]
        args += ["--keepalive", f"{config.keepalive:g}"]
        if config.history is not None:
            args += ["--history", str(config.history)]
        if config.node_rate is not None:
            args += ["--rate", f"{config.node_rate:g}"]
        label = f"{slot.name}.{number}"
        for attempt in range(1, RESTART_TRIES + 1):
            proc = await self.group.start(*args, label=label)
            try:
                port = await proc.wait_listening()
                break
            except OutputEnded:
                busy = any("already in use" in line for line in proc.stderr.lines)
                if not (busy and slot.port) or attempt == RESTART_TRIES:
                    raise ChaosError(f"{label} did not start\n{proc.describe()}") from None
                self.note(f"{label}: port {slot.port} busy, trying again ({attempt})")
                await trio.sleep(RESTART_PAUSE)  # paced retry: someone else holds the port
        if slot.port and port != slot.port:
            raise ChaosError(f"{label} listens on {port}, not {slot.port}")
        slot.port = port
        inc = Incarnation(slot, number, proc, trio.current_time())
        # Its own join is the first thing a peer shows (node.run), before any link.
        first = json.loads(await proc.wait_stdout(".*"))
        if first.get("type") != "join" or first.get("name") != slot.name or first.get("seq") != 1:
            raise ChaosError(f"{label}: the first line is not its own join: {first}")
        inc.origin, inc.joined = first["origin"], first["ts"]
        slot.incarnations.append(inc)
        self.counts.incarnations += 1
        if self._senders is not None:
            self._senders.start_soon(self.chatter, inc)
        return inc

    @property
    def current(self) -> list[Incarnation]:
        return [slot.current for slot in self.slots]

    @property
    def incarnations(self) -> list[Incarnation]:
        return [inc for slot in self.slots for inc in slot.incarnations]

    # ------------------------------------------------------------ the traffic

    async def chatter(self, inc: Incarnation) -> None:
        """Type ``<label>:<n>`` into the peer's stdin, ``rate`` times a second."""
        interval = 1.0 / self.config.rate
        await trio.sleep(self.rng.uniform(0, interval))  # spread the peers' turns
        while not self.quiet and not inc.killed:
            n = len(inc.sent) + 1
            try:
                await inc.proc.send_line(f"{inc.label}:{n}")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # killed under our hands
            inc.sent.append(trio.current_time())
            await trio.sleep(interval)  # pacing

    # ------------------------------------------------------------ the driver

    async def kill_and_restart(self, slot: Slot) -> None:
        old = slot.current
        old.killed = True
        old.proc.kill()
        await old.proc.wait()  # the port is free once the process is gone
        self.counts.kills += 1
        new = await self.launch(slot, self.ring(slot))
        how = " (it was stopped)" if old.stopped else ""
        self.note(
            f"kill {old.label}{how} after {len(old.sent)} messages; "
            f"{new.label} up on port {slot.port} as {new.origin[:8]}"
        )

    async def cut(self, inc: Incarnation, seconds: float) -> None:
        """Stop ``inc`` long enough for every link of it to be declared dead."""
        others = [other for other in self.current if other is not inc]
        marks = {other: len(other.proc.stderr) for other in others}
        kills = self.counts.kills
        inc.stopped = True
        self.counts.cuts += 1
        self.note(f"stop {inc.label} for {seconds:.1f} s")
        inc.proc.signal(signal.SIGSTOP)
        stopped_at = trio.current_time()
        try:
            await trio.sleep(seconds)  # the deliberate cut
        finally:
            inc.proc.signal(signal.SIGCONT)
            inc.stopped = False
            inc.cuts.append((stopped_at, trio.current_time()))
        dead = re.compile(rf"connection to {re.escape(inc.slot.name)} lost \(nothing received")
        reports = sum(
            1
            for other, mark in marks.items()
            for line in other.proc.stderr.lines[mark:]
            if dead.search(line)
        )
        self.counts.links_cut += reports
        state = "killed meanwhile" if inc.killed else f"{reports} links reported dead"
        self.note(f"cont {inc.label} ({state})")
        if not reports and not inc.killed:
            why = (
                f"{inc.label} was stopped for {seconds:.1f} s, yet no peer declared a link"
                f" to it dead (keepalive {self.config.keepalive:g} s, §7)"
            )
            if self.counts.kills > kills:
                # Whoever it was linked to may have been killed before the
                # dead-link time: nobody was left to declare it.
                self.note(f"(allowed: a peer was killed meanwhile) {why}")
            else:
                self.driver_problems.append(why)

    async def drive(self, seconds: float) -> None:
        """Kill and cut, alternately, at random peers, for ``seconds``."""
        config = self.config
        end = trio.current_time() + seconds
        async with trio.open_nursery() as cuts:
            while True:
                left = end - trio.current_time()
                if left <= 0:
                    break
                await trio.sleep(min(self.rng.uniform(*config.pause), left))  # pacing
                if trio.current_time() >= end:
                    break
                killable = self.slots[config.protected :]
                # A peer restarted while both its ring neighbours were
                # stopped has no link until they resume: not one to cut yet.
                # Nor one just resumed: stopped again before its links are
                # back, no peer has a link to it to declare dead.
                settled = trio.current_time() - config.stop[1] - 1.0
                stoppable = [
                    inc
                    for inc in self.current
                    if not inc.stopped
                    and inc.started < settled
                    and (not inc.cuts or inc.cuts[-1][1] < settled)
                ]
                stopped = sum(1 for inc in self.current if inc.stopped)
                can_cut = bool(stoppable) and stopped < config.max_stopped
                want_kill = self.counts.kills < self.counts.cuts or (
                    self.counts.kills == self.counts.cuts and self.rng.random() < 0.5
                )
                if killable and (want_kill or not can_cut):
                    await self.kill_and_restart(self.rng.choice(killable))
                elif can_cut:
                    cuts.start_soon(
                        self.cut, self.rng.choice(stoppable), self.rng.uniform(*config.stop)
                    )
        self.note("driver stopped")

    # ------------------------------------------------------------ a whole run

    async def run(self) -> Report:
        """Chat under chaos for ``seconds``, settle, check; the report."""
        config = self.config
        started = trio.current_time()
        async with trio.open_nursery() as senders:
            self._senders = senders
            for inc in self.current:
                senders.start_soon(self.chatter, inc)
            await self.drive(config.seconds)
            self.quiet = True  # each sender ends at its next turn
        self._senders = None
        self.counts.sent = sum(len(inc.sent) for inc in self.incarnations)
        self.counts.kept = sum(len(inc.sent) for inc in self.current)
        self.note(f"senders stopped after {self.counts.sent} messages")
        problems = self.driver_problems + await self.settle()
        problems += self.check()
        if config.keep is not None:
            self.keep(config.keep)
        return Report(self.seed, self.counts, problems, self.log, trio.current_time() - started)

    async def settle(self) -> list[str]:
        """Wait until every survivor shows the last message of every survivor."""
        begun = trio.current_time()
        problems: list[str] = []
        with trio.move_on_after(self.config.settle) as waiting:
            for holder in self.current:
                for sender in self.current:
                    if not sender.sent:
                        continue
                    try:
                        await holder.proc.wait_stdout(_says(sender.label, len(sender.sent)))
                    except OutputEnded:
                        code = holder.proc.returncode
                        problems.append(f"{holder.label} exited (code {code}) during the run")
                        break
        self.counts.settle = trio.current_time() - begun
        if waiting.cancelled_caught:
            problems.append(f"the mesh did not settle within {self.config.settle:g} s")
            self.note("settling timed out")
        else:
            self.note(f"settled in {self.counts.settle:.1f} s")
        return problems

    # ------------------------------------------------------------ the check

    def check(self) -> list[str]:
        """Every invariant of the module docstring, as a list of problems."""
        problems: list[str] = []
        by_label = {inc.label: inc for inc in self.incarnations}
        survivors = self.current
        self.counts.survivors = len(survivors)
        self.counts.cut_survivors = sum(1 for inc in survivors if inc.cuts)
        for inc in self.incarnations:
            for line in inc.proc.stderr.lines:
                if "Traceback" in line or "internal error" in line:
                    problems.append(f"{inc.label} stderr: {line}")
        for holder in survivors:
            if holder.proc.returncode is not None:
                problems.append(f"{holder.label} is not running at the end")
            problems += self._check_holder(holder, by_label, survivors)
        return problems

    def _check_holder(
        self, holder: Incarnation, by_label: dict[str, Incarnation], survivors: list[Incarnation]
    ) -> list[str]:
        problems: list[str] = []
        who = holder.label
        last_seq: dict[str, int] = {}
        seen: set[tuple[str, int, str]] = set()
        held: dict[str, list[int]] = {}  # label -> n in the order shown
        outsiders = self._outsiders(holder)
        for number, line in enumerate(holder.proc.stdout.lines, 1):
            try:
                obj = json.loads(line)
            except ValueError:
                problems.append(f"{who} line {number} is not JSON: {line!r}")
                continue
            kind, origin = obj.get("type"), obj.get("origin", "")
            if origin in outsiders:
                continue
            if kind == "gap":
                self.counts.gaps += 1
                sender = self._by_origin(origin)
                name = sender.label if sender else origin[:8]
                text = f"{who} line {number}: gap of {obj.get('missed')} from {name}"
                if sender in survivors:
                    problems.append(text)
                else:
                    self.note(f"(allowed) {text}")
                continue
            if kind not in CHECKED_KINDS:
                problems.append(f"{who} line {number}: unexpected object {line}")
                continue
            seq = obj["seq"]
            # One report of a node's loss is also one line for each plain-text
            # client it hosted (their own lost lines, "hosted_by" the node).
            key = (origin, seq, obj.get("node", "") if kind == "lost" else "")
            if key in seen:
                problems.append(f"{who} line {number}: {_event(obj)} shown twice")
                continue
            # A lost report may be held while its subject was heard lately
            # (chat/screen.py), so it may come after later lines of its origin.
            if seq < last_seq.get(origin, 0) and kind != "lost":
                problems.append(
                    f"{who} line {number}: {_event(obj)} after seq {last_seq[origin]}"
                    " of the same origin"
                )
            seen.add(key)
            last_seq[origin] = max(seq, last_seq.get(origin, 0))
            # History is what came as catch-up from before the join (§6 readings):
            # an event created after the join is never history; one from before
            # that came live (a healed cut, relayed) is shown with its own time.
            if obj["history"] and obj["ts"] >= holder.joined:
                problems.append(f"{who} line {number}: history={obj['history']} on {_event(obj)}")
            if kind != "msg":
                continue
            found = TEXT.match(obj["text"])
            sender = by_label.get(found["label"]) if found else None
            if found is None or sender is None:
                problems.append(f"{who} line {number}: a message nobody sent: {line}")
                continue
            if origin != sender.origin:
                problems.append(f"{who} line {number}: {obj['text']} from origin {origin[:8]}")
            held.setdefault(sender.label, []).append(int(found["n"]))
        for label, numbers in held.items():
            sender = by_label[label]
            self.counts.deliveries += len(numbers)
            self.counts.caught_up += self._caught_up(holder, sender, numbers)
            if sender not in survivors:
                problems += self._once_in_order(who, sender, numbers)
        for sender in survivors:
            problems += self._complete(holder, sender, held.get(sender.label, []))
        return problems

    def _outsiders(self, holder: Incarnation) -> set[str]:
        """The origins in ``holder``'s transcript that are an outsider's, never a peer's.

        Those it made up, and those a node made up for its plain-text
        clients: known by a message starting with ``OUTSIDER_TEXT`` or by a
        name that is an address of ``OUTSIDER_HOST``.
        """
        found = set(self.outsiders)
        for line in holder.proc.stdout.lines:
            if OUTSIDER_TEXT not in line and OUTSIDER_HOST not in line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # reported by the check
            text, name = obj.get("text"), obj.get("name")
            if (isinstance(text, str) and text.startswith(OUTSIDER_TEXT)) or (
                isinstance(name, str) and name.startswith(f"{OUTSIDER_HOST}:")
            ):
                found.add(obj.get("origin", ""))
        return found - {inc.origin for inc in self.incarnations}

    def _caught_up(self, holder: Incarnation, sender: Incarnation, numbers: list[int]) -> int:
        """How many of ``numbers`` were sent while every link of ``holder`` was down.

        Once the others had declared the stopped holder's links dead (after
        3 x keepalive, with a margin), flooding no longer reached it: what
        it holds from then until SIGCONT came by catch-up (§6).
        """
        if sender is holder:
            return 0
        dead_after = 3 * self.config.keepalive + 0.25
        windows = [(stop + dead_after, cont) for stop, cont in holder.cuts]
        return sum(
            1
            for n in numbers
            if n <= len(sender.sent)
            and any(start < sender.sent[n - 1] < end for start, end in windows)
        )

    def _by_origin(self, origin: str) -> Incarnation | None:
        return next((inc for inc in self.incarnations if inc.origin == origin), None)

    def _once_in_order(self, who: str, sender: Incarnation, numbers: list[int]) -> list[str]:
        """A killed incarnation's messages: any subset, but once each and in order."""
        out = []
        twice = _twice(numbers)
        if twice:
            out.append(f"{who} holds {sender.label} messages twice: {_ranges(twice)}")
        if numbers != sorted(numbers):
            out.append(f"{who} holds {sender.label} messages out of order: {numbers}")
        return out

    def _complete(self, holder: Incarnation, sender: Incarnation, numbers: list[int]) -> list[str]:
        """A surviving incarnation's messages: all of them (§5, §6), once, in order."""
        total = len(sender.sent)
        if self.config.strict:
            first = 1
        else:
            # Catch-up only reaches back as far as histories do (§6): a run
            # may start later, but not after the first message sent once
            # the holder was up.
            bound = next(
                (n for n, at in enumerate(sender.sent, 1) if at >= holder.started), total + 1
            )
            first = min(numbers[0], bound) if numbers else bound
        expected = list(range(first, total + 1))
        if numbers == expected:
            return []
        who, label = holder.label, sender.label
        out = []
        missing = sorted(set(expected) - set(numbers))
        if missing:
            when = ", ".join(
                f"{label}:{n} sent at {sender.sent[n - 1] - self.t0:.2f}" for n in missing[:3]
            )
            out.append(
                f"{who} lacks {len(missing)} of {label}'s {total} messages:"
                f" {_ranges(missing)} ({when})"
            )
        extra = sorted(set(numbers) - set(expected))
        if extra:
            out.append(f"{who} holds {label} messages never sent: {_ranges(extra)}")
        twice = _twice(numbers)
        if twice:
            out.append(f"{who} holds {label} messages twice: {_ranges(twice)}")
        if numbers != sorted(numbers):
            out.append(f"{who} holds {label} messages out of order: {_disorder(numbers)}")
        return out

    def keep(self, where: Path) -> None:
        """Write every incarnation's stdout and stderr, and the log, under ``where``."""
        where.mkdir(parents=True, exist_ok=True)
        for inc in self.incarnations:
            (where / f"{inc.label}.jsonl").write_text(
                "".join(f"{x}\n" for x in inc.proc.stdout.lines)
            )
            (where / f"{inc.label}.err").write_text(
                "".join(f"{x}\n" for x in inc.proc.stderr.lines)
            )
        (where / "driver.log").write_text("".join(f"{x}\n" for x in self.log))


def _says(label: str, n: int) -> Callable[[str], bool]:
    """A --json line showing the message ``<label>:<n>``."""
    quoted = f'"{label}:{n}"'

    def test(line: str) -> bool:
        if quoted not in line:
            return False
        obj = json.loads(line)
        return bool(obj.get("type") == "msg" and obj.get("text") == f"{label}:{n}")

    return test


def _twice(numbers: list[int]) -> list[int]:
    return sorted(n for n, count in Counter(numbers).items() if count > 1)


def _event(obj: dict[str, Any]) -> str:
    text = f" {obj['text']!r}" if obj.get("type") == "msg" else ""
    return f"{obj.get('type')} {obj.get('origin', '')[:8]}#{obj.get('seq')}{text}"


def _ranges(numbers: list[int]) -> str:
    """``1-4,7,9-10``."""
    out: list[str] = []
    for n in numbers:
        if out and n == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)


def _disorder(numbers: list[int]) -> str:
    """Where a sequence first goes backwards, with some context."""
    for i in range(1, len(numbers)):
        if numbers[i] <= numbers[i - 1]:
            return f"... {numbers[max(0, i - 3) : i + 3]} at position {i + 1}"
    return str(numbers)


@asynccontextmanager
async def open_mesh(config: ChaosConfig) -> AsyncIterator[Mesh]:
    """Started peers; every process is killed and reaped on the way out."""
    with tempfile.TemporaryDirectory(prefix="trio-chat-chaos-") as home:
        async with process_group() as group:
            mesh = Mesh(group, config, Path(home))
            try:
                await mesh.start()
                yield mesh
            finally:
                # Never leave a stopped process behind for the group's SIGKILL
                # to find (SIGKILL works on it, but a resumed one is tidier).
                for inc in mesh.incarnations:
                    if inc.stopped:
                        inc.proc.signal(signal.SIGCONT)


def budget(config: ChaosConfig) -> float:
    """A generous bound on a whole run: start, chaos, the last cut, settling."""
    return 20.0 + config.seconds * 1.5 + config.stop[1] + config.settle


async def run_chaos(config: ChaosConfig) -> Report:
    """Start the peers, run the chaos, settle, check (within :func:`budget`)."""
    with trio.fail_after(budget(config)):
        async with open_mesh(config) as mesh:
            return await mesh.run()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0, help="of chaos (default 30)")
    parser.add_argument("--peers", type=int, default=8, help="peers (default 8)")
    parser.add_argument("--rate", type=float, default=5.0, help="messages/s per peer (default 5)")
    parser.add_argument(
        "--stop",
        type=float,
        nargs=2,
        default=(3.5, 4.5),
        metavar=("MIN", "MAX"),
        help="SIGSTOP durations, s (default 3.5 4.5; over 3 x keepalive)",
    )
    parser.add_argument(
        "--max-stopped", type=int, default=2, help="peers stopped at once (default 2)"
    )
    parser.add_argument("--seed", type=int, help="for the driver's choices")
    parser.add_argument("--keep", type=Path, help="write every transcript into this directory")
    parser.add_argument("--quiet", action="store_true", help="no driver log while running")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Enough history for the whole run, so the strict check applies: 8
    # peers' messages, joins and lost reports, with room to spare.
    history = max(20000, int(args.peers * args.rate * args.seconds * 4))
    config = ChaosConfig(
        peers=args.peers,
        seconds=args.seconds,
        rate=args.rate,
        stop=(args.stop[0], args.stop[1]),
        max_stopped=args.max_stopped,
        seed=args.seed,
        keep=args.keep,
        history=history,
        verbose=not args.quiet,
    )
    report = trio.run(run_chaos, config)
    print("\n".join(report.problems[:100]) if report.problems else "no problems")
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
