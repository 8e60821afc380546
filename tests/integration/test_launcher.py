"""fleetflow-engine and the warm launcher: fork path, stdio, exit codes, fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
# A real engine start that fails fast: a flow run id, and an API where nothing listens.
# Only with both variables from the request does the engine get as far as connecting.
BAD_RUN = {
    "PREFECT__FLOW_RUN_ID": "00000000-0000-4000-8000-000000000000",
    "PREFECT_API_URL": "http://127.0.0.1:9/api",
}


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "launcher.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetflow.launcher.server", str(sock)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
            time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert not sock.exists(), "the launcher left its socket behind"


def _engine(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "fleetflow-engine")], env={**os.environ, **env}, cwd=cwd,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _timed(env: dict[str, str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = _engine(env, cwd)
    return time.monotonic() - started, done


def test_forked_run_gets_our_stdio_environment_and_exit_code(
    launcher: Path, tmp_path: Path
) -> None:
    warm, done = _timed({**BAD_RUN, "FLEETFLOW_LAUNCHER_SOCKET": str(launcher)}, tmp_path)
    assert done.returncode == 1
    # The engine's own error, written to the stderr we handed over.
    assert "Connection refused" in done.stderr and "Invalid flow run id" not in done.stderr
    # Without a launcher the same run pays for starting Python and importing Prefect.
    cold, stock = _timed({**BAD_RUN, "FLEETFLOW_LAUNCHER_SOCKET": str(tmp_path / "no")}, tmp_path)
    assert stock.returncode == 1 and "Connection refused" in stock.stderr
    assert warm + 0.5 < cold, (warm, cold)
