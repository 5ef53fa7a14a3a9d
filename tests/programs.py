"""The external programs some tests drive, and what to do when one is missing.

A test that drives netcat, tmux, telnet or redis-server is marked ``@pytest.mark.needs(NAME)``.
On a person's machine without the program it is skipped with a reason that
names the program and the Debian package that provides it; under
``CI=true`` it fails instead, since CI (``.ci/run``) installs them all and
must run every test.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

# program -> the Debian package that provides it
PACKAGES = {"nc": "netcat-openbsd", "tmux": "tmux", "telnet": "telnet"}
PACKAGES["redis-server"] = "redis-server"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@functools.cache
def missing(name: str) -> str | None:
    """Why ``name`` cannot be used here, or None if it can."""
    path = shutil.which(name)
    if path is None:
        return f"{name} ({PACKAGES[name]}) not found"
    if name == "nc":
        # The tests use the OpenBSD netcat's -N and -q; others differ.
        try:
            usage = subprocess.run(
                [path, "-h"], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return f"nc at {path} does not run"
        if "openbsd" not in (usage.stdout + usage.stderr).lower():
            return f"nc at {path} is not the OpenBSD netcat ({PACKAGES[name]})"
    return None


def path_of(name: str) -> str:
    """The program's path (call only in a test that ``needs`` it)."""
    path = shutil.which(name)
    assert path is not None, missing(name)
    return path
