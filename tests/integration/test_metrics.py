"""Observability on a real stack (server on PostgreSQL, workers, lab): the exporter's
exact counts after real runs, per-host history, retention, database growth per run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetflow.lab import Lab

from .stacks import BIN, RunningStack, free_port, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
log = logging.getLogger(__name__)

CONFIG = """
work_pool:
  name: fleetflow
  queues:
    - {name: lab, priority: 1, concurrency_limit: 4}
workers:
  - {name: worker-lab, queues: [lab]}
worker_poll_seconds: 1
retention: {flow_run_days: 0.05, event_days: 1, vacuum_every_seconds: 5}
"""
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def stack(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with running_stack(tmp_path_factory.mktemp("metrics"), str(lab.inventory_dir), CONFIG) as s:
        yield s


@pytest.fixture(scope="module")
def runs(stack: RunningStack, lab: Lab) -> dict[str, str]:
    """Success, failure, and unreachable with a retry; flow run ids by kind."""
    inventory = stack.inventory
    batch = lab.hosts()[2].name
    ids = {}
    code, ids["ok"], _ = stack.trigger("playbook/lab", True, playbook="ping", inventory=inventory)
    assert code == 0
    code, ids["failed"], _ = stack.trigger(
        "playbook/lab", True, playbook="mixed", inventory=inventory
    )
    assert code != 0
    lab.cut(batch)
    try:
        code, ids["unreachable"], _ = stack.trigger(
            "playbook/lab", True, playbook="ping", inventory=inventory, limit=batch, retries=1
        )
    finally:
        lab.restore(batch)
    assert code != 0
    return ids


def _scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.fixture(scope="module")
def scraped(stack: RunningStack, runs: dict[str, str]) -> Samples:
    port = free_port()
    exporter = subprocess.Popen(
        [str(BIN / "fleetflow"), "exporter", "--port", str(port), "--interval", "1",
         "--backfill", "30"],
        env=stack.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            time.sleep(1)
            assert exporter.poll() is None, exporter.communicate()[0]
            try:
                samples = _scrape(f"http://127.0.0.1:{port}/metrics")
            except httpx.HTTPError:
                continue
            done = _total(samples, "fleetflow_playbook_runs_total") >= 3
            # A worker whose heartbeats were late on a loaded machine is OFFLINE until its
            # next one (every 30 s): the scrape waits for the server's view to settle.
            online = _total(samples, "fleetflow_worker_online") >= 1
            if done and online and _total(samples, "fleetflow_flow_runs_total") >= 3:
                return samples
            assert time.monotonic() < deadline, f"counts never complete: {samples}"
    finally:
        exporter.terminate()
        exporter.wait(10)


def test_a_scrape_shows_the_exact_counts_of_real_runs(
    scraped: Samples, stack: RunningStack, lab: Lab
) -> None:
    inv = stack.inventory  # labels are the repository's names (the environment "lab")
    web, db, batch = (h.group for h in lab.hosts())

    def value(name: str, **labels: str) -> float:
        return scraped.get((name, frozenset(labels.items())), 0.0)

    runs = "fleetflow_flow_runs_total"
    assert value(runs, flow="playbook", deployment="lab", state="Completed") == 1
    assert value(runs, flow="playbook", deployment="lab", state="Failed") == 2
    assert _total(scraped, runs) == 3
    playbooks = "fleetflow_playbook_runs_total"
    assert value(playbooks, playbook="ping", inventory=inv, status="successful") == 1
    assert value(playbooks, playbook="ping", inventory=inv, status="failed") == 1
    assert value(playbooks, playbook="mixed", inventory=inv, status="failed") == 1
    assert _total(scraped, playbooks) == 3
    hosts = "fleetflow_host_outcomes_total"
    expected = {
        ("ping", web, "ok"): 1, ("ping", db, "ok"): 1, ("ping", batch, "ok"): 1,
        ("ping", batch, "unreachable"): 1,
        ("mixed", web, "changed"): 1, ("mixed", db, "failed"): 1, ("mixed", batch, "changed"): 1,
    }  # fmt: skip
    for (playbook, group, outcome), count in expected.items():
        assert value(hosts, playbook=playbook, group=group, outcome=outcome) == count
    assert _total(scraped, hosts) == sum(expected.values())
    # The unreachable host was tried twice (retries=1): one host retry, two attempts.
    assert value("fleetflow_host_retries_total", playbook="ping") == 1
    assert value("fleetflow_playbook_retries_total", playbook="ping") == 1
    assert value("fleetflow_host_retries_total", playbook="mixed") == 0
    assert value("fleetflow_playbook_duration_seconds_count", playbook="ping", inventory=inv) == 2
    assert (
        value("fleetflow_flow_run_duration_seconds_count", flow="playbook", deployment="lab") == 3
    )
    assert value("fleetflow_ansible_events_total", playbook="mixed") > 0
    assert value("fleetflow_playbook_log_lines_total", playbook="mixed") > 0
    assert value("fleetflow_flow_runs_active", state="Running") == 0
    assert value("fleetflow_worker_online", pool="fleetflow", worker="worker-lab") == 1
    assert (
        time.time()
        - value(
            "fleetflow_worker_last_heartbeat_timestamp_seconds",
            pool="fleetflow",
            worker="worker-lab",
        )
        < 120
    )
    assert value("fleetflow_exporter_poll_errors_total") == 0


def test_a_hosts_history_lists_its_runs_newest_first(
    stack: RunningStack, runs: dict[str, str], lab: Lab
) -> None:
    batch = lab.hosts()[2].name
    done = stack.cli(str(BIN / "fleetflow"), "history", batch, "--json")
    assert done.returncode == 0, done.stderr
    records: list[dict[str, Any]] = json.loads(done.stdout)
    assert [(r["playbook"], r["outcome"], r["changed"], r["attempts"]) for r in records] == [
        ("ping", "unreachable", 0, 2),
        ("mixed", "changed", 2, 1),
        ("ping", "ok", 0, 1),
    ]
    assert all(r["flow_run"] and r["time"] for r in records)
    table = stack.cli(str(BIN / "fleetflow"), "history", batch).stdout
    assert table.splitlines()[1].split()[1:4] == ["ping", stack.inventory, "unreachable"]
    nobody = stack.cli(str(BIN / "fleetflow"), "history", "no-such-host").stdout
    assert "no playbook run on no-such-host is on record" in nobody


GROWTH_TABLES = (
    "flow_run", "flow_run_state", "task_run", "task_run_state", "log", "artifact",
    "artifact_collection", "events", "event_resources",
)  # fmt: skip


def _footprint(stack: RunningStack) -> dict[str, tuple[int, int]]:
    """Rows and bytes (table + indexes + toast) of the tables runs write to."""
    return {
        table: (
            _count(stack, table, "true"),
            int(stack.query("SELECT pg_total_relation_size(%s)", table)[0][0]),
        )
        for table in GROWTH_TABLES
    }


def _count(stack: RunningStack, table: str, where: str, *args: object) -> int:
    return int(stack.query(f"SELECT count(*) FROM {table} WHERE {where}", *args)[0][0])


def test_retention_removes_old_runs_with_their_logs_and_artifacts_and_old_events(
    stack: RunningStack, runs: dict[str, str]
) -> None:
    old, recent = runs["failed"], runs["ok"]
    assert _count(stack, "log", "flow_run_id::text = %s", old) > 0
    assert _count(stack, "artifact", "flow_run_id::text = %s", old) > 0
    # Age one run past the 0.05-day (72 min) retention, and its events past one day.
    stack.query(
        "UPDATE flow_run SET end_time = now() - interval '2 hours' WHERE id::text = %s "
        "RETURNING id", old,
    )  # fmt: skip
    stack.query(
        "UPDATE events SET occurred = now() - interval '2 days' WHERE event = %s "
        "AND payload->>'playbook' = 'mixed' RETURNING id", "fleetflow.playbook.finished",
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while _count(stack, "flow_run", "id::text = %s", old) or _count(
        stack, "events", "event = 'fleetflow.playbook.finished' AND payload->>'playbook' = 'mixed'"
    ):
        assert time.monotonic() < deadline, "the vacuum did not remove the old run and events"
        time.sleep(2)
    for table in ("log", "artifact", "task_run"):
        assert _count(stack, table, "flow_run_id::text = %s", old) == 0, table
    assert _count(stack, "flow_run", "id::text = %s", recent) == 1
    assert _count(stack, "log", "flow_run_id::text = %s", recent) > 0


def test_flow_runs_add_a_bounded_number_of_rows(stack: RunningStack, runs: dict[str, str]) -> None:
    """FLEETFLOW_GROWTH_RUNS=100 gives the benchmark figure (bench/RESULTS.md)."""
    count = int(os.environ.get("FLEETFLOW_GROWTH_RUNS", "5"))
    time.sleep(3)  # let the event persister flush what earlier tests caused
    before = _footprint(stack)
    script = (
        "import sys\nfrom prefect.deployments import run_deployment\n"
        f"for _ in range({count}):\n"
        "    run = run_deployment('playbook/lab', timeout=0, parameters={'playbook': 'ping', "
        f"'inventory': {stack.inventory!r}}})\n"
        "    print(run.id)\n"
    )
    done = stack.cli(sys.executable, "-c", script)
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    final = stack.wait_final(*ids, timeout=60 + 15 * count)
    assert {state for state, *_ in final.values()} == {"COMPLETED"}
    time.sleep(5)
    after = _footprint(stack)
    per_run = {t: (after[t][0] - before[t][0]) / count for t in GROWTH_TABLES}
    bytes_per_run = sum(after[t][1] - before[t][1] for t in GROWTH_TABLES) / count
    log.warning(
        "%d runs of ping on 3 hosts: rows per run %s; %.1f KiB per run",
        count, {t: round(v, 1) for t, v in per_run.items()}, bytes_per_run / 1024,
    )  # fmt: skip
    # One flow run, one playbook task, a handful of log lines per host (not one row per
    # Ansible event), one artifact per kind. Most events are Prefect's own state changes,
    # each with ~8 related resources (flow, deployment, pool, queue, worker, tags...).
    assert per_run["flow_run"] == 1
    assert per_run["task_run"] <= 2
    assert per_run["log"] <= 30
    assert per_run["artifact"] <= 3
    assert per_run["events"] <= 30
    assert per_run["event_resources"] <= 300
