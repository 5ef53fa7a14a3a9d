"""Outgoing connections: back-off, re-dialling, addresses learned from peers.

Addresses from the command line are retried with exponential back-off
(1 s doubling to 30 s) for as long as the node runs, with one warning per
failure streak, and re-dialled when their link drops. Addresses learned by
peer exchange get a few tries and are then forgotten (§7).

Like trio's ``serve_listeners``, the dialler knows nothing of the node: it
is given a way to open a stream and a way to serve one (after httpcore's
network backends), so its back-off is tested on memory streams.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from chat.addr import join_addr
from chat.lifecycle import Closing, Reason

log = logging.getLogger("chat")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STILL_TRYING = 3  # failed tries of a command-line address before it is said again
LEARNED_TRIES = 3  # dials of an address learned by peer exchange (§7)


@dataclass(frozen=True, slots=True)
class LinkEnd:
    """How a dialled connection ended, as far as the dialler cares."""

    node: str  # the remote's node id; "" if it never said hello
    name: str  # its name, or its address
    established: bool  # its handshake completed
    closing: Closing


OpenStream = Callable[[str, int], Awaitable[trio.abc.Stream]]
# Serve a dialled stream until it closes; call the second argument once its
# handshake completes.
Serve = Callable[[trio.abc.Stream, Callable[[], None]], Awaitable[LinkEnd]]


async def _open_tcp(host: str, port: int) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


class Dialler:
    """The dialling tasks of one node, and what they are dialling."""

    def __init__(
        self,
        serve: Serve,
        wait_unlinked: Callable[[str], Awaitable[None]],
        *,
        timeout: float,
        open_stream: OpenStream = _open_tcp,
    ) -> None:
        self.trying: dict[str, str] = {}  # command-line addresses long unanswered: why
        self._serve = serve
        self._wait_unlinked = wait_unlinked
        self._open = open_stream
        self.timeout = timeout  # for connecting, as for a handshake (§3)
        self._nursery: trio.Nursery | None = None
        self._queued: list[tuple[str, int, bool, str]] = []  # asked for before start
        self._addresses: set[tuple[str, int]] = set()
        self._nodes: set[str] = set()  # node ids expected at learned addresses
        self._unsettled = 0  # command-line dials without an outcome yet
        self._settle = trio.Event()

    @property
    def learned(self) -> int:
        """Dials under way to nodes learned by peer exchange."""
        return len(self._nodes)

    def start(self, nursery: trio.Nursery) -> None:
        """Dial from now on in ``nursery``, beginning with what was asked before."""
        self._nursery = nursery
        for args in self._queued:
            nursery.start_soon(self._dial, *args)
        self._queued.clear()

    def connect(self, host: str, port: int, *, persistent: bool, expect: str = "") -> bool:
        """Start dialling ``host:port``; False if already dialling it."""
        if (host, port) in self._addresses or expect in self._nodes:
            return False
        self._addresses.add((host, port))
        if expect:
            self._nodes.add(expect)
        if persistent:
            self._unsettled += 1
        if self._nursery is None:
            self._queued.append((host, port, persistent, expect))
        else:
            self._nursery.start_soon(self._dial, host, port, persistent, expect)
        return True

    async def settled(self) -> None:
        """Return once every address dialled so far has linked or failed once.

        A script's lines may all be read before its first link is up; its
        front end waits for this before leaving, so that what it said goes
        out with the catch-up instead of nowhere.
        """
        while self._unsettled:
            await self._settle.wait()

    def _settle_one(self) -> None:
        self._unsettled -= 1
        self._settle.set()
        self._settle = trio.Event()

    async def _dial(self, host: str, port: int, persistent: bool, expect: str) -> None:
        where = join_addr(host, port)
        delay = BACKOFF_FIRST
        failures = 0
        last_node = ""
        unsettled = persistent  # this address counts for settled()

        def settle() -> None:
            nonlocal unsettled
            if unsettled:
                unsettled = False
                self._settle_one()

        try:
            while True:
                if last_node:
                    # Linked to that node over another connection: re-dial
                    # only once that one is gone.
                    await self._wait_unlinked(last_node)
                try:
                    with trio.fail_after(self.timeout):
                        stream = await self._open(host, port)
                except Exception as exc:
                    # Resolving and connecting raise more than OSError (an
                    # IDNA UnicodeError, a library's own): none of it may
                    # reach the node. Cancellation is not an Exception.
                    failures += 1
                    settle()
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
                    if failures == STILL_TRYING and persistent:
                        # Said once, and kept for the toolbar until it answers.
                        self.trying[where] = why(exc)
                        log.warning("still trying %s: %s", where, why(exc))
                    await trio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                if failures and persistent:
                    log.info("reached %s after %d failed tries", where, failures)
                self.trying.pop(where, None)
                failures = 0
                end = await self._serve(stream, settle)
                settle()
                if end.closing.reason is Reason.ITSELF:
                    log.info("%s is this node itself: not dialling it again", where)
                    return
                last_node = end.node
                if not persistent:
                    return
                if end.established and end.closing.reason is not Reason.DUPLICATE:
                    log.info("re-dialling %s (%s) in %g s", end.name, where, BACKOFF_FIRST)
                # Refused before its handshake completed (a wrong secret, another
                # protocol): back off as for an address that cannot be reached.
                delay = BACKOFF_FIRST if end.established else min(delay * 2, BACKOFF_MAX)
                await trio.sleep(delay)
        finally:
            settle()
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
