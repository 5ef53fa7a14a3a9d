"""A node's settings: the protocol's timers and this implementation's limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from chat.identity import KnownNames
from chat.keys import SigningKey
from chat.logfile import ChatLog
from chat.state import HISTORY_BYTES, MAX_ORIGINS


@dataclass(frozen=True, slots=True)
class Timing:
    """Link timers in seconds (§3, §7). Tests shorten them; users never do."""

    handshake: float = 10.0  # first line / answering hello
    ping_after: float = 15.0  # idle sending -> ping
    dead_after: float = 45.0  # idle receiving -> lost
    stall: float = 10.0  # writer blocked this long -> lost
    grace: float = 2.0  # flushing on close


@dataclass
class Config:
    """What one node is told at start (the command line's options)."""

    name: str
    identity: SigningKey | None = None  # the person's key; None: known by the run key alone
    known: KnownNames | None = None  # names seen before, and whose (None: remember nothing)
    secret: bytes | None = None  # a closed group's secret (§8); None: an open group
    highlights: tuple[str, ...] = ()  # words that catch the person's eye, besides their name
    log: ChatLog | None = None  # where every line shown is appended (--log)
    history: int = 1000  # events kept for catch-up (§6)
    history_bytes: int = HISTORY_BYTES  # and at most this many bytes of them
    degree: int = 8  # peers to dial by peer exchange (§7)
    timing: Timing = field(default_factory=Timing)
    hold_back: float = 5.0  # seconds a gap may stay open (§5)
    rate: float = 20.0  # own events a second per connection (0: no limit)
    burst: float = 50.0
    link_rate: float = 5000.0  # forwarded events a second per connection
    patience: float = 10.0  # seconds over the limit before rate_limited
    max_connections: int = 1024
    max_per_address: int = 64  # connections from one address (0: no limit)
    max_text_per_address: int = 16  # plain-text clients from one address (0: no limit)
    join_rate: float = 5.0  # joins a second from one address, after a burst of join_burst
    join_burst: float = 50.0
    origin_rate: float = 100.0  # new events a second of one origin, from any link
    origin_burst: float = 1000.0
    max_origins: int = MAX_ORIGINS  # origins remembered by each per-origin table
