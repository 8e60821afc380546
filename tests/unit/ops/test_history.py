"""Audit records: secret-looking parameters masked, triggers classified, who triggered and
who approved."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from prefect.client.schemas.objects import Artifact, Flow, FlowRun

from fleetflow.engine.secrets import MASK
from fleetflow.flowkit import change
from fleetflow.ops.history import (
    ApprovalRecord,
    mask_parameters,
    read_approval,
    read_history,
    trigger_of,
    triggered_by,
)
from fleetflow.results import HostResult, HostStatus, PlaybookResult, RunStatus


def test_secret_looking_parameters_are_masked_at_any_depth_but_block_names_stay() -> None:
    params = {
        "inventory": "lab",
        "extra_vars": {"db_password": "hunter2", "nested": [{"api_token": "t0k"}], "port": 5},
        "ssh_key_secret": "lab-ssh-key",
    }
    masked = mask_parameters(params)
    assert masked["extra_vars"]["db_password"] == MASK
    assert masked["extra_vars"]["nested"][0]["api_token"] == MASK
    assert masked["extra_vars"]["port"] == 5 and masked["inventory"] == "lab"
    assert masked["ssh_key_secret"] == "lab-ssh-key"


def _run(**fields: Any) -> FlowRun:
    return FlowRun(id=uuid.uuid4(), name="r", flow_id=uuid.uuid4(), **fields)


def test_triggers_are_told_apart() -> None:
    automation = str(uuid.uuid4())
    assert trigger_of(_run(auto_scheduled=True), {}) == "schedule"
    by_automation = _run(idempotency_key=f"{automation}:0:event")
    assert trigger_of(by_automation, {automation: "fleetflow/x"}) == "automation fleetflow/x"
    assert trigger_of(_run(), {automation: "fleetflow/x"}) == "api"


def test_the_gateways_by_tag_names_who_triggered_over_the_api_guess() -> None:
    run = _run(tags=["team:web", "by:alice", "failed:web-01"])
    assert trigger_of(run, {}) == "api"
    assert triggered_by(run, {}) == "user alice"


def test_without_a_by_tag_who_triggered_is_what_trigger_of_says() -> None:
    automation = str(uuid.uuid4())
    automations = {automation: "fleetflow/x"}
    assert triggered_by(_run(tags=["team:web"]), automations) == "api"
    assert triggered_by(_run(auto_scheduled=True), automations) == "schedule"
    # A deployment's own tags reach its scheduled and automated runs: they stay the server's.
    scheduled = _run(auto_scheduled=True, tags=["by:bob"])
    assert triggered_by(scheduled, automations) == "schedule"
    automated = _run(idempotency_key=f"{automation}:0:event", tags=["by:bob"])
    assert triggered_by(automated, automations) == "automation fleetflow/x"


def _plan() -> PlaybookResult:
    now = datetime.now(UTC)
    return PlaybookResult(
        playbook="/repo/playbooks/change.yml", inventory="/repo/inventory/lab",
        status=RunStatus.SUCCESSFUL, rc=0, started_at=now, finished_at=now, check=True,
        hosts={"web-01": HostResult(host="web-01", status=HostStatus.CHANGED, changed=1)},
    )  # fmt: skip


def _recorded(
    monkeypatch: pytest.MonkeyPatch, outcome: str, approval: change.Approval | None
) -> str:
    """The approval artifact's markdown exactly as change.py writes it."""
    written: dict[str, str] = {}

    def artifact(markdown: str, key: str, description: str) -> None:
        written[key] = markdown

    monkeypatch.setattr(change, "create_markdown_artifact", artifact)
    monkeypatch.setattr(change, "emit_event", lambda **_: None)
    change._record(_plan(), outcome, f"change {outcome}", approval)
    return written["approval"]


@pytest.mark.parametrize(
    ("outcome", "decision", "approver"),
    [("approved", "approve", "alice"), ("rejected", "reject", "bob | ops \\ team")],
)
def test_the_approval_artifact_change_py_writes_reads_back(
    monkeypatch: pytest.MonkeyPatch, outcome: str, decision: str, approver: str
) -> None:
    answer = change.Approval(decision=change.Decision(decision), approver=approver, comment="x|y")
    markdown = _recorded(monkeypatch, outcome, answer)
    assert read_approval(markdown) == ApprovalRecord(outcome, approver)


def test_an_expired_approval_has_no_approver(monkeypatch: pytest.MonkeyPatch) -> None:
    approval = read_approval(_recorded(monkeypatch, "expired", None))
    assert approval == ApprovalRecord("expired", None) and str(approval) == "expired"
    assert read_approval("# Plan\n\nno table here\n") is None


class _Client:
    """The calls read_history makes, over fixed runs and artifacts; counts artifact reads."""

    def __init__(self, runs: list[FlowRun], artifacts: list[Artifact]) -> None:
        self.runs, self.artifacts, self.approval_reads = runs, artifacts, 0

    def read_flow_runs(self, **_: Any) -> list[FlowRun]:
        return self.runs

    def read_automations(self) -> list[Any]:
        return []

    def read_flow(self, flow_id: uuid.UUID) -> Flow:
        return Flow(id=flow_id, name="playbook", labels={})

    def read_artifacts(self, artifact_filter: Any, **_: Any) -> list[Artifact]:
        ids = {str(i) for i in artifact_filter.flow_run_id.any_}
        keys = artifact_filter.key.any_ if artifact_filter.key else None
        self.approval_reads += keys is not None
        return [
            a for a in self.artifacts
            if str(a.flow_run_id) in ids and (keys is None or a.key in keys)
        ]  # fmt: skip


def test_history_reads_every_listed_runs_approval_in_one_query(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = [_run(tags=["by:alice"]), _run(), _run(tags=["by:carol"])]
    approved = _recorded(
        monkeypatch, "approved", change.Approval(decision="approve", approver="bob")
    )
    plan = Artifact(key="plan", type="markdown", data="| outcome | **nonsense** |")
    artifacts = [
        Artifact(key="approval", type="markdown", data=approved, flow_run_id=runs[0].id),
        plan.model_copy(update={"flow_run_id": runs[1].id}),
    ]
    client = _Client(runs, artifacts)
    records = read_history(client, limit=3)  # type: ignore[arg-type]
    assert client.approval_reads == 1
    assert [(r.triggered_by, r.approval) for r in records] == [
        ("user alice", ApprovalRecord("approved", "bob")),
        ("api", None),
        ("user carol", None),
    ]
    assert records[0].to_json()["approval"] == {"decision": "approved", "approver": "bob"}
    assert records[1].to_json()["approval"] is None
