"""A run's artifacts as an operator reads them (issue #20), on the lab and a real Prefect
server: the per-host table with the failed host first and marked, its outcome at the
start of the description, a progress bar that names who is still running and never says
100% for a failed run, and the diff of a check/diff run with its log summary."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterName,
)
from prefect.client.schemas.objects import Artifact

from fleetflow import PlaybookResult, RunStatus, run_playbook
from fleetflow.engine.publish import diff_key, hosts_table_key
from fleetflow.lab import Lab
from tests.conftest import REPO

from .runs import log_lines

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
FIXTURES = REPO / "tests/fixtures/playbooks"


@flow(flow_run_name="artifacts-{name}")
def one_run(name: str, playbook: str, inventory: str, kwargs: dict[str, Any]) -> PlaybookResult:
    return run_playbook(playbook, inventory=inventory, raise_on_failure=False, **kwargs)


def _run(lab: Lab, playbook: str, **kwargs: Any) -> tuple[PlaybookResult, UUID]:
    state = one_run(uuid.uuid4().hex[:8], playbook, str(lab.inventory_dir), kwargs,
                    return_state=True)  # fmt: skip
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return state.result(), flow_run_id


def _artifacts(flow_run_id: UUID) -> list[Artifact]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def _data(artifact: Artifact) -> Any:
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_a_failed_host_comes_first_marked_and_the_bar_stops_short_saying_why(lab: Lab) -> None:
    db = next(h.name for h in lab.hosts() if h.group == "db")
    others = sorted(h.name for h in lab.hosts() if h.name != db)
    result, flow_run_id = _run(lab, str(FIXTURES / "mixed.yml"))
    assert result.status == RunStatus.FAILED and result.failed_hosts == [db]
    by_type = {a.type: a for a in _artifacts(flow_run_id)}

    table = by_type["table"]
    assert table.key == hosts_table_key("mixed", lab.inventory_dir.name)
    rows = _data(table)
    assert [(r["mark"], r["host"], r["status"]) for r in rows] == [
        ("✗", db, "failed"),
        *(("●", host, "changed") for host in others),
    ]
    assert rows[0]["reason"] == "Fail on database hosts: db hosts refuse this change"
    description = table.description or ""
    assert description[:40].startswith("✗ 1 of 3 hosts failed")
    assert "db hosts refuse this change" in description.split("**Why:**")[1]

    progress = by_type["progress"]
    assert progress.data is not None and float(progress.data) < 100
    assert (progress.description or "").startswith("✗ stopped: 1 host failed")


def _flow_run_id(name: str, timeout: float = 120) -> UUID:
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"artifacts-{name}"]))
            )
        if runs:
            return runs[0].id
        assert time.monotonic() < deadline, "the flow run never appeared"
        time.sleep(0.5)


def test_the_bar_names_the_host_still_running_and_its_task(lab: Lab) -> None:
    host = sorted(h.name for h in lab.hosts())[0]
    name, tag = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    kwargs = {"limit": host, "extra_vars": {"tag": tag, "seconds": 25}}
    done: list[Any] = []
    runner = threading.Thread(
        target=lambda: done.append(
            one_run(name, str(FIXTURES / "sleep.yml"), str(lab.inventory_dir), kwargs)
        )
    )
    runner.start()
    try:
        flow_run_id = _flow_run_id(name)
        seen = ""
        deadline = time.monotonic() + 120
        while "on Sleep for" not in seen and runner.is_alive() and time.monotonic() < deadline:
            progress = [a for a in _artifacts(flow_run_id) if a.type == "progress"]
            seen = (progress[0].description or "") if progress else ""
            time.sleep(0.5)
    finally:
        runner.join(300)
    assert f"1 host still running: **{host}** on Sleep for " in seen, seen
    assert done and done[0].status == RunStatus.SUCCESSFUL
    [progress] = [a for a in _artifacts(flow_run_id) if a.type == "progress"]
    assert progress.data == 100.0 and (progress.description or "").startswith("✓ done: ")


def test_a_check_diff_run_publishes_each_hosts_diff_and_logs_what_would_change(lab: Lab) -> None:
    path = f"/root/ff-diff-{uuid.uuid4().hex[:8]}"
    hosts = sorted(h.name for h in lab.hosts())
    args = {"extra_vars": {"path": path, "content": "hello diff"}}
    result, flow_run_id = _run(lab, str(FIXTURES / "write_file.yml"), check=True, diff=True,
                               **args)  # fmt: skip
    assert result.status == RunStatus.SUCCESSFUL and result.changed_hosts == hosts
    assert all(lab.ssh(h, f"test -e {path}").returncode == 1 for h in hosts)  # nothing written

    [diff] = [a for a in _artifacts(flow_run_id) if a.type == "markdown"]
    assert diff.key == diff_key("write_file", lab.inventory_dir.name)
    text = str(diff.data)
    assert text.startswith("# Diff: write\\_file on ")
    for host in hosts:
        section = text.split(f"## {host}\n", 1)[1].split("\n## ", 1)[0]
        assert "### Write the file" in section
        assert "```diff" in section and "+hello diff" in section, section
    assert diff.description == f"in all, {len(hosts)} hosts would change, {len(hosts)} tasks"

    lines = log_lines(flow_run_id, "in all, ")
    for host in hosts:
        assert f"{host} would change 1 task: Write the file" in lines, lines
    assert f"in all, {len(hosts)} hosts would change, {len(hosts)} tasks" in lines
