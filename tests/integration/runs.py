"""Helpers for tests that read a flow run's logs, stop what they started, or check a
repository."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId


def log_lines(flow_run_id: UUID, needle: str, timeout: float = 60) -> list[str]:
    """The flow run's log lines, polled until one contains `needle` (logs ship in batches,
    and a record may hold several lines)."""
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            records = client.read_logs(log_filter=log_filter)
        lines = [line for log in records for line in log.message.splitlines()]
        if any(needle in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a process the test started; kill it if it does not end within 20 s."""
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def fleetflow_check(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`fleetflow check ARGS` on the repository at `project`."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "fleetflow"), "check", *args],
        env={**os.environ, "FLEETFLOW_PROJECT_DIR": str(project)},
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
