"""Plan -> approve -> apply on the real stack: a deployed `playbook` run with approval
pauses after its check+diff plan; the test answers the way the UI's Resume form does,
through the API (`POST /flow_runs/<id>/resume` with `run_input`)."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetflow.lab import Lab

from .faults import CONFIG, new_tag, report
from .stacks import BIN, RunningStack, running_stack
from .vault import vault_encrypt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHANGE = "change"  # tests/fixtures/playbooks/change.yml, by name
CONF = "/var/tmp/ff-change.conf"
VAULT_SECRET = "change-vault"
VAULT_PASSWORD = secrets.token_urlsafe(16)
DB_PASSWORD = secrets.token_urlsafe(18)


def _vaulted_inventory(lab: Lab, directory: Path) -> Path:
    inventory = directory / "inventory"
    shutil.copytree(lab.inventory_dir, inventory)
    vaulted = inventory / "group_vars" / "all" / "vault.yml"
    vaulted.parent.mkdir(parents=True, exist_ok=True)
    vaulted.write_text(f"vault_db_password: {DB_PASSWORD}\n")
    vault_encrypt(vaulted, VAULT_PASSWORD)
    return inventory


@pytest.fixture(scope="module")
def stack(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    directory = tmp_path_factory.mktemp("change")
    inventory = _vaulted_inventory(lab, directory)
    with pytest.MonkeyPatch.context() as patch:
        # The worker's environment: the vault password as the Secret block's CI stand-in.
        patch.setenv("FLEETFLOW_SECRET_CHANGE_VAULT", VAULT_PASSWORD)
        with running_stack(directory, str(inventory), CONFIG) as running:
            yield running


def _start(stack: RunningStack, release: str, **params: Any) -> str:
    return stack.create_run(
        "playbook/lab", playbook=CHANGE, inventory=stack.inventory, approval=True,
        extra_vars={"release": release}, vault_password_secret=VAULT_SECRET, **params,
    )  # fmt: skip


def _resume(stack: RunningStack, run_id: str, **answer: str) -> None:
    response = stack.api("POST", f"/flow_runs/{run_id}/resume", {"run_input": answer})
    assert response["status"] == "ACCEPT", response


def _artifact(stack: RunningStack, run_id: str, key: str) -> str:
    rows = stack.query(
        "SELECT data FROM artifact WHERE flow_run_id::text = %s AND key = %s "
        "ORDER BY created DESC LIMIT 1", run_id, key,
    )  # fmt: skip
    assert rows, f"no {key} artifact"
    data = rows[0][0]
    return str(json.loads(data) if isinstance(data, str) and data.startswith('"') else data)


def _history_approval(stack: RunningStack, run_id: str) -> Any:
    """The run's `approval` as `fleetflow history --json` lists it."""
    done = stack.cli(str(BIN / "fleetflow"), "history", "--deployment", "playbook/lab", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return next(r["approval"] for r in json.loads(done.stdout) if r["id"] == run_id)


def _releases(lab: Lab) -> dict[str, str]:
    return {
        h.name: lab.ssh(h.name, f"sed -n 's/^release: //p' {CONF} 2>/dev/null").stdout.strip()
        for h in lab.hosts()
    }


def _everything_stored(stack: RunningStack, run_id: str) -> str:
    rows = stack.query(
        "SELECT coalesce(string_agg(data::text, ' '), '') FROM artifact "
        "WHERE flow_run_id::text = %s",
        run_id,
    )
    return "\n".join([*stack.logs(run_id), str(rows[0][0])])


def _event(stack: RunningStack, name: str, needle: str, timeout: float = 30) -> str:
    """The payload of the event `name` whose payload holds `needle` (events land async)."""
    deadline = time.monotonic() + timeout
    while not (
        rows := stack.query(
            "SELECT payload::text FROM events WHERE event = %s AND payload::text LIKE %s",
            name,
            f"%{needle}%",
        )
    ):
        assert time.monotonic() < deadline, f"no {name} event with {needle!r}"
        time.sleep(0.5)
    return str(rows[0][0])


def test_change_is_planned_then_applied_only_on_an_allowed_approval(
    stack: RunningStack, lab: Lab
) -> None:
    release, before = new_tag(), _releases(lab)
    created = time.monotonic()
    run_id = _start(stack, release, approvers=["alice"], approval_timeout=600)
    stack.wait_state(run_id, "PAUSED")
    paused = time.monotonic()
    plan = _artifact(stack, run_id, "plan")
    for host in lab.hosts():
        assert f"## {host.name}" in plan and f"| {host.name} | changed | 1 |" in plan
    assert "### Write the settings file" in plan and f"+release: {release}" in plan
    assert "+db_password: ********" in plan and "+replica ********" in plan  # censored
    assert _releases(lab) == before  # planned, not applied

    _resume(stack, run_id, decision="approve", approver="mallory", comment="me too")
    stack.wait_log(run_id, "mallory may not decide this change")
    stack.wait_state(run_id, "PAUSED")  # asks again
    assert _releases(lab) == before

    approved = time.monotonic()
    _resume(stack, run_id, decision="approve", approver="alice", comment="CHG-1234")
    stack.wait_state(run_id, "COMPLETED")
    report(
        "change approved",
        plan_paused=paused - created,
        approval_to_applied=time.monotonic() - approved,
    )
    assert set(_releases(lab).values()) == {release}
    for host in lab.hosts():  # the vaulted password reached the hosts, nowhere else
        assert DB_PASSWORD in lab.ssh(host.name, f"cat {CONF}").stdout
    decision = _artifact(stack, run_id, "approval")
    assert "**approved**" in decision and "alice" in decision and "CHG-1234" in decision
    assert _history_approval(stack, run_id) == {"decision": "approved", "approver": "alice"}
    stored = _everything_stored(stack, run_id)
    assert DB_PASSWORD not in stored and VAULT_PASSWORD not in stored
    assert "alice" in _event(stack, "fleetflow.change.approved", "CHG-1234")

    # The same change again: nothing would change, so no approval is asked.
    again = _start(stack, release, approvers=["alice"])
    stack.wait_state(again, "COMPLETED")
    stack.wait_log(again, "no approval needed", timeout=30)
    assert stack.query("SELECT count(*) FROM flow_run_state WHERE flow_run_id::text = %s "
                       "AND type = 'PAUSED'", again) == [(0,)]  # fmt: skip


def test_rejected_change_ends_cancelled_with_the_reason_and_changes_nothing(
    stack: RunningStack, lab: Lab
) -> None:
    before = _releases(lab)
    run_id = _start(stack, new_tag())
    stack.wait_state(run_id, "PAUSED")
    _resume(stack, run_id, decision="reject", approver="bob", comment="not during the freeze")
    state = stack.wait_state(run_id, "CANCELLED")
    assert "rejected by bob: not during the freeze" in state[2]
    assert "**rejected**" in _artifact(stack, run_id, "approval")
    assert _history_approval(stack, run_id) == {"decision": "rejected", "approver": "bob"}
    assert _releases(lab) == before


def test_change_without_a_decision_expires_cancelled(stack: RunningStack, lab: Lab) -> None:
    before = _releases(lab)
    run_id = _start(stack, new_tag(), approval_timeout=5)
    state = stack.wait_state(run_id, "CANCELLED")
    assert "no decision within 5 s" in state[2], state
    assert "**expired**" in _artifact(stack, run_id, "approval")
    assert _history_approval(stack, run_id) == {"decision": "expired", "approver": None}
    assert _releases(lab) == before


def test_bad_approval_parameters_are_refused_before_any_run(stack: RunningStack) -> None:
    code, run_id, output = stack.trigger(
        "playbook/lab", playbook=CHANGE, approval=True, approval_timeout=1
    )
    assert code != 0 and not run_id and "approval_timeout" in output
