"""Hubs joined through a Redis stream: ``trio-chat hub PORT --bus URL``.

Every hub of a deployment appends each event it accepts for the first time
(its signed bytes as received, and the hub's node id) to the stream
``trio-chat:{group}`` (XADD, trimmed to about ``--history`` entries), and
reads the stream from its own last position (XREAD BLOCK) for the other
hubs' events. Those are checked like any relayed event (§4: an event from
the bus is not first-hop, so its signature is verified) and delivered like
any other; de-duplication by (origin, seq) drops an event that comes back.

At start a hub reads the stream's most recent entries as its history. While
Redis cannot be reached the hub keeps serving its own clients, logs one line
per outage, retries with back-off, keeps what it accepted meanwhile (up to
``--history`` events) and appends it on return; it reads on from the last
entry it had, so nothing within the trimmed window is lost.

Presence: each hub sets a heartbeat key ``trio-chat:{group}:hub:{id}`` that
expires ``HEARTBEAT_TTL`` seconds after its last beat (one a second), and
each entry names the hub that appended it, so every hub knows whose clients
an origin is. When a hub's key has expired (it died without a leave), the
others report each of its present clients, and it, ``lost``: as a node does
for a direct link that dropped (§4), once each.

coredis (anyio-based, so it runs under trio) is imported here and only when
the bus runs: without ``--bus`` nothing Redis-related is imported.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import trio

from chat.parse import parse_frame
from chat.protocol import Event, ProtocolError
from chat.router import Router
from chat.state import MAX_ORIGINS

log = logging.getLogger("chat")

CALL_TIMEOUT = 5.0  # seconds one Redis call may take (a stopped server never answers)
READ_BLOCK_MS = 1000  # how long one XREAD waits for news
BATCH = 500  # entries appended or read at a time
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0  # seconds between tries while Redis is away
HEARTBEAT, HEARTBEAT_TTL = 1.0, 3.0  # seconds between a hub's beats; its key's lifetime
_GROUP = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class BusAddress:
    """Where the bus is: a Redis URL for coredis, and the group's stream."""

    url: str
    group: str

    @property
    def stream(self) -> str:
        return f"trio-chat:{self.group}"

    def heartbeat(self, hub: str) -> str:
        return f"trio-chat:{self.group}:hub:{hub}"

    @property
    def shown(self) -> str:
        """The URL without its password, for logs and errors."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_bus(url: str) -> BusAddress:
    """``redis://[user:password@]HOST:PORT/DB[?group=NAME]`` (or ``rediss://``).

    Raises ValueError with a line for the person when it is not one.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("the bus is redis://[user:password@]HOST:PORT/DB[?group=NAME]")
    try:
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        raise ValueError("the bus URL's port is not a number from 1 to 65535") from None
    query = parse_qsl(parts.query)
    groups = [value for key, value in query if key == "group"]
    group = groups[-1] if groups else "main"
    if not _GROUP.fullmatch(group):
        raise ValueError("a bus group is 1 to 64 letters, digits, '_', '.' or '-'")
    rest = urlencode([(key, value) for key, value in query if key != "group"])
    return BusAddress(urlunsplit((parts.scheme, parts.netloc, parts.path, rest, "")), group)


