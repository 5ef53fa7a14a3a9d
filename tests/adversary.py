"""An adversary for the soak: attacks on random live peers while honest ones chat.

Every ``PAUSE`` (0.5-2 s, drawn at random) the :class:`Adversary` picks a
live peer (an :class:`~chaos.Incarnation` neither killed nor stopped) and
one of the attacks below, and runs it within ``ATTACK_BOUND``. Each attack
tolerates the node closing or resetting the connection; what the node
answered (its hello, an ``error`` code, a close) is counted per attack.

1. ``crash_frame``: hello as a peer, then a ``peers`` frame whose address
   is ``a..b:1`` (expected: ``error bad_frame``).
2. ``padding``: hello, then an event padded past ``MAX_EVENT`` with an
   unknown field (expected: ``error frame_too_long``).
3. ``held_back``: hello, then for ten made-up origins seq 1 and then only
   odd seqs up to 59, each with a text of ~4000 characters (held behind
   gaps by every node), then hang up.
4. ``claimed_have``: hello whose ``have`` claims 10**12 of its own events,
   then its own messages as fast as the socket takes them for 2 s.
5. ``error_spam``: hello, then two ``error`` frames whose messages hold
   control characters and a fake log line (expected: the link closed).
6. ``join_churn``: 50 plain-text connections one after another, each
   sending one line and closing (expected: most refused, ``rate_limited``).
7. ``slot_grab``: 20 plain-text connections at once, each sending one line
   and staying ~5 s (expected: some refused, ``too_many_connections``).
8. ``dialling``: hello as a peer, then ``peers`` frames of 100 made-up
   addresses ``127.0.X.Y:9`` each (nothing listens there), a few a second
   for ~3 s; the dials the node logs are counted.
9. ``spoofed_lost``: hello, read the catch-up to learn an honest origin,
   then a ``lost`` event of the adversary's own origin about it.
10. ``skewed_clock``: hello, then a join and messages whose ``ts`` is an
    hour in the past and an hour in the future.
11. ``made_up_peers``: 30 connections at once, each a hello as a peer with
    a name of 32 wide characters, held ~5 s; the longest ``peers`` frame
    the node sends meanwhile is noted (it must stay within ``MAX_FRAME``).
12. ``forgery``: read the catch-up, then speak for an honest peer: one of
    its messages with the text changed under its signature, its origin
    with the adversary's key, its key with a copied signature, all at seq
    2**53-1 or near (expected: dropped, the link kept; the delivery check
    finds no forged line and every later message of that peer).

Every connection that speaks the protocol completes the protocol-2
handshake with a run key of its own first (§3), and every event it makes
is signed by the key of the origin it names.

Every connection comes from ``OUTSIDER_HOST`` (127.0.0.2), so the node's
per-address limits fall on the adversary, not on the honest peers on
127.0.0.1. Every text it sends starts with ``OUTSIDER_TEXT`` and every id
it makes up goes into the set it was given (the mesh's ``outsiders``), so
the delivery check of :mod:`chaos` can tell its lines from the peers'.

A node that neither answers nor closes within ``ANSWER_WITHIN`` when an
answer is due, while it was not stopped or killed meanwhile, is a *hang*:
:attr:`AdversaryStats.hangs`, which fails the soak.
"""

from __future__ import annotations

import json
import random
import socket
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
from chaos import HOST, OUTSIDER_HOST, OUTSIDER_TEXT, Incarnation

from chat.handshake import Handshake
from chat.keys import SigningKey, b64
from chat.parse import parse_frame
from chat.protocol import (
    MAX_EVENT,
    MAX_FRAME,
    MAX_SEQ,
    Error,
    Event,
    EventKind,
    PeerInfo,
    Peers,
    Pong,
    ProtocolError,
    encode,
    make_event,
    make_hello,
)

ANSWER_WITHIN = 5.0  # seconds for a node's first answer (a line or a close)
ATTACK_BOUND = 30.0  # seconds one attack may take in all
PAUSE = (0.5, 2.0)  # seconds between two attacks
READ_SIZE = 65536
LISTEN = 9  # the port adversary "peers" claim to listen on: nothing does
FAKE_LOG = "trio-chat: adversary forged this log line"  # must never start a log line
HOLD = 5.0  # seconds slot grabs and made-up peers stay connected
BIG_TEXT = 4000  # characters of a held-back message


