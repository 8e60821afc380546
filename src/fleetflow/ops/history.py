"""`fleetflow history`: who or what started each run, with what, on which hosts, and how
each host ended - read back from the Prefect API (the audit trail lives in its database).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventOrder,
    EventRelatedFilter,
)

from fleetflow.access._checks import BY_TAG
from fleetflow.engine.publish import (
    EVENT_PAGE,
    HOST_RESOURCE,
    PLAYBOOK_EVENT,
    HostOutcome,
    PlaybookFinished,
    is_hosts_table,
    iter_events,
    table_hosts,
    table_leftovers,
)
from fleetflow.engine.secrets import mask_parameters

__all__ = [
    "APPROVAL_KEY",
    "BY_TAG",
    "ApprovalRecord",
    "HostRunRecord",
    "RunRecord",
    "mask_parameters",
    "read_approval",
    "read_history",
    "read_host_history",
    "trigger_of",
    "triggered_by",
]

# The artifact flowkit/change.py records a change decision in (a key/value markdown table).
APPROVAL_KEY = "approval"
# Runs per artifacts query: the server caps a page at PREFECT_SERVER_API_DEFAULT_LIMIT (200).
_PAGE = 200
# A cell boundary in a markdown table row: a `|` that markdown_cell did not escape.
_CELL = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True)
class ApprovalRecord:
    """A change decision: approved, rejected or expired; who decided (None: nobody did)."""

    decision: str
    approver: str | None

    def __str__(self) -> str:
        return f"{self.decision} by {self.approver}" if self.approver else self.decision


@dataclass
class RunRecord:
    id: str
    name: str
    flow: str
    deployment: str
    state: str
    trigger: str  # how the server saw it start (trigger_of), kept for older readers
    created: str
    started: str | None
    ended: str | None
    parameters: dict[str, Any]
    hosts: dict[str, str] = field(default_factory=dict)
    triggered_by: str = ""
    approval: ApprovalRecord | None = None
    # Hosts where the run found leftovers of earlier runs (stopped, or the host failed).
    leftovers: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def trigger_of(run: FlowRun, automations: dict[str, str]) -> str:
    """schedule, automation <name>, user <name> (when the server knows users), else api."""
    if run.auto_scheduled:
        return "schedule"
    key = run.idempotency_key or ""
    for automation_id, name in automations.items():
        if automation_id in key:
            return f"automation {name}"
    if run.created_by and run.created_by.display_value:
        return f"{(run.created_by.type or 'user').lower()} {run.created_by.display_value}"
    return "api"  # `prefect deployment run`, the UI or a script, with the API credentials


def triggered_by(run: FlowRun, automations: dict[str, str]) -> str:
    """`user <login>` from the gateway's `by:` tag, else trigger_of's answer.

    A schedule or an automation stays what it is even with a `by:` tag: such a tag can
    only come from the deployment's own tags, which Prefect copies onto every run.
    """
    how = trigger_of(run, automations)
    users = sorted({t.removeprefix(BY_TAG) for t in run.tags if t.startswith(BY_TAG)})
    if not users or how == "schedule" or how.startswith("automation "):
        return how
    return "user " + ", ".join(users)


def read_approval(markdown: str) -> ApprovalRecord | None:
    """The decision in an `approval` artifact's key/value table; None if it holds none."""
    rows: dict[str, str] = {}
    for line in markdown.splitlines():
        cells = [c.strip().replace("\\|", "|") for c in _CELL.split(line.strip())[1:-1]]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    decision = rows.get("outcome", "").strip("*")
    if not decision:
        return None
    approver = rows.get("approver", "-")
    return ApprovalRecord(decision, None if approver in ("", "-") else approver)


def _approvals(client: SyncPrefectClient, run_ids: list[str]) -> dict[str, ApprovalRecord]:
    """Each run's latest decision: one artifacts query per _PAGE runs, not one per run."""
    found: dict[str, ApprovalRecord] = {}
    for start in range(0, len(run_ids), _PAGE):
        ids = run_ids[start : start + _PAGE]
        wanted = ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=ids),
            key=ArtifactFilterKey(any_=[APPROVAL_KEY]),
        )
        offset = 0
        while True:
            page = client.read_artifacts(
                artifact_filter=wanted, sort=ArtifactSort.CREATED_DESC, limit=_PAGE, offset=offset
            )
            for artifact in page:  # newest first: a retried run's last decision wins
                run = str(artifact.flow_run_id)
                data = artifact.data if isinstance(artifact.data, str) else ""
                if run not in found and (approval := read_approval(data)):
                    found[run] = approval
            if len(page) < _PAGE:
                break
            offset += _PAGE
    return found


