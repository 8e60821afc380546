"""Stack configuration and database URL handling: bad input is refused with a clear error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleetflow.engine._locks import chunks, lock_names
from fleetflow.exceptions import StackError
from fleetflow.stack import StackConfig, parse_worker_option
from fleetflow.stack._database import database_url, masked
from fleetflow.stack._procs import processes_marked, spawn, stop_all

REPO = Path(__file__).resolve().parents[3]


def test_repository_stack_file_is_valid() -> None:
    config = StackConfig.load(REPO / "deployments" / "stack.yaml")
    assert {q.name for q in config.work_pool.queues} >= {"lab", "staging", "prod"}
    assert config.worker_poll_seconds <= 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers: [{name: w, queues: [nowhere]}]", "unknown queues"),
        ("work_pool: {queues: [{name: a}, {name: a}]}", "queue names repeat"),
        ("workers: [{name: w, queues: [lab]}, {name: w, queues: [lab]}]", "worker names repeat"),
        ("work_pool: {queues: [{name: a, priority: 0}]}", "greater than or equal to 1"),
        ("surprise: 1", "Extra inputs"),
        ("work_pool: [", "invalid stack config"),
    ],
)
def test_bad_stack_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    with pytest.raises(StackError, match=message):
        StackConfig.load(path)


def test_missing_stack_file_is_a_stack_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="cannot read"):
        StackConfig.load(tmp_path / "absent.yaml")


def test_worker_option_parses_and_is_checked_against_the_pool() -> None:
    worker = parse_worker_option("edge-1=lab,staging")
    assert worker.name == "edge-1" and worker.queues == ("lab", "staging")
    with pytest.raises(StackError, match="NAME=QUEUE"):
        parse_worker_option("edge-1")
    with pytest.raises(StackError, match="unknown queues"):
        StackConfig().with_workers([parse_worker_option("w=prod")])


def test_database_url_gets_asyncpg_and_never_shows_the_password() -> None:
    url = database_url("postgresql://ops:s3cret@db.example:5433/fleetflow")
    assert url.drivername == "postgresql+asyncpg" and url.database == "fleetflow"
    assert "s3cret" not in masked(url) and "***" in masked(url)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sqlite:///x.db", "must be a PostgreSQL URL"),
        ("postgresql://postgres@127.0.0.1:5432", "names no database"),
        ("not a url", "not a database URL"),
    ],
)
def test_bad_database_url_is_refused(text: str, message: str) -> None:
    with pytest.raises(StackError, match=message):
        database_url(text)


def test_lock_names_are_sorted_and_unique_whatever_the_order() -> None:
    assert lock_names(["web-02", "db-01", "web-02"]) == [
        "fleetflow-host:db-01",
        "fleetflow-host:web-02",
    ]
    assert lock_names(["b", "a"]) == lock_names(["a", "b"])


def test_stop_all_kills_the_service_and_its_marked_descendants(tmp_path: Path) -> None:
    mark = str(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "FLEETFLOW_STACK_MARK": mark}
    # The child escapes the process group (setsid), as SSH control masters do.
    service = spawn(
        "worker", "w", ["sh", "-c", "setsid sleep 300 & sleep 300"],
        env=env, log=tmp_path / "w.log", cwd=tmp_path,
    )  # fmt: skip
    assert service.alive()
    deadline = 50
    while len(processes_marked(mark)) < 3 and deadline:  # sh, sleep, setsid'd sleep
        subprocess.run(["sleep", "0.1"], check=True)
        deadline -= 1
    assert len(processes_marked(mark)) == 3
    assert stop_all([service], mark, grace=2) == []
    assert not service.alive() and processes_marked(mark) == []


def test_lock_requests_stay_under_prefects_related_resource_limit() -> None:
    names = lock_names(f"host-{i:03d}" for i in range(200))
    parts = chunks(names)
    assert [len(p) for p in parts] == [90, 90, 20]
    assert [n for p in parts for n in p] == names  # one global order: no deadlock
