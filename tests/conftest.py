"""Fixtures shared by the test modules (pytest-trio provides ``nursery``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from harness import Group


@pytest.fixture
async def group() -> AsyncIterator[Group]:
    """Nodes and clients for one test; the nodes leave (Node.stop) when it ends."""
    async with trio.open_nursery() as nursery:
        nodes = Group(nursery)
        yield nodes
        with trio.fail_after(5):
            await nodes.aclose()
        nursery.cancel_scope.cancel()
