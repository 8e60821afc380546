"""Workers get no database credentials; the stack's logs are readable by their owner only."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetflow.stack import StackConfig, _procs
from fleetflow.stack import _stack as stack_module
from fleetflow.stack._procs import ServiceProcess, spawn
from fleetflow.stack._stack import Stack

URL = "postgresql://ops:s3cr%40t-pw@db.example:5432/fleetflow"


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What `_start_worker` would start, recorded instead of started."""
    calls: list[dict[str, Any]] = []

    def fake_spawn(role: str, name: str, argv: list[str], **kwargs: Any) -> ServiceProcess:
        calls.append({"role": role, "argv": argv, **kwargs})
        return ServiceProcess(role, name, 1, 1, str(kwargs["log"]))

    monkeypatch.setattr(stack_module, "spawn", fake_spawn)
    monkeypatch.setattr(Stack, "_wait_socket", staticmethod(lambda *_: None))
    return calls


@pytest.mark.parametrize("warm", [True, False])
def test_workers_and_launchers_get_no_database_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawned: list[dict[str, Any]], warm: bool
) -> None:
    """Regression: FLEETFLOW_DATABASE_URL reached workers, so every flow run could read it."""
    monkeypatch.setenv("FLEETFLOW_DATABASE_URL", URL)
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", URL)
    monkeypatch.setenv("PREFECT_API_DATABASE_PASSWORD", "s3cr@t-pw")
    monkeypatch.setenv("APP_DB", "postgres://ops:s3cr%40t-pw@db.example/other")
    monkeypatch.setenv("PGPASSWORD", "s3cr@t-pw")
    monkeypatch.setenv("UNRELATED", "kept")
    stack = Stack(tmp_path / "stack", tmp_path, database=URL, auth="fleetflow:pw")
    config = StackConfig(warm_launcher=warm)
    started = stack._start_worker(config, config.workers[0])
    assert len(started) == len(spawned) == (2 if warm else 1)
    for call in spawned:
        env = call["env"]
        assert not any("DATABASE" in key for key in env), sorted(env)
        assert not any("s3cr" in value for value in env.values())
        assert env["UNRELATED"] == "kept" and env["PREFECT_API_URL"] == stack.api_url
        assert env["PREFECT_API_AUTH_STRING"] == "fleetflow:pw"


def test_the_server_still_gets_its_database(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack", tmp_path, database=URL, auth="fleetflow:pw")
    env = stack._server_env(StackConfig())
    assert "s3cr" in env["PREFECT_API_DATABASE_CONNECTION_URL"]


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """Wait for the services these tests start (`true`): no zombie outlives the test."""
    yield
    for proc in _procs._STARTED:
        proc.wait(10)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_service_logs_are_private(tmp_path: Path) -> None:
    """Regression: logs (hosts, variables, errors) were created 0644 in a 0755 directory."""
    logs = tmp_path / "stack" / "logs"
    service = spawn("worker", "w", ["true"], env={"PATH": "/usr/bin:/bin"},
                    log=logs / "worker-w.log", cwd=tmp_path)  # fmt: skip
    assert _mode(Path(service.log)) == 0o600
    assert _mode(logs) == 0o700


def test_an_existing_log_and_directory_are_tightened(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o755)
    logs.chmod(0o755)
    log = logs / "server.log"
    log.write_text("old line\n")
    log.chmod(0o644)
    spawn("server", "s", ["true"], env={"PATH": "/usr/bin:/bin"}, log=log, cwd=tmp_path)
    assert _mode(log) == 0o600 and _mode(logs) == 0o700
    assert log.read_text().startswith("old line\n")  # appended to, not replaced


def test_a_log_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "w.log").symlink_to(target)
    with pytest.raises(OSError):
        spawn("worker", "w", ["true"], env={}, log=tmp_path / "logs" / "w.log", cwd=tmp_path)
