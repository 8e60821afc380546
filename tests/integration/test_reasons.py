"""Reasons never lost (issue #20): a failed loop names each failed item, and Ansible's own
warnings reach the run log once. Real ansible-playbook over SSH to the lab, real Prefect."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from fleetflow import HostStatus, PlaybookFailed, PlaybookResult, run_playbook
from fleetflow.lab import Lab
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
PLAYBOOKS = REPO / "tests/fixtures/playbooks/reasons"
WARNINGS = (
    "[WARNING]: Found variable using reserved name 'environment'.",
    "[DEPRECATION WARNING]: Conditionals should not be surrounded by templating delimiters",
    "[DEPRECATION WARNING]: INJECT_FACTS_AS_VARS default to `True` is deprecated",
)


@flow
def one_run(playbook: str, inventory: str) -> PlaybookResult:
    return run_playbook(playbook, inventory=inventory, project_dir=REPO)


def warning_lines(flow_run_id: UUID, expected: int, timeout: float = 60) -> list[str]:
    """The run's WARNING lines, polled until `expected` of WARNINGS arrived (logs ship in
    batches; a record holds the lines of one level that arrived within a quarter second)."""
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            records = client.read_logs(log_filter=log_filter)
        lines = [
            line
            for record in records
            if record.level == logging.WARNING
            for line in record.message.splitlines()
        ]
        found = sum(any(line.startswith(w) for line in lines) for w in WARNINGS)
        if found >= expected or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def test_a_failed_loop_names_every_failed_item_with_its_exit_code_and_stderr(lab: Lab) -> None:
    db = next(h.name for h in lab.hosts() if h.group == "db")
    with pytest.raises(PlaybookFailed) as caught:
        one_run(str(PLAYBOOKS / "loop_fail.yml"), str(lab.inventory_dir))
    result = caught.value.result
    assert result.failed_hosts == [db]
    failure = result.hosts[db].failure
    assert failure is not None and failure.task == "Check each item on the host"
    message = failure.message
    assert message.startswith("One or more items failed; 2 of 3 items failed: (item=bad1) ")
    assert "(item=bad1) The command exited with a non-zero return code.; rc=3; " in message
    assert "stderr: bad1 is broken: no such file" in message
    assert "(item=bad2) The command exited with a non-zero return code.; rc=4; " in message
    assert message.endswith("stderr: bad2 is broken: permission denied")
    assert "(item=good)" not in message
    for host in lab.hosts():
        if host.name != db:
            assert result.hosts[host.name].status == HostStatus.OK, host.name


def test_ansible_warnings_reach_the_run_log_once_each(lab: Lab) -> None:
    state: Any = one_run(str(PLAYBOOKS / "warnings.yml"), str(lab.inventory_dir), return_state=True)
    assert state.is_completed()
    result = state.result()
    assert all(h.status == HostStatus.OK for h in result.hosts.values())
    assert len(result.hosts) == len(lab.hosts()) > 1  # one per host would show as several
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    lines = warning_lines(flow_run_id, expected=len(WARNINGS))
    counts = Counter(w for w in WARNINGS for line in lines if line.startswith(w))
    assert counts == dict.fromkeys(WARNINGS, 1), lines
    # Only the warning's own line: where it points (Origin, the playbook's lines) is not.
    assert not [line for line in lines if line.startswith("Origin:")], lines
