"""Blackout windows on the real clock: run_playbook against the lab, through a Prefect flow."""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import flow

from fleetflow import InBlackout, PlaybookResult, RunStatus, run_playbook
from fleetflow.lab import Lab
from tests.conftest import REPO

from .runs import log_lines

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
WRITE_FILE = str(REPO / "tests/fixtures/playbooks/write_file.yml")


@flow
def one_run(playbook: str, inventory: str, kwargs: dict[str, Any]) -> PlaybookResult:
    return run_playbook(playbook, inventory=inventory, **kwargs)


def with_window(
    lab: Lab, tmp_path: Path, groups: list[str], seconds: float, **top: Any
) -> tuple[str, datetime]:
    """A copy of the lab's inventory with a one-off window open from a minute ago until
    `seconds` from now; and when it closes."""
    copied = tmp_path / "inventory"
    shutil.copytree(lab.inventory_dir, copied)
    now = datetime.now(UTC)
    window = {
        "name": "test freeze",
        "groups": groups,
        "from": (now - timedelta(minutes=1)).isoformat(),
        "until": (now + timedelta(seconds=seconds)).isoformat(),
    }
    (copied / "blackouts.yml").write_text(yaml.safe_dump({**top, "windows": [window]}))
    return str(copied), now + timedelta(seconds=seconds)


def marker() -> tuple[dict[str, Any], str]:
    """extra_vars for write_file.yml, and the file it writes."""
    path = f"/root/ff-blackout-{uuid.uuid4().hex[:8]}"
    return {"path": path, "content": "changed"}, path


def written(lab: Lab, path: str) -> list[str]:
    return [h.name for h in lab.hosts() if lab.ssh(h.name, f"test -e {path}").returncode == 0]


def test_fail_policy_in_an_open_window_runs_nothing(lab: Lab, tmp_path: Path) -> None:
    inventory, _ = with_window(lab, tmp_path, ["all"], 3600, policy="wait")
    extra_vars, path = marker()
    started = time.monotonic()
    with pytest.raises(InBlackout) as caught:
        one_run(WRITE_FILE, inventory, {"extra_vars": extra_vars, "blackout_policy": "fail"})
    message = str(caught.value)
    assert "blackout window 'test freeze'" in message
    assert all(h.name in message for h in lab.hosts())
    assert "(group all)" in message and "nothing was run" in message and "check mode" in message
    # It did not wait for the window (an hour): a busy machine may still take a while.
    assert time.monotonic() - started < 600
    assert written(lab, path) == []


def test_wait_policy_starts_when_the_window_closes(lab: Lab, tmp_path: Path) -> None:
    web = next(h.name for h in lab.hosts() if h.group == "web")
    inventory, closes = with_window(lab, tmp_path, ["web"], 10)
    extra_vars, path = marker()
    state = one_run(WRITE_FILE, inventory, {"extra_vars": extra_vars, "limit": web},
                    return_state=True)  # fmt: skip
    result = state.result()
    assert result.status == RunStatus.SUCCESSFUL
    assert result.started_at >= closes
    assert written(lab, path) == [web]
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    lines = log_lines(flow_run_id, "blackout over after waiting")
    waiting = [line for line in lines if "waiting" in line and "test freeze" in line]
    assert len(waiting) == 1, lines
    assert f"is open for {web} (group web) until" in waiting[0]
    assert "before starting (no host lock is held meanwhile)" in waiting[0]
    assert any("blackout over after waiting" in line for line in lines), lines


def test_window_over_other_groups_does_not_hold_the_run(lab: Lab, tmp_path: Path) -> None:
    web = next(h.name for h in lab.hosts() if h.group == "web")
    inventory, _ = with_window(lab, tmp_path, ["db", "batch"], 3600, policy="fail")
    extra_vars, path = marker()
    result = one_run(WRITE_FILE, inventory, {"extra_vars": extra_vars, "limit": web})
    assert result.status == RunStatus.SUCCESSFUL
    assert written(lab, path) == [web]


def test_check_mode_runs_inside_an_open_window(lab: Lab, tmp_path: Path) -> None:
    inventory, _ = with_window(lab, tmp_path, ["all"], 3600, policy="fail")
    extra_vars, path = marker()
    result = one_run(WRITE_FILE, inventory, {"extra_vars": extra_vars, "check": True})
    assert result.status == RunStatus.SUCCESSFUL and result.check
    assert sorted(result.hosts) == sorted(h.name for h in lab.hosts())
    assert written(lab, path) == []  # check mode changed nothing