class Silent(Exception):
    """The node neither answered nor closed within ``ANSWER_WITHIN``."""


def _code(line: bytes) -> str:
    """The code of a JSON ``error`` line, short and printable."""
    try:
        code = json.loads(line).get("code")
    except (ValueError, AttributeError):
        return "?"
    return code[:40].encode("ascii", "backslashreplace").decode() if isinstance(code, str) else "?"


def _nonce(line: bytes) -> int | str:
    """The nonce of a ``ping`` line, to echo in the ``pong``."""
    try:
        nonce = json.loads(line).get("nonce", 0)
    except (ValueError, AttributeError):
        return 0
    return nonce if isinstance(nonce, (int, str)) else 0


class Wire:
    """One connection of the adversary: sends that tolerate a close, lines read as they come."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ended = False  # the node closed or reset the connection (seen reading)
        self.broken = False  # a send failed: the node closed it (what it said may follow)
        self.errors: list[str] = []  # error codes received, JSON or plain text
        self.hello = False  # the node's hello came
        self.longest = 0  # bytes of the longest line received, newline included
        self.peers_bytes = 0  # bytes of the longest peers frame received
        self._lines: deque[bytes] = deque()
        self._partial = b""

    async def send(self, data: bytes) -> bool:
        """Send ``data``; False (and :attr:`broken`) if the node closed the connection."""
        if self.broken or self.ended:
            return False
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.broken = True
            return False
        return True

    async def read_line(self) -> bytes | None:
        """The next line the node sent (newline stripped); None once it closed."""
        while not self._lines:
            if self.ended:
                return None
            try:
                data = await self.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                self.ended = True
                return None
            *complete, self._partial = (self._partial + data).split(b"\n")
            for line in complete:
                self._note(line)
            self._lines.extend(complete)
        return self._lines.popleft()

    def _note(self, line: bytes) -> None:
        self.longest = max(self.longest, len(line) + 1)
        if line.startswith(b'{"type":"error"'):
            self.errors.append(_code(line))
        elif line.startswith(b"*** error: "):
            code = line[len(b"*** error: ") :].split(b":", 1)[0][:40]
            self.errors.append(code.decode("ascii", "backslashreplace"))
        elif line.startswith(b'{"type":"hello"'):
            self.hello = True
        elif line.startswith(b'{"type":"peers"'):
            self.peers_bytes = max(self.peers_bytes, len(line) + 1)

    async def handshake(
        self,
        key: SigningKey,
        *,
        name: str = OUTSIDER_TEXT,
        listen: int | None = None,
        have: dict[str, int] | None = None,
    ) -> bytes | None:
        """The protocol-2 handshake as a dialling peer (§3), with a key of its
        own; the node's first line, or None if it closed first."""
        shake = Handshake(
            key,
            outgoing=True,
            make_hello=lambda nonce: make_hello(key, nonce, name, "peer", listen, have or {}),
        )
        for frame in shake.start():
            await self.send(encode(frame))
        first = line = await self.answer()
        while line is not None and not shake.done:
            try:
                frame = parse_frame(line)
                if isinstance(frame, Error):
                    return first
                for answer in shake.receive(frame):
                    await self.send(encode(answer))
            except ProtocolError:
                return first  # (a node's answer the adversary cannot take: noted by result)
            if not shake.done:
                line = await self.answer()
        return first

    async def answer(self) -> bytes | None:
        """The node's first line, or None if it closed; :class:`Silent` if neither comes."""
        with trio.move_on_after(ANSWER_WITHIN):
            return await self.read_line()
        raise Silent(f"no answer and no close within {ANSWER_WITHIN:g} s")

    async def read_for(self, seconds: float) -> bool:
        """Read (noting what comes, answering pings) for ``seconds`` or until the close.

        True if the node closed the connection.
        """
        with trio.move_on_after(seconds):
            while (line := await self.read_line()) is not None:
                if line.startswith(b'{"type":"ping"'):
                    await self.send(encode(Pong(_nonce(line))))
        return self.ended

    def result(self) -> str:
        """What the node said last on this connection: an error, a close, or nothing."""
        if self.errors:
            return f"error {self.errors[0]}"
        return "closed" if self.ended or self.broken else "open"

    def first(self, line: bytes | None) -> str:
        """How the node took a newcomer, from its first answer ``line``."""
        if self.errors:
            return f"refused {self.errors[0]}"
        if line is None:
            return "closed at once"
        return "answered hello" if self.hello else "accepted"


