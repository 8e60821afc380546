"""The stack's monitoring end to end (issue #28): `monitoring` in the stack file starts
Prometheus, Alertmanager, a node exporter and fleetflow's exporter; Prometheus scrapes both
exporters, a failed run of a critical deployment pages through Alertmanager to a real SMTP
server once, a killed worker raises its alert, `stack down` leaves nothing behind.

One stack for the module, with one-second scrape, evaluation and exporter intervals and
two-second worker heartbeats, so the whole module takes about two minutes."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetflow.lab import Lab
from fleetflow.metrics import new_families, served_names

from ..conftest import REPO
from .receivers import Inbox
from .stacks import BIN, RunningStack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
log = logging.getLogger(__name__)

CONFIG = """
work_pool: {name: fleetflow, queues: [{name: lab}, {name: spare}]}
workers:
  - {name: worker-mon, queues: [lab]}
  - {name: worker-spare, queues: [spare]}
monitoring:
  scrape_interval_seconds: 1
  evaluation_interval_seconds: 1
  exporter_interval_seconds: 1
  group_wait_seconds: 1
"""
NODE_NAMES = REPO / "tests" / "fixtures" / "node-exporter-1.5-names.txt"
# Set to a directory to keep the Prometheus UI screenshot (docs/screenshots/ for the README).
SCREENSHOT_DIR = os.environ.get("FLEETFLOW_SCREENSHOT_DIR")
README_QUERY = "sum by (flow, deployment, state) (increase(fleetflow_flow_runs_total[1h]))"


@pytest.fixture(scope="module")
def stack(
    lab: Lab, inbox: tuple[Inbox, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    directory = tmp_path_factory.mktemp("mon")
    # Workers beat every 2 s: Prefect counts one offline after 6 s of silence.
    env = {**inbox[1], "PREFECT_WORKER_HEARTBEAT_SECONDS": "2"}
    with running_stack(directory, str(lab.inventory_dir), CONFIG, extra_env=env) as running:
        yield running
    assert not (directory / "monitoring" / "alertmanager.yml").exists(), "secrets left"


def _status(stack: RunningStack) -> dict[str, Any]:
    """`stack status --json` (exit 1 once a test has killed a worker: read it anyway)."""
    done = stack.cli(str(BIN / "fleetflow"), "stack", "status", "--json")
    assert done.stdout.startswith("{"), done.stdout + done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def urls(stack: RunningStack) -> dict[str, str]:
    return dict(_status(stack)["monitoring"])


def _query(urls: dict[str, str], promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{urls['prometheus']}/api/v1/query", params={"query": promql}, timeout=10)
    response.raise_for_status()
    return list(response.json()["data"]["result"])


def _wait_query(urls: dict[str, str], promql: str, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while not (found := _query(urls, promql)):
        assert time.monotonic() < deadline, f"no result for {promql} in {timeout} s"
        time.sleep(1)
    return found


def _firing(urls: dict[str, str], alertname: str, timeout: float) -> dict[str, Any]:
    promql = f'ALERTS{{alertname="{alertname}", alertstate="firing"}}'
    return dict(_wait_query(urls, promql, timeout)[0]["metric"])


@pytest.fixture(scope="module")
def spare_killed(stack: RunningStack, urls: dict[str, str]) -> float:
    """worker-spare SIGKILLed (after checking it beats every 2 s and Prometheus sees it
    online); when. Killed before the critical run, so the alert's one-minute `for:` runs
    while that test waits for its run."""
    workers = stack.api("POST", "/work_pools/fleetflow/workers/filter", {})
    beats = {w["name"]: w["heartbeat_interval_seconds"] for w in workers}
    assert beats["worker-spare"] == 2, beats
    _wait_query(urls, 'fleetflow_worker_online{worker="worker-spare"} == 1', timeout=60)
    assert _query(urls, 'ALERTS{alertname="FleetflowWorkerOffline"}') == []
    spare = next(
        p
        for p in _status(stack)["processes"]
        if p["role"] == "worker" and p["name"] == "worker-spare"
    )
    os.killpg(spare["pid"], signal.SIGKILL)
    return time.monotonic()


def test_status_shows_the_monitoring_and_prometheus_scrapes_both_exporters(
    stack: RunningStack, urls: dict[str, str]
) -> None:
    status = _status(stack)
    roles = {p["role"]: p["alive"] for p in status["processes"]}
    assert {roles[r] for r in ("prometheus", "alertmanager", "exporter", "node-exporter")} == {True}
    assert urls["prometheus"].startswith("http://127.0.0.1:")
    assert not urls["prometheus"].endswith(":9090"), "Debian's default port"
    ups = _wait_query(urls, "up == 1", timeout=60)
    deadline = time.monotonic() + 60
    while {r["metric"]["job"] for r in ups} != {"fleetflow", "node"}:
        assert time.monotonic() < deadline, ups
        time.sleep(1)
        ups = _query(urls, "up == 1")
    targets = httpx.get(f"{urls['prometheus']}/api/v1/targets", timeout=10).json()
    health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
    assert health == {"fleetflow": "up", "node": "up"}


def test_dashboard_and_rule_names_are_served_by_the_live_exporters(urls: dict[str, str]) -> None:
    """The checked-in node exporter names (used by the dashboard's unit test) are what the
    running node exporter serves; the exporter serves what its families say."""
    node = httpx.get(urls["node-exporter"], timeout=10).text
    live = {line.split("{")[0].split(" ")[0] for line in node.splitlines() if line[:1] != "#"}
    listed = {n for n in NODE_NAMES.read_text().splitlines() if n.startswith("node_")}
    used = {
        "node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes",
        "node_filesystem_avail_bytes", "node_filesystem_size_bytes", "node_load1",
    }  # fmt: skip
    assert used <= live and used <= listed
    exporter = httpx.get(urls["exporter"], timeout=10).text
    names = {line.split("{")[0].split(" ")[0] for line in exporter.splitlines() if line[:1] != "#"}
    assert names <= served_names(new_families()), names - served_names(new_families())


def test_a_failed_critical_run_pages_once_by_email(
    stack: RunningStack,
    urls: dict[str, str],
    inbox: tuple[Inbox, dict[str, str]],
    spare_killed: float,
) -> None:
    found = stack.api("GET", "/deployments/name/playbook/lab")
    stack.api("PATCH", f"/deployments/{found['id']}", {"tags": [*found["tags"], "critical"]})
    # Prometheus has the deployment's Failed series at 0 before the failure.
    _wait_query(urls, 'fleetflow_deployment_critical{deployment="lab"} == 1', timeout=60)
    _wait_query(
        urls, 'fleetflow_flow_runs_total{deployment="lab", state="Failed"} == 0', timeout=30
    )
    assert _query(urls, 'ALERTS{alertname="FleetflowCriticalRunFailed"}') == []
    run_id = stack.create_run("playbook/lab", playbook="mixed", inventory=stack.inventory)
    failed_at = stack.wait_final(run_id)[run_id][2].timestamp()
    labels = _firing(urls, "FleetflowCriticalRunFailed", timeout=60)
    assert (labels["flow"], labels["deployment"], labels["severity"]) == ("playbook", "lab", "page")
    box = inbox[0]
    received = box.wait_for("FleetflowCriticalRunFailed", {"email"}, timeout=60)
    log.warning(
        "critical failure e-mailed %.1f s after the run failed", received["email"] - failed_at
    )
    time.sleep(5)  # group_interval is 5 min: nothing more for this incident
    mails = [t for c, _, t in box.about("FleetflowCriticalRunFailed") if c == "email"]
    assert len(mails) == 1, mails
    assert "To: ops@example.org" in mails[0] and "playbook/lab: a run failed" in mails[0]


def test_a_killed_worker_raises_its_alert(urls: dict[str, str], spare_killed: float) -> None:
    _wait_query(urls, 'fleetflow_worker_online{worker="worker-spare"} == 0', timeout=120)
    offline = time.monotonic() - spare_killed
    labels = _firing(urls, "FleetflowWorkerOffline", timeout=180)
    log.warning("worker offline in Prometheus %.0f s after the kill, alert firing after %.0f s",
                offline, time.monotonic() - spare_killed)  # fmt: skip
    assert labels["worker"] == "worker-spare"
    firing = _query(urls, 'ALERTS{alertname="FleetflowWorkerOffline", alertstate="firing"}')
    assert [r["metric"]["worker"] for r in firing] == ["worker-spare"]


def test_scrape_cost(stack: RunningStack, urls: dict[str, str]) -> None:
    """Measured, logged for bench/RESULTS.md; asserted only loosely (a loaded machine)."""
    pid = next(p["pid"] for p in _status(stack)["processes"] if p["role"] == "exporter")

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def window(scrapes: int, seconds: float = 5) -> float:
        before, start = cpu(), time.monotonic()
        for _ in range(scrapes):
            httpx.get(urls["exporter"], timeout=10).raise_for_status()
        time.sleep(max(0.0, seconds - (time.monotonic() - start)))
        return cpu() - before

    idle, busy, scrapes = window(0), window(200), 200
    per_scrape_ms = max(busy - idle, 0) / scrapes * 1000
    series = {
        job: _query(urls, f'scrape_samples_scraped{{job="{job}"}}')[0]["value"][1]
        for job in ("fleetflow", "node")
    }
    durations = {
        job: _query(urls, f'scrape_duration_seconds{{job="{job}"}}')[0]["value"][1]
        for job in ("fleetflow", "node")
    }
    log.warning(
        "scrape cost: exporter CPU %.2f ms per scrape (%.2f s CPU idle polling, "
        "%.2f s with %d scrapes, 5 s each); samples per scrape %s; scrape durations %s",
        per_scrape_ms, idle, busy, scrapes, series, durations,
    )  # fmt: skip
    assert int(series["fleetflow"]) > 0 and int(series["node"]) > 100
    assert per_scrape_ms < 100


def test_the_readme_query_in_the_prometheus_ui(urls: dict[str, str], tmp_path: Path) -> None:
    """What the README shows: the UI at the status's address answers the query."""
    from .browser import VIEWPORT, chromium

    graph = httpx.URL(
        f"{urls['prometheus']}/graph",
        params={"g0.expr": README_QUERY, "g0.tab": "0", "g0.range_input": "5m"},
    )
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
        page.goto(str(graph), timeout=60_000)
        page.get_by_text('deployment="lab"').first.wait_for(timeout=60_000)
        time.sleep(1)  # the chart draws after the legend
        shot = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path
        page.screenshot(path=str(shot / "prometheus-query.png"), full_page=True)
        page.close()
