"""What an operator sees of a failed run in the real Prefect UI (issue #20, triage at a
glance): headless Chromium logs into a stack's UI and reads the rendered DOM.

A run of the `playbook` flow fails on the lab's db host (tests/fixtures/playbooks/mixed.yml:
task "Fail on database hosts", message "db hosts refuse this change"). Without opening
anything, the runs list must name that host; the run page's first screen (1280x800, above
the fold) must name it with its reason.

Set FLEETFLOW_SCREENSHOTS to a folder to keep the pages as PNG files (docs/screenshots is
made this way: `FLEETFLOW_SCREENSHOTS=docs/screenshots FLEETFLOW_SCREENSHOTS_PREFIX=after-`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetflow.lab import Lab

from .browser import PrefectUI, prefect_ui
from .stacks import RunningStack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = """
work_pool: {name: fleetflow, queues: [{name: lab}]}
workers: [{name: worker-ui, queues: [lab]}]
worker_poll_seconds: 1
"""
REASON = "db hosts refuse this change"


@dataclass
class FailedRun:
    run_id: str
    name: str
    host: str  # the one host that failed


@pytest.fixture(scope="module")
def stack(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # A stack, not the session's plain server: the UI must be the one operators get, behind
    # the stack's basic auth, so the browser goes through the login box.
    with running_stack(tmp_path_factory.mktemp("ui"), str(lab.inventory_dir), CONFIG) as running:
        yield running


@pytest.fixture(scope="module")
def failed_run(stack: RunningStack, lab: Lab) -> FailedRun:
    code, run_id, output = stack.trigger(
        "playbook/lab", watch=True, playbook="mixed", inventory=stack.inventory
    )
    assert code != 0 and run_id, output
    state = stack.wait_final(run_id)[run_id][0]
    assert state == "FAILED", (stack.state(run_id), stack.logs(run_id)[-15:])
    (host,) = [h.name for h in lab.hosts() if h.group == "db"]
    name = stack.query("SELECT name FROM flow_run WHERE id::text = %s", run_id)[0][0]
    return FailedRun(run_id, str(name), host)


@pytest.fixture(scope="module")
def ui(stack: RunningStack) -> Iterator[PrefectUI]:
    base_url = stack.env["PREFECT_API_URL"].removesuffix("/api")
    with prefect_ui(base_url, stack.env["FLEETFLOW_API_AUTH"]) as browser:
        yield browser


def keep(ui: PrefectUI, name: str) -> None:
    """Save the page for docs/screenshots when FLEETFLOW_SCREENSHOTS asks for it."""
    folder = os.environ.get("FLEETFLOW_SCREENSHOTS")
    if folder:
        prefix = os.environ.get("FLEETFLOW_SCREENSHOTS_PREFIX", "")
        ui.screenshot(Path(folder) / f"{prefix}{name}.png")


def test_the_ui_asks_for_credentials_and_takes_the_stacks(
    failed_run: FailedRun, ui: PrefectUI
) -> None:
    """The stack's UI shows its login box; the stack's `user:password` opens it."""
    text = ui.runs_list(failed_run.name)
    assert ui.logged_in
    assert failed_run.name in text and "Authentication failed" not in text


def test_runs_list_names_the_failed_host(failed_run: FailedRun, ui: PrefectUI) -> None:
    """Issue #20, 1: which hosts failed, without opening the run."""
    row = ui.run_row(failed_run.name)
    keep(ui, "runs-list")
    assert "Failed" in row, row  # the state badge
    # The run's name ends with the outcome (the list shows names in full). The tags per
    # failed host are on the row too, but a long name folds them into "+N", whose text is
    # not in the page: the run page shows them (below).
    assert f"1 of 3 hosts failed in mixed.yml: {failed_run.host} (failed at " in row, row


def test_runs_list_gives_the_failed_hosts_reason(failed_run: FailedRun, ui: PrefectUI) -> None:
    # Prefect 3.9.1's list row shows no state message, not even on hover: the reason
    # reaches it through the run's name (tags carry no reason).
    row = ui.run_row(failed_run.name)
    assert failed_run.host in row and REASON in row, row


def test_run_page_first_screen_names_the_host_and_its_reason(
    failed_run: FailedRun, ui: PrefectUI
) -> None:
    """Issue #20, 2: the failed host and why, without scrolling the run page."""
    first = ui.run_page(failed_run.run_id, failed_run.name)
    keep(ui, "run-page")
    assert f"failed:{failed_run.host}" in first, first
    # Prefect 3.9.1's run header shows no state message either (only the last log line,
    # below the timeline, has it): the reason is in the title, the run's name.
    assert f"{failed_run.host} (failed at 'Fail on database hosts': {REASON})" in first, first
