"""The exporter's counting, against a fake Prefect client serving real Prefect models."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from prefect.client.schemas.events import EventPage
from prefect.client.schemas.objects import FlowRun, State, StateType, Worker, WorkPool
from prefect.events.schemas.events import ReceivedEvent, RelatedResource, Resource
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fleetflow.engine.publish import PLAYBOOK_EVENT
from fleetflow.metrics import Exporter, new_families, served_names

from ...conftest import REPO


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository whose playbook "site" and inventory "prod" the payloads name."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "site.yml").write_text("[]\n")
    (tmp_path / "inventory" / "prod").mkdir(parents=True)
    monkeypatch.setenv("FLEETFLOW_PROJECT_DIR", str(tmp_path))
    return tmp_path


def _ago(seconds: float = 0) -> datetime:
    # Read the clock when the test runs, not at import: the suite runs for many minutes
    # after collection and the exporter forgets what is older than its overlap window.
    return datetime.now(UTC) - timedelta(seconds=seconds)


def _event(payload: dict[str, Any], name: str = PLAYBOOK_EVENT, **resource: str) -> ReceivedEvent:
    return ReceivedEvent(
        occurred=_ago(5), event=name,
        resource=Resource({"prefect.resource.id": "x", **resource}),
        related=[RelatedResource({"prefect.resource.id": "fleetflow.host.h1",
                                  "prefect.resource.role": "host"})],
        payload=payload, id=uuid4(), received=_ago(),
    )  # fmt: skip


def _payload(status: str, hosts: dict[str, tuple[str, int, list[str]]], attempts: int = 1) -> Any:
    return {
        "playbook": "site", "inventory": "prod", "status": status, "duration_seconds": 12.5,
        "attempts": attempts, "ansible_events": 40, "log_lines": 9,
        "hosts": {h: {"status": s, "changed": 1, "attempts": a, "groups": g}
                  for h, (s, a, g) in hosts.items()},
    }  # fmt: skip


@dataclass
class FakeClient:
    events: list[ReceivedEvent] = field(default_factory=list)
    runs: list[FlowRun] = field(default_factory=list)
    active: dict[str, int] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    critical: dict[str, int] = field(default_factory=dict)  # critical deployment: Late runs
    _deployment_names: dict[Any, str] = field(default_factory=dict)

    def read_events(self, filter: Any, limit: int) -> EventPage:
        since, until = filter.occurred.since, filter.occurred.until
        events = [e for e in self.events if since <= e.occurred <= until]
        return EventPage(events=events, total=len(events), next_page=None)

    def read_flow_runs(self, **kwargs: Any) -> list[FlowRun]:
        after = kwargs["flow_run_filter"].end_time.after_
        runs = [r for r in self.runs if r.end_time and r.end_time >= after]
        return runs if kwargs["offset"] == 0 else []

    def read_flow(self, flow_id: Any) -> Any:
        return type("Flow", (), {"name": "site"})

    def read_deployment(self, deployment_id: Any) -> Any:
        return type("Deployment", (), {"name": "prod"})

    def count_flow_runs(self, flow_run_filter: Any, deployment_filter: Any = None) -> int:
        if deployment_filter is not None:
            name = self._deployment_names[deployment_filter.id.any_[0]]
            return self.critical[name]
        return self.active.get(flow_run_filter.state.name.any_[0], 0)

    def read_deployments(self, deployment_filter: Any, limit: int) -> list[Any]:
        assert deployment_filter.tags.all_ == ["critical"]
        found = [
            type("Deployment", (), {"id": uuid4(), "name": name, "flow_id": uuid4()})
            for name in self.critical
        ]
        self._deployment_names = {d.id: d.name for d in found}
        return found

    def read_work_pools(self) -> list[WorkPool]:
        return [WorkPool(name="fleetflow", type="process")]

    def read_workers_for_work_pool(self, name: str) -> list[Worker]:
        return self.workers


def _run(state: StateType, name: str, run_count: int = 1) -> FlowRun:
    return FlowRun(
        flow_id=uuid4(), deployment_id=uuid4(), state=State(type=state, name=name),
        end_time=_ago(3), total_run_time=timedelta(seconds=42),
        run_count=run_count,
    )  # fmt: skip


def _scrape(exporter: Exporter) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(exporter.families.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_counts_playbook_runs_hosts_by_group_and_retries_once_across_overlapping_polls() -> None:
    client = FakeClient(
        events=[
            _event(_payload("successful", {"w1": ("ok", 1, ["web", "eu"]), "d1": ("ok", 1, [])})),
            _event(_payload("failed", {"w1": ("unreachable", 3, ["web"])}, attempts=3)),
            _event({}, "prefect.automation.action.executed",
                   **{"prefect.resource.name": "fleetflow/flow-run-failed"}),
        ],
        runs=[_run(StateType.COMPLETED, "Completed"), _run(StateType.FAILED, "Failed", 2)],
        active={"Late": 2, "Running": 1},
    )  # fmt: skip
    exporter = Exporter(new_families(), since=_ago(60))
    exporter.poll(client)  # type: ignore[arg-type]
    exporter.poll(client)  # type: ignore[arg-type]  # the overlap re-reads the same items
    s = _scrape(exporter)
    assert _value(s, "fleetflow_playbook_runs_total", playbook="site", inventory="prod",
                  status="successful") == 1  # fmt: skip
    assert _value(s, "fleetflow_playbook_runs_total", playbook="site", inventory="prod",
                  status="failed") == 1  # fmt: skip
    outcome = "fleetflow_host_outcomes_total"
    assert _value(s, outcome, playbook="site", group="web", outcome="ok") == 1
    assert _value(s, outcome, playbook="site", group="eu", outcome="ok") == 1
    assert _value(s, outcome, playbook="site", group="ungrouped", outcome="ok") == 1
    assert _value(s, outcome, playbook="site", group="web", outcome="unreachable") == 1
    assert _value(s, "fleetflow_host_retries_total", playbook="site") == 2
    assert _value(s, "fleetflow_playbook_retries_total", playbook="site") == 2
    assert _value(s, "fleetflow_ansible_events_total", playbook="site") == 80
    assert _value(s, "fleetflow_playbook_log_lines_total", playbook="site") == 18
    assert _value(s, "fleetflow_playbook_duration_seconds_count", playbook="site",
                  inventory="prod") == 2  # fmt: skip
    assert _value(s, "fleetflow_alerts_total", automation="fleetflow/flow-run-failed",
                  result="executed") == 1  # fmt: skip
    runs = "fleetflow_flow_runs_total"
    assert _value(s, runs, flow="site", deployment="prod", state="Completed") == 1
    assert _value(s, runs, flow="site", deployment="prod", state="Failed") == 1
    assert _value(s, "fleetflow_flow_run_retries_total", flow="site", deployment="prod") == 1
    assert _value(s, "fleetflow_flow_run_duration_seconds_sum", flow="site",
                  deployment="prod") == 84  # fmt: skip
    assert _value(s, "fleetflow_flow_runs_active", state="Late") == 2
    assert _value(s, "fleetflow_flow_runs_active", state="Scheduled") == 0


def test_labels_never_carry_host_names_or_run_ids() -> None:
    run = _run(StateType.COMPLETED, "Completed")
    client = FakeClient(
        events=[_event(_payload("successful", {"host-a1": ("ok", 1, ["web"])}))], runs=[run]
    )
    exporter = Exporter(new_families(), since=_ago(60))
    exporter.poll(client)  # type: ignore[arg-type]
    text = generate_latest(exporter.families.registry).decode()
    assert "host-a1" not in text and str(run.id) not in text


def test_workers_silent_for_an_hour_are_dropped() -> None:
    fresh = Worker(
        name="worker-1", work_pool_id=uuid4(), last_heartbeat_time=_ago(), status="ONLINE"
    )
    stale = Worker(
        name="ProcessWorker-dead", work_pool_id=uuid4(),
        last_heartbeat_time=_ago(7200), status="OFFLINE",
    )  # fmt: skip
    exporter = Exporter(new_families())
    exporter.poll(FakeClient(workers=[fresh, stale]))  # type: ignore[arg-type]
    s = _scrape(exporter)
    assert _value(s, "fleetflow_worker_online", pool="fleetflow", worker="worker-1") == 1
    assert not any("ProcessWorker-dead" in str(key) for key in s)


def test_the_dashboard_queries_only_served_metrics_and_shows_every_family() -> None:
    dashboard = json.loads((REPO / "deployments/grafana/fleetflow.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bfleetflow_[a-z_]+", expr)}
    served = served_names(new_families())
    assert used <= served, f"not served: {sorted(used - served)}"
    suffixes = ("_total", "_bucket", "_sum", "_count")
    shown = {next((n[: -len(x)] for x in suffixes if n.endswith(x)), n) for n in used}
    families = {f.name for f in new_families().registry.collect()}
    assert families <= shown, f"no panel shows {sorted(families - shown)}"


def test_a_scrape_during_a_poll_still_sees_the_workers_and_critical_deployments() -> None:
    """Regression: the poll cleared the worker gauges before reading them again; a scrape
    in between found no series, Prometheus marked them stale and FleetflowWorkerOffline's
    `for: 1m` started over (a killed worker paged a minute late)."""
    worker = Worker(name="w1", work_pool_id=uuid4(), last_heartbeat_time=_ago(1), status="ONLINE")
    exporter = Exporter(new_families(), since=_ago(60))
    seen: list[set[str]] = []

    class Scraped(FakeClient):
        def read_workers_for_work_pool(self, name: str) -> list[Worker]:
            seen.append({n for n, _ in _scrape(exporter)})  # mid-poll, as a scrape would
            return self.workers

    client = Scraped(workers=[worker], critical={"nightly": 0})
    exporter.poll(client)  # type: ignore[arg-type]
    exporter.poll(client)  # type: ignore[arg-type]
    assert {"fleetflow_worker_online", "fleetflow_deployment_critical"} <= seen[1]
    client.workers = []
    exporter.poll(client)  # type: ignore[arg-type]
    assert "fleetflow_worker_online" not in {n for n, _ in _scrape(exporter)}


def test_critical_deployments_and_their_late_runs_are_read_fresh_each_poll() -> None:
    client = FakeClient(critical={"nightly": 2, "patch": 0})
    exporter = Exporter(new_families(), since=_ago(60))
    exporter.poll(client)  # type: ignore[arg-type]
    s = _scrape(exporter)
    assert _value(s, "fleetflow_deployment_critical", flow="site", deployment="nightly") == 1
    assert _value(s, "fleetflow_critical_deployment_late_runs", flow="site",
                  deployment="nightly") == 2  # fmt: skip
    assert _value(s, "fleetflow_critical_deployment_late_runs", flow="site",
                  deployment="patch") == 0  # fmt: skip
    # Its failures are served at 0 before the first one, so the first one is an increase.
    failed = ("fleetflow_flow_runs_total", frozenset(
        {"flow": "site", "deployment": "nightly", "state": "Failed"}.items()))  # fmt: skip
    assert s[failed] == 0
    client.critical = {"patch": 1}  # the tag was taken off nightly
    exporter.poll(client)  # type: ignore[arg-type]
    names = {name for name, labels in _scrape(exporter) if ("deployment", "nightly") in labels}
    assert not names & {"fleetflow_deployment_critical", "fleetflow_critical_deployment_late_runs"}


def test_a_big_runs_parts_count_the_run_once_and_every_host() -> None:
    first = _payload("successful", {f"h{i}": ("ok", 1, ["web"]) for i in range(2)})
    second = _payload("successful", {f"h{i}": ("ok", 1, ["web"]) for i in range(2, 5)})
    client = FakeClient(events=[_event({**first, "part": 1, "parts": 2}),
                                _event({**second, "part": 2, "parts": 2})])  # fmt: skip
    exporter = Exporter(new_families(), since=_ago(60))
    exporter.poll(client)  # type: ignore[arg-type]
    s = _scrape(exporter)
    assert _value(s, "fleetflow_playbook_runs_total", playbook="site", inventory="prod",
                  status="successful") == 1  # fmt: skip
    assert _value(s, "fleetflow_host_outcomes_total", playbook="site", group="web",
                  outcome="ok") == 5  # fmt: skip


def test_caller_chosen_names_and_statuses_become_other() -> None:
    """Regression: payload names made a new series each (a 200,000-char name, /tmp paths)."""
    payloads = [
        {**_payload("successful", {"h": ("ok", 1, [])}), "playbook": "x" * 200_000},
        {**_payload("bogus", {"h": ("weird", 1, [])}), "inventory": "/tmp/evil"},
    ]
    client = FakeClient(events=[_event(p) for p in payloads])
    exporter = Exporter(new_families(), since=_ago(60))
    exporter.poll(client)  # type: ignore[arg-type]
    s = _scrape(exporter)
    runs = "fleetflow_playbook_runs_total"
    assert _value(s, runs, playbook="other", inventory="prod", status="successful") == 1
    assert _value(s, runs, playbook="site", inventory="other", status="other") == 1
    assert _value(s, "fleetflow_host_outcomes_total", playbook="site", group="ungrouped",
                  outcome="other") == 1  # fmt: skip
    assert all(len(value) < 100 for _, labels in s for _, value in labels)


def test_runs_from_dirty_trees_are_counted_once_each_without_labels() -> None:
    hosts = {"w1": ("ok", 1, ["web"])}
    dirty = {**_payload("successful", hosts), "commit": "a" * 40, "dirty": True}
    split = [{**dirty, "part": 1, "parts": 2}, {**dirty, "part": 2, "parts": 2}]
    clean = {**_payload("successful", hosts), "commit": "b" * 40, "dirty": False}
    client = FakeClient(events=[_event(p) for p in (*split, clean, _payload("failed", hosts))])
    exporter = Exporter(new_families(), since=_ago(60))
    exporter.poll(client)  # type: ignore[arg-type]
    exporter.poll(client)  # type: ignore[arg-type]
    assert _value(_scrape(exporter), "fleetflow_playbook_runs_dirty_total") == 1
