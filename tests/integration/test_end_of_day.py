"""flows/end_of_day.py on the lab: files and checksums on the hosts, branches that overlap,
a failed branch that stops the join, and a retried run that resumes without redoing steps."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flows.end_of_day import end_of_day
from prefect import State, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import ParameterTypeError
from prefect.settings import get_current_settings

from fleetflow import ConfigurationError, PlaybookFailed
from fleetflow.lab import Lab

from ..project import make_project
from .stacks import BIN

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
SETTLEMENT = "id,account,amount_cents\np-1,GB01,1250\np-2,GB02,990\np-3,GB03,-240\n"


@pytest.fixture(scope="module")
def project(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"), {"lab": lab.inventory_dir})


@pytest.fixture(autouse=True)
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETFLOW_PROJECT_DIR", str(project))


def _host(lab: Lab, group: str) -> str:
    return next(h.name for h in lab.hosts() if h.group == group)


def _new_day(lab: Lab) -> str:
    """A business date no other test uses, its settlement file planted on the db host."""
    day = (date(2030, 1, 1) + timedelta(days=uuid.uuid4().int % 20000)).isoformat()
    inbox = "/srv/eod/inbox"
    plant = f"mkdir -p {inbox} && printf '%s' '{SETTLEMENT}' > {inbox}/settlement-{day}.csv"
    assert lab.ssh(_host(lab, "db"), plant).returncode == 0
    return day


def _cat(lab: Lab, host: str, path: str) -> str:
    done = lab.ssh(host, f"cat {path}")
    assert done.returncode == 0, f"{host}:{path}: {done.stderr}"
    return done.stdout


def _marks(lab: Lab, host: str, day: str, step: str) -> tuple[float, float]:
    lines = _cat(lab, host, f"/srv/eod/{day}/{step}.marks").split()
    marks = dict(line.split("=", 1) for line in lines)
    return float(marks["started"]), float(marks["finished"])


def _sha256(lab: Lab, host: str, path: str) -> str:
    return _cat(lab, host, f"{path} | sha256sum").split()[0]


def _running(state: State[Any], name_prefix: str) -> tuple[datetime, datetime]:
    """When the flow run's task named NAME_PREFIX... started and ended running (server's record)."""
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    [run] = [r for r in runs if r.name.startswith(name_prefix)]
    assert run.start_time is not None and run.end_time is not None, run
    return run.start_time, run.end_time


def test_end_of_day_writes_every_steps_files_and_runs_the_branches_together(lab: Lab) -> None:
    db, batch, web = _host(lab, "db"), _host(lab, "batch"), _host(lab, "web")
    day = _new_day(lab)
    state = end_of_day(
        business_date=date.fromisoformat(day), inventory="lab", retries=0, return_state=True
    )
    summary = state.result()
    sha = hashlib.sha256(SETTLEMENT.encode()).hexdigest()
    reconciled = f"business_date={day}\nsettlement_sha256={sha}\npayments=3\ntotal_cents=2000\n"
    assert _cat(lab, db, f"/srv/eod/{day}/reconciliation.txt") == reconciled
    report = _cat(lab, batch, f"/srv/eod/{day}/report.txt")
    assert "payments: 3\ntotal_cents: 2000\n" in report and sha in report
    archive = f"/srv/eod/archive/logs-{day}.tar.gz"
    assert "fleetflow/scripts/" in _cat(lab, web, f"{archive} | tar -tzf -")
    assert _cat(lab, web, f"{archive}.sha256").split()[0] == _sha256(lab, web, archive)
    assert _cat(lab, db, f"/srv/eod/{day}/summary.txt") == reconciled + (
        f"report_sha256={_sha256(lab, batch, f'/srv/eod/{day}/report.txt')}\n"
        f"archive_sha256={_sha256(lab, web, archive)}\n"
    )
    assert lab.ssh(db, f"test -s /srv/eod/{day}/done").returncode == 0
    assert summary["payments"] == "3" and summary["total_cents"] == "2000"
    # The branches ran together: each branch's task was running before the other's ended.
    # (Their scripts on the hosts may not overlap on a loaded controller: each playbook
    # takes its own time to start; the flow guarantees the tasks, not the scripts.)
    report_run, archive_run = _running(state, "reports on"), _running(state, "archive on")
    assert report_run[0] < archive_run[1] and archive_run[0] < report_run[1]
    # and the join started on its host after both branches' scripts ended there.
    _, report_end = _marks(lab, batch, day, "report")
    _, archive_end = _marks(lab, web, day, "archive")
    assert _marks(lab, db, day, "publish")[0] > max(report_end, archive_end)


def test_failed_branch_stops_the_join_and_a_retry_resumes_there(lab: Lab, project: Path) -> None:
    db, batch, web = _host(lab, "db"), _host(lab, "batch"), _host(lab, "web")
    day = _new_day(lab)
    # A file where the archive directory belongs: the archive step fails on the web host.
    obstacle = "mkdir -p /srv/eod && rm -rf /srv/eod/archive && touch /srv/eod/archive"
    assert lab.ssh(web, obstacle).returncode == 0
    try:
        state = end_of_day(
            business_date=date.fromisoformat(day),
            inventory="lab",
            retries=1,
            retry_delay=0,
            return_state=True,
        )
    finally:
        lab.ssh(web, "rm -f /srv/eod/archive")
    assert state.is_failed()
    message = state.message or ""
    assert f"step archive failed: 1 of 1 host failed in run_script.yml: {web}" in message, message
    assert "eod_archive.sh exited 1" in message and "Retry flow run" in message
    error = state.result(raise_on_failure=False)
    assert isinstance(error, PlaybookFailed)
    assert error.result.hosts[web].attempts == 2  # the failed host was retried
    joined = f"test -e /srv/eod/{day}/done || test -e /srv/eod/{day}/publish.marks"
    assert lab.ssh(db, joined).returncode == 1
    reconcile, report = _marks(lab, db, day, "reconcile"), _marks(lab, batch, day, "report")

    run_id = state.state_details.flow_run_id
    assert run_id is not None
    with get_client(sync_client=True) as client:
        failed_run = client.read_flow_run(run_id)
    assert ": step archive failed" in failed_run.name and f"failed:{web}" in failed_run.tags
    env = os.environ | get_current_settings().to_environment_variables(exclude_unset=True)
    entrypoint = "flows/end_of_day.py:end_of_day"
    retried = subprocess.run(
        [str(BIN / "prefect"), "flow-run", "retry", str(run_id), "--entrypoint", entrypoint],
        cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert retried.returncode == 0, retried.stdout + retried.stderr
    # Steps that succeeded in the first attempt were not run again (their marks are as
    # they were); the failed branch and the join ran.
    assert _marks(lab, db, day, "reconcile") == reconcile
    assert _marks(lab, batch, day, "report") == report
    archive_start, _ = _marks(lab, web, day, "archive")
    assert archive_start > report[1]
    summary = _cat(lab, db, f"/srv/eod/{day}/summary.txt")
    assert f"archive_sha256={_sha256(lab, web, f'/srv/eod/archive/logs-{day}.tar.gz')}" in summary
    assert lab.ssh(db, f"test -s /srv/eod/{day}/done").returncode == 0
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert run.state is not None and run.state.is_completed()
    assert run.run_count == 2
    # The first attempt's outcome is gone from the name and the tags: the run completed.
    assert ": " not in run.name and not any(t.startswith("failed:") for t in run.tags), (
        run.name,
        run.tags,
    )


def test_end_of_day_takes_input_as_data_and_refuses_overlapping_groups() -> None:
    with pytest.raises(ParameterTypeError, match="business_date"):
        end_of_day(business_date="{{ lookup('pipe','id') }}", inventory="lab")  # type: ignore[call-overload]
    with pytest.raises(ParameterTypeError, match="business_date"):
        end_of_day(business_date="2030-01-01; rm -rf /", inventory="lab")  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="disjoint host groups"):
        end_of_day(business_date=date(2030, 1, 1), inventory="lab", web_hosts="db")
