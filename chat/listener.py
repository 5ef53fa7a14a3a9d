"""Accepting connections, and what to do when the descriptors run out.

trio's ``serve_listeners`` logs every failed accept and retries every 0.1 s:
out of descriptors (EMFILE, ENFILE), a node would log ten lines a second
while newcomers hang with no answer. Here one line is logged per episode,
and each newcomer is still answered: a spare descriptor is kept open, given
up to accept the newcomer, tell it ``too_many_connections`` in its own
dialect (§9: a person never gets JSON) and close it, then taken back.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

import trio

from chat.protocol import Error, encode

log = logging.getLogger("chat")

CAPACITY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
FIRST_BYTE_WAIT = 1.0  # how long a turned-away newcomer may take to show its dialect
PENDING_WAIT = 0.05  # the newcomer that made accept fail is waiting: it comes at once
BACKOFF_MAX = 1.0
Handler = Callable[[trio.SocketStream], Awaitable[None]]


def _spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


class Acceptor:
    """Accepts on each listener and starts ``handle`` for each stream in ``nursery``."""

    def __init__(self, handle: Handler, nursery: trio.Nursery, why: str) -> None:
        self.handle = handle
        self.nursery = nursery
        self.why = why  # the refusal's text: "this node takes at most N connections"
        self._spare = _spare()
        self.turned_away = 0  # newcomers answered while out of descriptors

    async def serve(self, listeners: Sequence[trio.SocketListener]) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._serve_one, listener)
        finally:
            if self._spare is not None:
                os.close(self._spare)
                self._spare = None

    async def _serve_one(self, listener: trio.SocketListener) -> None:
        starved = False
        delay = 0.05
        while True:
            failed = 0
            stream: trio.SocketStream | None = None
            try:
                stream = await listener.accept()
            except OSError as exc:
                failed = exc.errno or -1
            if failed:
                # (Not awaiting inside the except clause: it would keep the
                # exception and its traceback alive meanwhile.)
                if not starved:
                    name = errno.errorcode.get(failed, str(failed))
                    if failed in CAPACITY:
                        log.warning(
                            "out of file descriptors (%s): newcomers are told"
                            " too_many_connections until some connections close",
                            name,
                        )
                    else:
                        log.warning("accepting connections failed (%s); retrying", name)
                    starved = True
                taken = await self._turn_away(listener) if failed in CAPACITY else None
                if taken is None:
                    await trio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                if not taken:
                    continue  # turned away: still starved
                # A descriptor came free: the newcomer was served as usual.
            elif stream is not None:
                self.nursery.start_soon(self.handle, stream)
            if starved:
                log.info("accepting connections again (%d turned away)", self.turned_away)
                starved, delay, self.turned_away = False, 0.05, 0

    async def _turn_away(self, listener: trio.SocketListener) -> bool | None:
        """Take the newcomer waiting with the spare descriptor; None if none waits.

        True if a descriptor had come free meanwhile and it was served as
        usual; False if it was told why, in its dialect, and closed.
        """
        if self._spare is None:
            self._spare = _spare()
            return None
        os.close(self._spare)
        self._spare = None
        sock: trio.socket.SocketType | None = None
        try:
            with trio.move_on_after(PENDING_WAIT):
                sock, _ = await listener.socket.accept()
        except OSError:
            pass
        self._spare = _spare()
        if sock is None:
            return None
        if self._spare is not None:  # room again: no reason to turn it away
            self.nursery.start_soon(self.handle, trio.SocketStream(sock))
            return True
        with sock:
            first = b""
            with trio.move_on_after(FIRST_BYTE_WAIT), contextlib.suppress(OSError):
                first = await sock.recv(1)
            if first == b"{":
                answer = encode(Error("too_many_connections", self.why))
            else:
                answer = f"*** error: too_many_connections: {self.why}\n".encode()
            with contextlib.suppress(OSError):
                await sock.send(answer)
        self._spare = _spare()
        self.turned_away += 1
        return False
