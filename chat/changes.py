"""A broadcast "something changed" signal, for waiters that re-check a condition."""

from __future__ import annotations

from collections.abc import Callable

import trio


class Changes:
    """Wakes every waiter on :meth:`notify`; :meth:`until` re-checks its predicate.

    Trio has no broadcast channel; this is the smallest one that serves. A
    notify with nobody waiting costs one attribute test, so it may sit on
    a hot path.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: trio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        """Return at the next notification."""
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Return as soon as ``predicate()`` holds, checked now and after each change."""
        while not predicate():
            await self.wait()
