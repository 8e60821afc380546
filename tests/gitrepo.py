"""git for tests that build repositories of their own (a fixed author, errors shown)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_AUTHOR = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip


def git(where: Path, *args: str) -> str:
    """`git -C where args...`'s output; AssertionError with git's message if it fails."""
    done = subprocess.run(
        ["git", "-C", str(where), *args], capture_output=True, text=True, check=False,
        env={**os.environ, **_AUTHOR},
    )  # fmt: skip
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()