@asynccontextmanager
async def connect(port: int, *, sndbuf: int = 0) -> AsyncIterator[Wire]:
    """A connection from ``OUTSIDER_HOST`` to the node on ``port``, closed on the way out."""
    sock = trio.socket.socket()
    try:
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        await sock.bind((OUTSIDER_HOST, 0))
        await sock.connect((HOST, port))
    except BaseException:
        sock.close()
        raise
    stream = trio.SocketStream(sock)
    try:
        yield Wire(stream)
    finally:
        await stream.aclose()


@dataclass
class AdversaryStats:
    """What the adversary did and what the nodes answered."""

    attacks: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    hangs: list[str] = field(default_factory=list)  # findings: fail the soak
    events: int = 0  # events sent
    dials: int = 0  # dials the nodes logged of addresses the adversary made up
    peers_bytes: int = 0  # the longest peers frame a node sent the adversary
    forged: int = 0  # log lines the fake one started (see :meth:`Adversary.sweep`)

    def note(self, attack: str, outcome: str, count: int = 1) -> None:
        self.outcomes.setdefault(attack, Counter())[outcome] += count

    def lines(self) -> list[str]:
        """A summary line, then one line of outcomes per attack."""
        total = sum(self.attacks.values())
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.attacks.items()))
        head = (
            f"adversary: {total} attacks ({kinds or 'none'}); hangs={len(self.hangs)}"
            f" events_sent={self.events} dials_made={self.dials}"
            f" longest_peers_frame={self.peers_bytes}B (max {MAX_FRAME})"
            f" forged_log_lines={self.forged}"
        )
        rows = [head]
        for kind in ATTACKS:
            outcomes = self.outcomes.get(kind)
            if outcomes:
                said = ", ".join(f"{what}: {n}" for what, n in outcomes.most_common())
                rows.append(f"  {kind}: {said}")
        return rows


def _wide_name(rng: random.Random) -> str:
    """32 wide characters (CJK and emoji, 3-4 bytes each in UTF-8)."""
    pool = [(0x4E00, 0x9FFF), (0x1F300, 0x1F5FF)]
    return "".join(chr(rng.randint(*rng.choice(pool))) for _ in range(32))


