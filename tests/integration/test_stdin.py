"""A run must not depend on the caller's stdin: workers and CLIs leave it non-blocking."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fleetflow.lab import Lab

from ..conftest import REPO

pytestmark = pytest.mark.integration

SCRIPT = """
import os, sys
os.set_blocking(0, False)  # what the prefect CLI leaves behind on a shared stdin
from fleetflow.engine.inventory import preflight
from fleetflow.engine.request import RunRequest
plan = preflight(RunRequest("ping", sys.argv[1], __import__("pathlib").Path(sys.argv[2])))
print(len(plan.hosts))
"""


def test_preflight_works_with_a_non_blocking_stdin(lab: Lab) -> None:
    # stdin is a pipe we never write to, like a worker's.
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(lab.inventory_dir), str(REPO)],
        stdin=subprocess.PIPE, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(len(lab.hosts()))
