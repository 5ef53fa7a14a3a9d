"""Who may connect: connection counts and join budgets per address (no I/O).

One address must not take a node's slots or fill its history with joins
and leaves: beside ``--max-connections`` in all, an address may hold
``--max-per-address`` connections (nodes and people), of which at most
``--max-text-per-address`` plain-text clients, and may join (a plain-text
client's join, or a node link's handshake) ``--join-rate`` times a second
with a burst of ``join_burst``. Time is passed in, as in :mod:`chat.flow`.
A limit of 0 means none.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from chat.flow import TokenBucket
from chat.protocol import ProtocolError
from chat.state import MAX_ORIGINS


class Admission:
    """The counts and budgets of one node's listener."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_per_address: int,
        max_text_per_address: int,
        join_rate: float,
        join_burst: float,
        max_addresses: int = MAX_ORIGINS,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.max_text_per_address = max_text_per_address
        self.join_rate = join_rate
        self.join_burst = join_burst
        self.max_addresses = max_addresses
        self.open = 0  # accepted connections open now
        self._connections: Counter[str] = Counter()
        self._texts: Counter[str] = Counter()
        # Join budgets of the addresses heard from lately (least recent forgotten).
        self._joins: OrderedDict[str, TokenBucket] = OrderedDict()

    def connected(self, address: str) -> ProtocolError | None:
        """A connection from ``address`` was accepted; the refusal it gets, if any.

        Counted either way: :meth:`disconnected` is called when it closes.
        """
        self.open += 1
        self._connections[address] += 1
        if self.max_connections and self.open > self.max_connections:
            why = f"this node takes at most {self.max_connections} connections"
            return ProtocolError("too_many_connections", why)
        if self.max_per_address and self._connections[address] > self.max_per_address:
            why = f"at most {self.max_per_address} connections from one address"
            return ProtocolError("too_many_connections", why)
        return None

    def disconnected(self, address: str, *, text: bool) -> None:
        self.open -= 1
        _drop(self._connections, address)
        if text:
            _drop(self._texts, address)

    def joining(self, address: str, *, text: bool, now: float) -> ProtocolError | None:
        """A plain-text client or a node from ``address`` is about to join.

        Answers the refusal if the address is over a limit; else counts it
        (a text client toward its address's text limit, until
        :meth:`disconnected` with ``text=True``).
        """
        limit = self.max_text_per_address
        if text and limit and self._texts[address] >= limit:
            why = f"at most {limit} plain-text clients from one address"
            return ProtocolError("too_many_connections", why)
        if self._bucket(address).take(now) > 0:
            why = f"at most {self.join_rate:g} joins a second from one address"
            return ProtocolError("rate_limited", why)
        if text:
            self._texts[address] += 1
        return None

    def _bucket(self, address: str) -> TokenBucket:
        bucket = self._joins.get(address)
        if bucket is None:
            bucket = self._joins[address] = TokenBucket(self.join_rate, self.join_burst)
            while len(self._joins) > self.max_addresses:
                self._joins.popitem(last=False)
        else:
            self._joins.move_to_end(address)
        return bucket


def _drop(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
