"""Outgoing connections: back-off, re-dialling, addresses learned from peers.

Addresses from the command line are retried with exponential back-off
(1 s doubling to 30 s) for as long as the node runs, with one warning per
failure streak, and re-dialled when their link drops. Addresses learned by
peer exchange get a few tries and are then forgotten (§7).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import trio

from chat.connection import DUPLICATE
from chat.protocol import join_addr

if TYPE_CHECKING:
    from chat.node import Node

log = logging.getLogger("chat")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
LEARNED_TRIES = 3  # dials of an address learned by peer exchange (§7)


class Dialler:
    """The dialling tasks of one node, and what they are dialling."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._addresses: set[tuple[str, int]] = set()
        self._nodes: set[str] = set()  # node ids expected at learned addresses
        self._unsettled = 0  # command-line dials without an outcome yet

    @property
    def learned(self) -> int:
        """Dials under way to nodes learned by peer exchange."""
        return len(self._nodes)

    def connect(
        self, nursery: trio.Nursery, host: str, port: int, *, persistent: bool, expect: str
    ) -> bool:
        """Start dialling ``host:port`` in ``nursery``; False if already dialling it."""
        if (host, port) in self._addresses or expect in self._nodes:
            return False
        self._addresses.add((host, port))
        if expect:
            self._nodes.add(expect)
        if persistent:
            self._unsettled += 1
        nursery.start_soon(self._dial, host, port, persistent, expect)
        return True

    async def settled(self) -> None:
        """Return once every address dialled so far has linked or failed once.

        A script's lines may all be read before its first link is up; its
        front end waits for this before leaving, so that what it said goes
        out with the catch-up instead of nowhere.
        """
        while self._unsettled:
            await self.node.links_changed()

    def _settle_one(self) -> None:
        self._unsettled -= 1
        self.node._notify_links()

    async def _dial(self, host: str, port: int, persistent: bool, expect: str) -> None:
        node = self.node
        where = join_addr(host, port)
        delay = BACKOFF_FIRST
        failures = 0
        last_node = ""
        unsettled = persistent  # this address counts for settled()
        try:
            while True:
                if last_node and (link := node.links.get(last_node)):
                    # Linked to that node over another connection: re-dial
                    # only once that one is gone.
                    await link.conn.closed.wait()
                    continue
                try:
                    with trio.fail_after(node.config.timing.handshake):
                        stream = await trio.open_tcp_stream(host, port)
                except (OSError, trio.TooSlowError) as exc:
                    failures += 1
                    if unsettled:
                        unsettled = False
                        self._settle_one()
                    if not persistent and failures >= LEARNED_TRIES:
                        log.info("giving up on %s (learned from a peer): %s", where, why(exc))
                        return
                    if failures == 1 and persistent:
                        log.warning(
                            "cannot reach %s (%s); retrying with back-off up to %g s",
                            where,
                            why(exc),
                            BACKOFF_MAX,
                        )
                    await trio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                if failures and persistent:
                    log.info("reached %s after %d failed tries", where, failures)
                failures = 0
                link = node.dial_stream(stream)
                while unsettled and not link.active and link.conn in node.sessions:
                    await node.links_changed()
                if unsettled:
                    unsettled = False
                    self._settle_one()
                await link.conn.closed.wait()
                if link.node == node.id:
                    log.info("%s is this node itself: not dialling it again", where)
                    return
                last_node = link.node
                if not persistent:
                    return
                if link.conn.established and link.conn.close_reason != DUPLICATE:
                    log.info("re-dialling %s (%s) in %g s", link.name, where, BACKOFF_FIRST)
                delay = BACKOFF_FIRST
                await trio.sleep(delay)
        finally:
            if unsettled:
                self._settle_one()
            self._addresses.discard((host, port))
            self._nodes.discard(expect)


def why(exc: BaseException) -> str:
    """A short reason for a failed dial: "Connection refused", "timed out"."""
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    # open_tcp_stream wraps its attempts: the first underlying error tells.
    cause = exc.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if isinstance(cause, OSError):
        exc = cause
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc)