class Adversary:
    """Attacks random live peers, one attack at a time, until cancelled."""

    def __init__(
        self,
        outsiders: set[str],
        rng: random.Random,
        kinds: Sequence[str] | None = None,
        log: Callable[[str], None] | None = None,
        t0: float = 0.0,
    ) -> None:
        self.outsiders = outsiders  # every id made up here goes in (chaos.Mesh.outsiders)
        self.rng = rng
        self.kinds = list(kinds or ATTACKS)
        self.log = log  # told of each attack as it begins, and of each hang
        self.t0 = t0  # trio time that findings count from
        self.stats = AdversaryStats()

    # ------------------------------------------------------------ the loop

    async def run(self, targets: Callable[[], Iterable[Incarnation]]) -> None:
        """Attack one of ``targets()`` (those alive and running) after each pause, forever."""
        while True:
            await trio.sleep(self.rng.uniform(*PAUSE))  # pacing the attacker
            live = [
                inc
                for inc in targets()
                if not (inc.killed or inc.stopped) and inc.proc.returncode is None
            ]
            if live:
                await self.attack(self.rng.choice(self.kinds), self.rng.choice(live))

    async def attack(self, kind: str, target: Incarnation) -> None:
        """Run one attack on ``target``; a silence while it ran undisturbed is a hang."""
        self.stats.attacks[kind] += 1
        cuts, began = len(target.cuts), trio.current_time() - self.t0
        if self.log is not None:
            self.log(f"adversary: {kind} on {target.label}")
        silent = ""
        with trio.move_on_after(ATTACK_BOUND) as bound:
            try:
                await ATTACKS[kind](self, kind, target)
            except Silent as exc:
                silent = str(exc)
            except OSError as exc:  # connecting failed: killed, restarting
                self.stats.note(kind, f"connect failed ({type(exc).__name__})")
        if bound.cancelled_caught:
            self.stats.note(kind, f"cut short at {ATTACK_BOUND:g} s")
        if not silent:
            return
        # A stopped or killed node cannot answer; one that exited is a finding of its own.
        gone = target.proc.returncode is not None
        if target.killed or target.stopped or len(target.cuts) != cuts or gone:
            self.stats.note(kind, "no answer (the target was stopped, killed or gone)")
            return
        self.stats.note(kind, "NO ANSWER")
        finding = f"{kind} on {target.label} (port {target.slot.port}) at {began:.1f} s: {silent}"
        self.stats.hangs.append(finding)
        if self.log is not None:
            self.log(f"adversary: HANG: {finding}")

    def sweep(self, incarnations: Iterable[Incarnation]) -> None:
        """Count the log lines that the fake one of ``error_spam`` started (forged)."""
        self.stats.forged = sum(
            1 for inc in incarnations for line in inc.proc.stderr.lines if line.startswith(FAKE_LOG)
        )

    # ------------------------------------------------------------ helpers

    def made_up(self) -> SigningKey:
        """A new run key, its node id recorded as an outsider's."""
        key = SigningKey()
        self.outsiders.add(key.node_id)
        return key

    def made_up_id(self) -> str:
        return self.made_up().node_id

    def event(
        self,
        kind: EventKind,
        origin: SigningKey,
        seq: int,
        *,
        text: str = "",
        ts: float = 0.0,
        node: str = "",
        extra: dict[str, str] | None = None,
    ) -> Event:
        """An event of ``origin``'s, signed with its key (§4)."""
        self.stats.events += 1
        when = ts or time.time()
        return make_event(kind, origin, seq, when, OUTSIDER_TEXT, text=text, node=node, extra=extra)

    # ------------------------------------------------------------ the attacks

    async def crash_frame(self, kind: str, target: Incarnation) -> None:
        async with connect(target.slot.port) as wire:
            bad = Peers((PeerInfo(self.made_up_id(), "x", "a..b:1"),))
            await wire.handshake(self.made_up(), listen=LISTEN)
            await wire.send(encode(bad))
            await wire.read_for(ANSWER_WITHIN)
            self.stats.note(kind, wire.result())

    async def padding(self, kind: str, target: Incarnation) -> None:
        me = self.made_up()
        # An unknown member, signed like the rest: ignored, but it is bytes.
        padding = {"padding": "x" * MAX_EVENT}
        padded = self.event("msg", me, 1, text=f"{OUTSIDER_TEXT} padding", extra=padding).raw
        assert MAX_EVENT < len(padded) < MAX_FRAME
        async with connect(target.slot.port) as wire:
            await wire.handshake(me)
            await wire.send(padded)
            await wire.read_for(ANSWER_WITHIN)
            self.stats.note(kind, wire.result())

    async def held_back(self, kind: str, target: Incarnation) -> None:
        async with connect(target.slot.port) as wire:
            await wire.handshake(self.made_up())
            origins = [self.made_up() for _ in range(10)]
            sent = 0
            for seq in [1, *range(3, 60, 2)]:
                head = f"{OUTSIDER_TEXT} held back {seq} "
                text = head + "x" * (BIG_TEXT - len(head))
                batch = b"".join(
                    self.event("msg", origin, seq, text=text).raw for origin in origins
                )
                if not await wire.send(batch):
                    await wire.read_for(0.5)  # what the node said, if anything
                    break
                sent += len(origins)
            # Hang up at once: the node gives up the gaps on its own (§5).
            self.stats.note(kind, "all sent" if sent == 300 else f"cut off: {wire.result()}")

    async def claimed_have(self, kind: str, target: Incarnation) -> None:
        me = self.made_up()
        # A small send buffer: "as fast as the socket takes them" is then about
        # as fast as the node reads, not megabytes parked in the kernel.
        async with connect(target.slot.port, sndbuf=65536) as wire:
            await wire.handshake(me, have={me.node_id: 10**12})
            seq = 1
            ok = await wire.send(self.event("join", me, seq).raw)
            with trio.move_on_after(2.0):
                while ok:
                    batch = []
                    for _ in range(20):
                        seq += 1
                        batch.append(self.event("msg", me, seq, text=f"{OUTSIDER_TEXT} {seq}").raw)
                    ok = await wire.send(b"".join(batch))
            self.stats.note(kind, f"{wire.result()} after 2 s")

    async def error_spam(self, kind: str, target: Incarnation) -> None:
        async with connect(target.slot.port) as wire:
            await wire.handshake(self.made_up())
            for n in (1, 2):
                message = f"{OUTSIDER_TEXT} error {n}\x1b[2J\x07\r\n{FAKE_LOG}\x1b]0;pwned\x07"
                await wire.send(encode(Error("bad_frame", message)))
            closed = await wire.read_for(ANSWER_WITHIN)
            self.stats.note(kind, "closed" if closed else "still open")

    async def join_churn(self, kind: str, target: Incarnation) -> None:
        silent = 0
        for n in range(1, 51):
            try:
                async with connect(target.slot.port) as wire:
                    await wire.send(f"{OUTSIDER_TEXT} churn {n}\n".encode())
                    self.stats.note(kind, wire.first(await wire.answer()))
            except Silent:
                silent += 1
            except OSError as exc:
                self.stats.note(kind, f"connect failed ({type(exc).__name__})")
        if silent:
            raise Silent(f"{silent} of 50 connections had no answer within {ANSWER_WITHIN:g} s")

    async def slot_grab(self, kind: str, target: Incarnation) -> None:
        async def grab(n: int) -> None:
            async with connect(target.slot.port) as wire:
                await wire.send(f"{OUTSIDER_TEXT} slot {n}\n".encode())
                self.stats.note(kind, wire.first(await wire.answer()))
                await wire.read_for(HOLD)

        await self._many(kind, 20, grab)

    async def dialling(self, kind: str, target: Incarnation) -> None:
        mark = len(target.proc.stderr)
        async with connect(target.slot.port) as wire:
            await wire.handshake(self.made_up(), listen=LISTEN)
            end = trio.current_time() + 3.0
            while trio.current_time() < end:
                entries = tuple(
                    PeerInfo(
                        self.made_up_id(),
                        OUTSIDER_TEXT,
                        f"127.0.{self.rng.randint(1, 254)}.{self.rng.randint(1, 254)}:9",
                    )
                    for _ in range(100)
                )
                if not await wire.send(encode(Peers(entries))):
                    break
                await trio.sleep(0.3)  # pacing: a few frames a second
            self.stats.note(kind, wire.result())
        dials = sum(
            1
            for line in target.proc.stderr.lines[mark:]
            if line.startswith("trio-chat: dialling") and f"(learned from {OUTSIDER_TEXT}" in line
        )
        self.stats.dials += dials
        self.stats.note(kind, f"{'no' if not dials else 'some'} addresses dialled")

    async def spoofed_lost(self, kind: str, target: Incarnation) -> None:
        me = self.made_up()
        async with connect(target.slot.port) as wire:
            victims = [origin for origin, _ in await self._catch_up(wire, me)]
            if not victims:
                self.stats.note(kind, f"no honest origin learned ({wire.result()})")
                return
            victim = self.rng.choice(victims)
            spoof = self.event("join", me, 1).raw + self.event("lost", me, 2, node=victim).raw
            sent = await wire.send(spoof)
            await wire.read_for(0.5)  # an error, if the node has one to say
            self.stats.note(kind, f"lost sent: {wire.result()}" if sent else "closed first")

    async def _catch_up(self, wire: Wire, me: SigningKey) -> list[tuple[str, bytes]]:
        """Handshake as ``me``, read the catch-up (3 s at most): the honest
        origins and event lines in it."""
        await wire.handshake(me)
        honest: list[tuple[str, bytes]] = []
        line = await wire.read_line()
        with trio.move_on_after(3.0):
            while line is not None and not line.startswith(b'{"type":"caught_up"'):
                if line.startswith((b'{"type":"join"', b'{"type":"msg"')):
                    honest += [(origin, line) for origin in self._honest(line)]
                line = await wire.read_line()
        return honest

    async def forgery(self, kind: str, target: Incarnation) -> None:
        """Speak for an honest peer (§4): its events with the text changed
        under their signature, its origin signed with our key, its key with
        a signature copied from another event, and the silencing seq
        2**53-1. The node drops every one; the link stays up."""
        me = self.made_up()
        async with connect(target.slot.port) as wire:
            honest = [pair for pair in await self._catch_up(wire, me) if b'"type":"msg"' in pair[1]]
            if not honest:
                self.stats.note(kind, f"no honest message learned ({wire.result()})")
                return
            origin, line = self.rng.choice(honest)
            real = parse_frame(line)
            assert isinstance(real, Event)
            ours = self.event("msg", me, 1, text=f"{OUTSIDER_TEXT} forged", ts=real.ts)
            forged = [
                # The text changed, the signature kept (a new seq, so it is no duplicate).
                line.replace(
                    f'"seq":{real.seq},'.encode(), f'"seq":{MAX_SEQ},'.encode(), 1
                ).replace(b'"text":"', f'"text":"{OUTSIDER_TEXT} '.encode(), 1)
                + b"\n",
                # Its origin, our key and signature.
                ours.raw.replace(me.node_id.encode(), origin.encode(), 1).replace(
                    b'"seq":1,', f'"seq":{MAX_SEQ},'.encode(), 1
                ),
                # Its origin and key, a signature copied from another event.
                line.replace(
                    f'"seq":{real.seq},'.encode(), f'"seq":{MAX_SEQ - 1},'.encode(), 1
                ).replace(b'"sig":"' + b64(real.sig).encode(), b'"sig":"' + b64(ours.sig).encode())
                + b"\n",
            ]
            self.stats.events += len(forged)
            sent = await wire.send(b"".join(forged))
            closed = await wire.read_for(0.5)
            self.stats.note(kind, "forged: link kept" if sent and not closed else wire.result())

    def _honest(self, line: bytes) -> list[str]:
        """The origin of the event ``line`` if it is not the adversary's."""
        try:
            obj = json.loads(line)
        except ValueError:
            return []
        origin, name, text = obj.get("origin"), obj.get("name"), obj.get("text", "")
        mine = (
            origin in self.outsiders
            or (isinstance(name, str) and name.startswith(f"{OUTSIDER_HOST}:"))
            or (isinstance(text, str) and text.startswith(OUTSIDER_TEXT))
        )
        return [origin] if isinstance(origin, str) and not mine else []

    async def skewed_clock(self, kind: str, target: Incarnation) -> None:
        me = self.made_up()
        now = time.time()
        events = [
            self.event("join", me, 1, ts=now - 3600),
            self.event("msg", me, 2, text=f"{OUTSIDER_TEXT} from the future", ts=now + 3600),
            self.event("msg", me, 3, text=f"{OUTSIDER_TEXT} from the past", ts=now - 3600),
        ]
        async with connect(target.slot.port) as wire:
            await wire.handshake(me)
            await wire.send(b"".join(event.raw for event in events))
            await wire.read_for(0.5)  # an error, if the node has one to say
            self.stats.note(kind, wire.result())

    async def made_up_peers(self, kind: str, target: Incarnation) -> None:
        async def pose(n: int) -> None:
            async with connect(target.slot.port) as wire:
                first = await wire.handshake(
                    self.made_up(), name=_wide_name(self.rng), listen=LISTEN
                )
                self.stats.note(kind, wire.first(first))
                await wire.read_for(HOLD)
                self.stats.peers_bytes = max(self.stats.peers_bytes, wire.peers_bytes)
                if wire.longest > MAX_FRAME:
                    self.stats.note(kind, f"A LINE OF {wire.longest} BYTES")

        await self._many(kind, 30, pose)

    async def _many(self, kind: str, count: int, one: Callable[[int], Awaitable[None]]) -> None:
        """``count`` connections at once; :class:`Silent` if any of them had no answer."""
        silent = 0

        async def guarded(n: int) -> None:
            nonlocal silent
            try:
                await one(n)
            except Silent:
                silent += 1
            except OSError as exc:
                self.stats.note(kind, f"connect failed ({type(exc).__name__})")

        async with trio.open_nursery() as nursery:
            for n in range(1, count + 1):
                nursery.start_soon(guarded, n)
        if silent:
            raise Silent(
                f"{silent} of {count} connections had no answer within {ANSWER_WITHIN:g} s"
            )


Attack = Callable[[Adversary, str, Incarnation], Awaitable[None]]

ATTACKS: dict[str, Attack] = {
    "crash_frame": Adversary.crash_frame,
    "padding": Adversary.padding,
    "held_back": Adversary.held_back,
    "claimed_have": Adversary.claimed_have,
    "error_spam": Adversary.error_spam,
    "join_churn": Adversary.join_churn,
    "slot_grab": Adversary.slot_grab,
    "dialling": Adversary.dialling,
    "spoofed_lost": Adversary.spoofed_lost,
    "skewed_clock": Adversary.skewed_clock,
    "made_up_peers": Adversary.made_up_peers,
    "forgery": Adversary.forgery,
}