class Bus:
    """One hub's side of the bus: what it appends and what it reads."""

    def __init__(self, address: BusAddress, router: Router, *, history: int) -> None:
        self.address = address
        self.router = router
        self.history = max(1, history)
        self.me = router.me.id.encode("ascii")
        self.pending: deque[bytes] = deque(maxlen=self.history)  # accepted, not yet appended
        self.last_id = b"0-0"  # the last stream entry read
        self.loaded = trio.Event()  # the stream's history has been read
        self.appended = self.received = self.refused = self.dropped = 0
        self.down_since: float | None = None  # an outage under way, since then
        self._wake = trio.Event()
        self._injecting = False
        # What a Redis call may raise that is an outage (run() adds coredis's).
        self._errors: tuple[type[BaseException], ...] = (OSError, TimeoutError, trio.TooSlowError)
        # Whose clients the origins are: origin -> the hub that appended its
        # latest event (bounded like every table of origins, chat.state).
        self.homes: OrderedDict[str, str] = OrderedDict()
        self.hubs: dict[str, bool] = {}  # other hubs -> whether their beat was seen

    # ------------------------------------------------------------ the hub's side

    def publish(self, event: Event) -> None:
        """An event this hub accepted for the first time: to be appended."""
        if self._injecting:
            return  # it came from the bus
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1  # past the stream's own window: said once, when Redis is back
        self.pending.append(event.raw)
        self._wake.set()

    async def run(self) -> None:
        """Append and read until cancelled; Redis may come and go."""
        coredis: Any = importlib.import_module("coredis")
        self._errors = (coredis.exceptions.RedisError, *self._errors)
        client = coredis.Redis.from_url(
            self.address.url, retry_policy=coredis.retry.NoRetryPolicy()
        )
        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(self._reader, client)
            nursery.start_soon(self._writer, client)
            nursery.start_soon(self._heartbeat, client)

    # ------------------------------------------------------------ the two tasks

    async def _writer(self, client: Any) -> None:
        tokens: Any = importlib.import_module("coredis.tokens").PureToken
        delay = BACKOFF_FIRST
        while True:
            if not self.pending:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            batch = [self.pending[i] for i in range(min(BATCH, len(self.pending)))]
            try:
                with trio.fail_after(CALL_TIMEOUT):
                    async with client.pipeline(transaction=False) as pipe:
                        for raw in batch:
                            pipe.xadd(
                                self.address.stream,
                                {b"e": raw, b"h": self.me},
                                trim_strategy=tokens.MAXLEN,
                                threshold=self.history,
                                trim_operator=tokens.APPROXIMATELY,
                            )
            except self._errors as exc:
                delay = await self._outage(exc, delay)
                continue  # (a batch half appended comes again: readers drop duplicates)
            for raw in batch:  # (what a full queue dropped meanwhile is gone already)
                if self.pending and self.pending[0] is raw:
                    self.pending.popleft()
            self.appended += len(batch)
            delay = self._back(delay)

    async def _reader(self, client: Any) -> None:
        delay = BACKOFF_FIRST
        stream = self.address.stream
        while True:
            try:
                with trio.fail_after(CALL_TIMEOUT):
                    if not self.loaded.is_set():
                        newest_first = await client.xrevrange(stream, count=self.history)
                        entries = list(reversed(newest_first))
                    else:
                        got = await client.xread(
                            {stream: self.last_id}, count=BATCH, block=READ_BLOCK_MS
                        )
                        entries = [e for found in (got or {}).values() for e in found]
            except self._errors as exc:
                delay = await self._outage(exc, delay)
                continue
            delay = self._back(delay)
            for entry in entries:
                self.last_id = entry.identifier
                self._take(entry.field_values)
            self.loaded.set()

    async def _heartbeat(self, client: Any) -> None:
        """Say this hub is alive; report the clients of a hub that is not."""
        mine = self.address.heartbeat(self.router.me.id)
        while True:
            try:
                with trio.fail_after(CALL_TIMEOUT):
                    await client.set(mine, b"1", px=int(HEARTBEAT_TTL * 1000))
                    alive = {
                        hub: await client.get(self.address.heartbeat(hub)) for hub in self.hubs
                    }
            except self._errors:
                alive = None  # (an outage: the reader and writer say so; no verdicts)
            for hub, beat in (alive or {}).items():
                if beat is not None:
                    self.hubs[hub] = True
                elif self.hubs.pop(hub):  # seen alive before, expired now: it died
                    self._gone(hub)
            await trio.sleep(HEARTBEAT)

    def _gone(self, hub: str) -> None:
        """A hub's heartbeat expired: its present clients, and it, are lost."""
        members = self.router.members
        lost = [origin for origin, home in self.homes.items() if home == hub]
        log.warning("bus: hub %s stopped beating: %d of its nodes lost", hub[:8], len(lost))
        for origin in [hub, *lost]:
            self.homes.pop(origin, None)
            member = members.get(origin)
            if member is not None and member.present:
                self.router.originate(self.router.me, "lost", node=origin)

    def _take(self, fields: Any) -> None:
        """One stream entry: another hub's event, delivered here."""
        hub = fields.get(b"h")
        if hub == self.me:
            return  # ours, come back
        raw = fields.get(b"e")
        try:
            event = parse_frame(raw) if isinstance(raw, bytes) else None
        except ProtocolError:
            event = None
        if not isinstance(event, Event) or not isinstance(hub, bytes) or not hub.isascii():
            self.refused += 1
            return
        home = hub.decode("ascii")
        self.hubs.setdefault(home, False)
        self.homes[event.origin] = home
        self.homes.move_to_end(event.origin)
        while len(self.homes) > MAX_ORIGINS:
            self.homes.popitem(last=False)
        self._injecting = True
        try:
            if self.router.receive(None, event):
                self.received += 1
        finally:
            self._injecting = False

    # ------------------------------------------------------------ outages

    async def _outage(self, exc: BaseException, delay: float) -> float:
        if self.down_since is None:
            self.down_since = trio.current_time()
            log.warning(
                "bus %s unreachable (%s): serving this hub's clients alone, retrying",
                self.address.shown,
                _reason(exc),
            )
        await trio.sleep(delay)
        return min(delay * 2, BACKOFF_MAX)

    def _back(self, delay: float) -> float:
        if self.down_since is not None:
            away = trio.current_time() - self.down_since
            self.down_since = None
            log.warning(
                "bus %s back after %.1f s; %d events to append%s",
                self.address.shown,
                away,
                len(self.pending),
                f" ({self.dropped} older ones past --history were not kept)"
                if self.dropped
                else "",
            )
            self.dropped = 0
        return BACKOFF_FIRST if delay != BACKOFF_FIRST else delay


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return f"no answer in {CALL_TIMEOUT:g} s"
    return str(exc) or type(exc).__name__
