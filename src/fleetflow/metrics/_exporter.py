"""Reads the Prefect API and keeps the metric families up to date.

Counters count what finishes while the exporter runs (or since `since`): finished flow
runs, and `fleetflow.playbook.finished` / automation-action events. Each poll re-reads an
overlap window and skips what it already counted, because the server stores events and
end times a little after they happen. Gauges are read fresh each poll.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterTags,
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterState,
    FlowRunFilterStateName,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder
from prefect.events.schemas.events import ReceivedEvent
from prometheus_client import Gauge

from fleetflow.engine.publish import EVENT_PAGE, PLAYBOOK_EVENT, PlaybookFinished, iter_events
from fleetflow.metrics._families import ACTIVE_STATES, CRITICAL_TAG, Families
from fleetflow.metrics._labels import OTHER, RepositoryNames
from fleetflow.results import HostStatus, RunStatus

logger = logging.getLogger(__name__)

_ALERT_EVENTS = ("prefect.automation.action.executed", "prefect.automation.action.failed")
_FINAL = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
_PAGE = 200
# The final states deployments/monitoring/rules/alerts.yml counts as a failed run.
_FAILED_STATES = ("Failed", "Crashed", "TimedOut")
_RUN_STATUSES = frozenset(RunStatus)
_HOST_STATUSES = frozenset(HostStatus)
_LEFTOVER_ACTIONS = frozenset({"fence", "guard", "running"})


class Exporter:
    """Call `poll()` on a schedule; the families' registry is what to serve."""

    def __init__(
        self,
        families: Families,
        since: datetime | None = None,
        overlap: timedelta = timedelta(minutes=2),
        worker_window: timedelta = timedelta(hours=1),
        names: RepositoryNames | None = None,
    ) -> None:
        self.families = families
        # Payloads are caller-written: labels take only the repository's names.
        self.names = names or RepositoryNames()
        self.overlap = overlap
        self.worker_window = worker_window
        self._cursor = since or datetime.now(UTC)
        self._seen: dict[str, datetime] = {}  # counted event ids / flow-run ends, by time
        self._names: dict[Any, str] = {}

    def poll(self, client: SyncPrefectClient) -> None:
        now = datetime.now(UTC)
        since = self._cursor - self.overlap
        self._count_events(client, since)
        self._count_flow_runs(client, since)
        self._read_active(client)
        self._read_workers(client, now)
        self._read_critical(client)
        self._cursor = now
        self._seen = {k: t for k, t in self._seen.items() if t >= now - 2 * self.overlap}
        self.families.last_poll.set(now.timestamp())

    def _first_time(self, key: str, when: datetime) -> bool:
        if key in self._seen:
            return False
        self._seen[key] = when
        return True

    def _count_events(self, client: SyncPrefectClient, since: datetime) -> None:
        event_filter = EventFilter(
            occurred=EventOccurredFilter(since=since, until=datetime.now(UTC) + self.overlap),
            event=EventNameFilter(name=[PLAYBOOK_EVENT, *_ALERT_EVENTS]),
            order=EventOrder.ASC,
        )
        for event in iter_events(client, event_filter, EVENT_PAGE):
            if self._first_time(f"event:{event.id}", event.occurred):
                self._count_event(event)

    def _count_event(self, event: ReceivedEvent) -> None:
        f = self.families
        if event.event != PLAYBOOK_EVENT:
            automation = event.resource.name or event.resource.id
            f.alerts.labels(automation, event.event.rsplit(".", 1)[-1]).inc()
            return
        p = PlaybookFinished.model_validate(event.payload)
        playbook = self.names.playbook(p.playbook)
        inventory = self.names.inventory(p.inventory)
        if p.part == 1:  # a big run's later parts carry only more hosts
            status = _known(p.status, _RUN_STATUSES)
            f.playbook_runs.labels(playbook, inventory, status).inc()
            f.playbook_duration.labels(playbook, inventory).observe(p.duration_seconds)
            f.playbook_retries.labels(playbook).inc(max(p.attempts - 1, 0))
            f.ansible_events.labels(playbook).inc(p.ansible_events)
            f.log_lines.labels(playbook).inc(p.log_lines)
            if p.dirty:
                f.dirty_runs.inc()
        for outcome in p.hosts.values():
            f.host_retries.labels(playbook).inc(max(outcome.attempts - 1, 0))
            for action, count in outcome.leftovers.items():
                label = _known(action, _LEFTOVER_ACTIONS)
                f.host_leftovers.labels(playbook, label).inc(max(count, 0))
            for group in outcome.groups or ["ungrouped"]:
                outcome_label = _known(outcome.status, _HOST_STATUSES)
                f.host_outcomes.labels(playbook, group, outcome_label).inc()

    def _count_flow_runs(self, client: SyncPrefectClient, since: datetime) -> None:
        run_filter = FlowRunFilter(
            end_time=FlowRunFilterEndTime(after_=since),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_FINAL)),
        )
        offset = 0
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=run_filter, sort=FlowRunSort.END_TIME_DESC,
                limit=_PAGE, offset=offset,
            )  # fmt: skip
            for run in runs:
                if run.end_time and self._first_time(f"run:{run.id}:{run.end_time}", run.end_time):
                    self._count_flow_run(client, run)
            if len(runs) < _PAGE:
                break
            offset += _PAGE

    def _count_flow_run(self, client: SyncPrefectClient, run: FlowRun) -> None:
        flow = self._name(run.flow_id, lambda: client.read_flow(run.flow_id).name)
        deployment = ""
        if run.deployment_id is not None:
            deployment_id = run.deployment_id
            deployment = self._name(
                deployment_id, lambda: client.read_deployment(deployment_id).name
            )
        state = (run.state.name if run.state else None) or "Unknown"
        f = self.families
        f.flow_runs.labels(flow, deployment, state).inc()
        f.flow_run_duration.labels(flow, deployment).observe(run.total_run_time.total_seconds())
        f.flow_run_retries.labels(flow, deployment).inc(max(run.run_count - 1, 0))

    def _name(self, key: Any, read: Any) -> str:
        if key not in self._names:
            self._names[key] = str(read())
        return self._names[key]

    def _read_active(self, client: SyncPrefectClient) -> None:
        for state in ACTIVE_STATES:
            count = client.count_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(name=FlowRunFilterStateName(any_=[state]))
                )
            )
            self.families.flow_runs_active.labels(state).set(count)

    def _read_workers(self, client: SyncPrefectClient, now: datetime) -> None:
        beats: dict[tuple[str, ...], float] = {}
        online: dict[tuple[str, ...], float] = {}
        for pool in client.read_work_pools():
            for worker in client.read_workers_for_work_pool(pool.name):
                beat = worker.last_heartbeat_time
                if beat is None or beat < now - self.worker_window:
                    continue
                beats[pool.name, worker.name] = beat.timestamp()
                online[pool.name, worker.name] = 1 if worker.status == "ONLINE" else 0
        _replace(self.families.worker_heartbeat, beats)
        _replace(self.families.worker_online, online)

    def _read_critical(self, client: SyncPrefectClient) -> None:
        """Which deployments prefect.yaml tags critical, and their Late runs: read fresh,
        so a tag added or removed counts from the next poll on."""
        critical: dict[tuple[str, ...], float] = {}
        late: dict[tuple[str, ...], float] = {}
        tagged = DeploymentFilter(tags=DeploymentFilterTags(all_=[CRITICAL_TAG]))
        for deployment in client.read_deployments(deployment_filter=tagged, limit=_PAGE):
            flow_id = deployment.flow_id
            flow = self._name(flow_id, lambda: client.read_flow(flow_id).name)  # noqa: B023
            critical[flow, deployment.name] = 1
            for state in _FAILED_STATES:
                # Served at 0 before the first failure: Prometheus sees no increase in a
                # series that starts at 1, so the first failure would never page.
                self.families.flow_runs.labels(flow, deployment.name, state)
            count = client.count_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Late"]))
                ),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            )
            late[flow, deployment.name] = count
        _replace(self.families.deployment_critical, critical)
        _replace(self.families.critical_late_runs, late)


def _replace(gauge: Gauge, values: dict[tuple[str, ...], float]) -> None:
    """Make `values` the gauge's series: set them, then remove the others. Never cleared
    first: a scrape between a clear and the refill saw no series, Prometheus marked them
    stale, and an alert's `for:` clock started again (a killed worker paged 60 s late)."""
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    for sample in list(next(iter(gauge.collect())).samples):
        labels = tuple(sample.labels.values())
        if labels not in values:
            gauge.remove(*labels)


def _known(value: object, allowed: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in allowed else OTHER
