"""Fixtures shared by the test modules (pytest-trio provides ``nursery``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from harness import Group
from programs import PACKAGES, in_ci, missing


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(program): the test drives this external program")


def _needs(item: pytest.Item) -> list[str]:
    return [str(mark.args[0]) for mark in item.iter_markers("needs")]


def pytest_collection_finish(session: pytest.Session) -> None:
    """One line per missing program, before the run: what will be skipped."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for program in PACKAGES:
        why = missing(program)
        count = sum(1 for item in session.items if program in _needs(item))
        if why and count and reporter is not None:
            fate = "will fail (CI=true: CI must run every test)" if in_ci() else "will be skipped"
            tests = "test" if count == 1 else "tests"
            reporter.write_line(f"note: {why}: {count} {tests} {fate}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for program in _needs(item):
        why = missing(program)
        if why is None:
            continue
        if in_ci():
            pytest.fail(f"{why}, and CI=true: .ci/run installs it; every test must run")
        pytest.skip(why)


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own config directory: the identity and known names of the
    commands it runs are made there, never in the person's own (§2)."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home / "trio-chat"


@pytest.fixture
async def group() -> AsyncIterator[Group]:
    """Nodes and clients for one test; the nodes leave (Node.stop) when it ends."""
    async with trio.open_nursery() as nursery:
        nodes = Group(nursery)
        yield nodes
        with trio.fail_after(5):
            await nodes.aclose()
        nursery.cancel_scope.cancel()
