"""What an operator sees of a failed run in the real Prefect UI (issue #20, triage at a
glance): headless Chromium logs into a stack's UI and reads the rendered DOM.

A run of the `playbook` flow fails on the lab's db host (tests/fixtures/playbooks/mixed.yml:
task "Fail on database hosts", message "db hosts refuse this change"). Without opening
anything, the runs list must name that host; the run page's first screen (1280x800, above
the fold) must name it with its reason.

Then who may do what in the UI behind the access gateway (issue #22): users added with
`fleetflow users add` log in with `name:password`; a viewer sees runs and cannot start
one, an operator's run carries `by:<name>`, an approval is recorded under the approver's
login whatever the form says, and an operator cannot approve.

Set FLEETFLOW_SCREENSHOTS to a folder to keep the pages as PNG files (docs/screenshots is
made this way: `FLEETFLOW_SCREENSHOTS=docs/screenshots FLEETFLOW_SCREENSHOTS_PREFIX=after-`).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from fleetflow.lab import Lab

from .browser import PrefectUI, chromium, prefect_ui
from .stacks import BIN, RunningStack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = """
work_pool: {name: fleetflow, queues: [{name: lab}]}
workers: [{name: worker-ui, queues: [lab]}]
worker_poll_seconds: 1
"""
REASON = "db hosts refuse this change"
ROLES = ("viewer", "operator", "approver")  # each user is named after their role
QUICK_RUN = "run_script/disk-usage"  # every parameter given by the deployment


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
def browser() -> Iterator[Browser]:
    """One Chromium for the module: each login gets a context of its own in it."""
    with chromium() as running:
        yield running


@pytest.fixture(scope="module")
def ui(stack: RunningStack, browser: Browser) -> Iterator[PrefectUI]:
    base_url = stack.env["PREFECT_API_URL"].removesuffix("/api")
    with prefect_ui(base_url, stack.env["FLEETFLOW_API_AUTH"], browser) as page:
        yield page


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


# -- who may do what (issue #22) -------------------------------------------------------------


@dataclass
class PausedRun:
    run_id: str
    name: str


@pytest.fixture(scope="module")
def users(stack: RunningStack) -> dict[str, str]:
    """`name:password` of a viewer, an operator and an approver, added through the CLI with
    the password on stdin (never argv)."""
    logins = {}
    for role in ROLES:
        password = secrets.token_urlsafe(16)
        done = subprocess.run(
            [str(BIN / "fleetflow"), "users", "add", role, "--role", role],
            input=password + "\n", cwd=stack.project, env=stack.env, capture_output=True,
            text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert password not in done.stdout + done.stderr
        logins[role] = f"{role}:{password}"
    return logins


@pytest.fixture(scope="module")
def paused_change(stack: RunningStack) -> PausedRun:
    """A `playbook/lab` run with approval (write_file: the `change` fixture needs a vaulted
    inventory, this stack's is the plain lab) that only `approver` may decide. Created, not
    waited for: its plan runs while the first tests drive the browser."""
    tag = uuid.uuid4().hex[:8]
    run_id = stack.create_run(
        "playbook/lab", playbook="write_file", inventory=stack.inventory, approval=True,
        approval_timeout=900, approvers=["approver"],
        extra_vars={"path": f"/var/tmp/ff-ui-approval-{tag}.txt", "content": tag},
    )  # fmt: skip
    name = stack.query("SELECT name FROM flow_run WHERE id::text = %s", run_id)[0][0]
    return PausedRun(run_id, str(name))


def _runs_by(stack: RunningStack, deployment_id: str, login: str) -> list[str]:
    rows = stack.query(
        "SELECT name FROM flow_run WHERE deployment_id::text = %s AND tags::jsonb ? %s",
        deployment_id, f"by:{login}",
    )  # fmt: skip
    return [str(row[0]) for row in rows]


def _audit(stack: RunningStack, login: str) -> str:
    done = stack.cli(str(BIN / "fleetflow"), "audit", "--user", login)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _base_url(stack: RunningStack) -> str:
    return stack.env["PREFECT_API_URL"].removesuffix("/api")


def test_a_viewer_sees_the_runs_and_cannot_start_one(
    stack: RunningStack, browser: Browser, users: dict[str, str], failed_run: FailedRun,
    paused_change: PausedRun,  # created here so that its plan runs meanwhile
) -> None:  # fmt: skip
    deployment = stack.api("GET", f"/deployments/name/{QUICK_RUN}")["id"]
    with prefect_ui(_base_url(stack), users["viewer"], browser) as viewer:
        assert failed_run.name in viewer.runs_list(failed_run.name)
        assert viewer.logged_in
        refused = viewer.quick_run(deployment, "needs the operator role")
    # The gateway's 403 names who and what; the UI shows it as it is.
    assert "viewer (viewer) may not POST" in refused and "create_flow_run" in refused, refused
    assert _runs_by(stack, deployment, "viewer") == []


def test_an_operators_run_from_the_ui_carries_their_name(
    stack: RunningStack, browser: Browser, users: dict[str, str], failed_run: FailedRun
) -> None:
    deployment = stack.api("GET", f"/deployments/name/{QUICK_RUN}")["id"]
    with prefect_ui(_base_url(stack), users["operator"], browser) as operator:
        operator.runs_list(failed_run.name)  # logs in
        scheduled = operator.quick_run(deployment, "scheduled")
        (name,) = _runs_by(stack, deployment, "operator")
        row = operator.run_row(name)
    assert name in scheduled, scheduled
    assert "by:operator" in row, row


def test_an_operator_cannot_approve(
    stack: RunningStack, browser: Browser, users: dict[str, str], paused_change: PausedRun
) -> None:
    stack.wait_state(paused_change.run_id, "PAUSED")
    with prefect_ui(_base_url(stack), users["operator"], browser) as operator:
        operator.runs_list(paused_change.name)  # logs in
        refused = operator.resume(
            paused_change.run_id, decision="approve", approver="approver",
            comment="an operator tries", expect="needs the approver role",
        )  # fmt: skip
    assert "operator (operator) may not POST" in refused, refused
    assert stack.state(paused_change.run_id)[0] == "PAUSED"
    assert not any("approved by" in line for line in stack.logs(paused_change.run_id))
    refusals = [line for line in _audit(stack, "operator").splitlines() if "/resume" in line]
    assert refusals and all("403" in line and "refused" in line for line in refusals), refusals


def test_an_approval_is_recorded_under_the_approvers_login(
    stack: RunningStack, browser: Browser, users: dict[str, str], paused_change: PausedRun
) -> None:
    """The form names mallory, who is not among the run's approvers (the flow would log
    "mallory may not decide this change" and keep waiting): the gateway writes the login
    in, so the change goes ahead, approved by approver."""
    stack.wait_state(paused_change.run_id, "PAUSED")
    with prefect_ui(_base_url(stack), users["approver"], browser) as approver:
        approver.runs_list(paused_change.name)  # logs in
        approver.resume(
            paused_change.run_id, decision="approve", approver="mallory",
            comment="CHG-22 from the UI", expect="resumed",
        )  # fmt: skip
    # The decision is recorded before the change is applied: no need to wait for the apply.
    logs = _decision_logs(stack, paused_change.run_id)
    assert any("approved by approver" in line for line in logs), logs[-10:]
    assert not any("mallory" in line for line in logs), logs[-10:]
    decision = _approval_artifact(stack, paused_change.run_id)
    assert "approved by approver" in decision and "| approver | approver |" in decision
    assert "mallory" not in decision and "CHG-22 from the UI" in decision
    audit = _audit(stack, "approver")
    assert any(f"/api/flow_runs/{paused_change.run_id}/resume" in line and " ok" in line
               for line in audit.splitlines()), audit  # fmt: skip


def _decision_logs(stack: RunningStack, run_id: str, timeout: float = 120) -> list[str]:
    """The run's log once it took or turned down an answer ("approved by ...", "rejected
    by ...", "... may not decide this change")."""
    deadline = time.monotonic() + timeout
    decided = ("approved by", "rejected by", "may not decide")
    while True:
        logs = stack.logs(run_id)
        if any(word in line for line in logs for word in decided):
            return logs
        assert time.monotonic() < deadline, f"no decision logged in {timeout} s: {logs[-10:]}"
        time.sleep(0.5)


def _approval_artifact(stack: RunningStack, run_id: str) -> str:
    rows = stack.query(
        "SELECT data FROM artifact WHERE flow_run_id::text = %s AND key = 'approval' "
        "ORDER BY created DESC LIMIT 1", run_id,
    )  # fmt: skip
    assert rows, "no approval artifact"
    return str(rows[0][0])
