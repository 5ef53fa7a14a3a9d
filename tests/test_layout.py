"""The shape of the code base: layers that import only downwards.

The sans-IO modules know nothing of trio (after h11: they take bytes and
time in and hand values out), and no module of ``chat`` imports, directly
or through others, a module that imports it back.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CHAT = Path(__file__).resolve().parent.parent / "chat"

# Pure modules: no trio, no sockets, no event loop.
SANS_IO = ["addr", "keys", "names", "protocol", "parse", "handshake", "framing", "state"]
SANS_IO += ["members", "flow", "lifecycle", "commands", "author"]
SANS_IO += ["group", "admission", "attention", "private", "screen"]


def imports_of(module: str) -> set[str]:
    """Top-level names imported at run time by ``chat/<module>.py``.

    Imports under ``if TYPE_CHECKING:`` are for the type checker only and
    are left out, as they create no cycle when the program runs.
    """
    tree = ast.parse((CHAT / f"{module}.py").read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                found.add(base)
                if base == "chat":
                    found.update(f"chat.{alias.name}" for alias in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit([n for n in inner if isinstance(n, ast.stmt)])

    visit(tree.body)
    return found


def chat_modules() -> list[str]:
    return sorted(p.stem for p in CHAT.glob("*.py") if p.stem not in ("__init__", "__main__"))


@pytest.mark.parametrize("module", SANS_IO)
def test_sans_io_modules_import_no_trio(module: str) -> None:
    imported = imports_of(module)
    assert not {name for name in imported if name.split(".")[0] in ("trio", "socket")}


def test_no_import_cycle_in_chat() -> None:
    graph = {
        module: {
            name.removeprefix("chat.")
            for name in imports_of(module)
            if name.startswith("chat.") and name.removeprefix("chat.") in chat_modules()
        }
        for module in chat_modules()
    }
    # Depth-first search for a back edge; report the cycle found.
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module)


def test_without_a_bus_nothing_redis_is_imported() -> None:
    # A hub without --bus: neither chat.bus nor coredis is imported (issue 16).
    code = (
        "import sys, chat.cli, chat.hub, chat.node\n"
        "print(sorted(m for m in sys.modules if m == 'chat.bus' or m.startswith('coredis')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:6379/0", "the bus is redis://"),
        ("redis://127.0.0.1:notaport/0", "port is not a number"),
        ("redis://127.0.0.1:6379/0?group=a/b", "a bus group is 1 to 64"),
        ("redis://user:hunter2@127.0.0.1:6379/0", "password on the command line"),
    ],
)
def test_a_bad_bus_is_refused_in_a_line(url: str, why: str) -> None:
    command = [sys.executable, "-m", "chat", "hub", "0", "--host", "127.0.0.1", "--bus", url]
    out = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out
    assert why in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "hunter2" not in out.stderr  # a secret is never echoed