def _hosts(client: SyncPrefectClient, run: FlowRun) -> tuple[dict[str, str], dict[str, int]]:
    """Each host's status, and the leftovers of earlier runs found on hosts."""
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
    )
    hosts: dict[str, str] = {}
    leftovers: dict[str, int] = {}
    for artifact in artifacts:
        if artifact.type == "table" and is_hosts_table(artifact.key):
            hosts.update(table_hosts(artifact.data))
            leftovers.update(table_leftovers(artifact.data))
    return hosts, leftovers


def _stamp(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def read_history(
    client: SyncPrefectClient,
    *,
    limit: int = 20,
    deployment: str | None = None,
    host: str | None = None,
) -> list[RunRecord]:
    """The newest runs first; `deployment` is 'flow/name'; `host` keeps runs that touched it."""
    deployment_filter = None
    if deployment:
        found = client.read_deployment_by_name(deployment)
        deployment_filter = DeploymentFilter(id=DeploymentFilterId(any_=[found.id]))
    # What happened, not what is planned: a schedule's future runs are left out (a Late run,
    # whose time has passed, stays in).
    started = FlowRunFilterExpectedStartTime(before_=datetime.now(UTC))
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(expected_start_time=started),
        deployment_filter=deployment_filter,
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=limit if host is None else max(limit * 10, 200),
    )
    automations = {str(a.id): a.name for a in client.read_automations()}
    flows: dict[Any, str] = {}
    deployments: dict[Any, str] = {}
    records = []
    for run in runs:
        if run.flow_id not in flows:
            flows[run.flow_id] = client.read_flow(run.flow_id).name
        if run.deployment_id and run.deployment_id not in deployments:
            deployments[run.deployment_id] = client.read_deployment(run.deployment_id).name
        hosts, leftovers = _hosts(client, run)
        if host is not None and host not in hosts:
            continue
        records.append(
            RunRecord(
                id=str(run.id), name=run.name, flow=flows[run.flow_id],
                deployment=deployments.get(run.deployment_id, ""),
                state=(run.state.name or run.state.type.value) if run.state else "?",
                trigger=trigger_of(run, automations), created=_stamp(run.created) or "",
                started=_stamp(run.start_time), ended=_stamp(run.end_time),
                parameters=mask_parameters(run.parameters), hosts=hosts,
                triggered_by=triggered_by(run, automations), leftovers=leftovers,
            )
        )  # fmt: skip
        if len(records) >= limit:
            break
    approvals = _approvals(client, [r.id for r in records])
    for record in records:
        record.approval = approvals.get(record.id)
    return records


@dataclass
class HostRunRecord:
    """One playbook run as one host saw it."""

    time: str
    playbook: str
    inventory: str
    outcome: str
    changed: int
    attempts: int
    flow_run: str
    commit: str = ""
    dirty: bool = False
    check: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def content(self) -> str:
        """The commit the run used, short; `+dirty` when the files were not that commit."""
        return (self.commit[:12] or "unknown") + ("+dirty" if self.dirty else "")


def read_host_history(
    client: SyncPrefectClient, host: str, *, limit: int = 20, days: int = 365
) -> list[HostRunRecord]:
    """The host's last `limit` playbook runs, newest first (as far as the server keeps
    events: PREFECT_SERVER_EVENTS_RETENTION_PERIOD)."""
    wanted = max(limit, 1)
    event_filter = EventFilter(
        occurred=EventOccurredFilter(since=datetime.now(UTC) - timedelta(days=days)),
        event=EventNameFilter(name=[PLAYBOOK_EVENT]),
        related=EventRelatedFilter(id=[f"{HOST_RESOURCE}{host}"]),
        order=EventOrder.DESC,
    )
    records = []
    for event in islice(iter_events(client, event_filter, min(wanted, EVENT_PAGE)), wanted):
        payload = PlaybookFinished.read(event.payload)
        outcome = payload.hosts.get(host, HostOutcome())
        flow_run = next((r.name or r.id for r in event.related if r.role == "flow-run"), "")
        records.append(
            HostRunRecord(
                time=event.occurred.isoformat(timespec="seconds"),
                playbook=payload.playbook, inventory=payload.inventory,
                outcome=outcome.status, changed=outcome.changed,
                attempts=outcome.attempts, flow_run=flow_run,
                commit=payload.commit, dirty=payload.dirty, check=payload.check,
            )
        )  # fmt: skip
    return records
