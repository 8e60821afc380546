"""The metric families the exporter serves. Labels are bounded by design: flow,
deployment, playbook, inventory, inventory group, state, worker and pool names - never run
ids, host names or messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Runs here last from seconds (a ping) to hours (a fleet-wide patch).
DURATION_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
# Flow runs not yet finished, by state name (Scheduled means due later, Late means overdue).
ACTIVE_STATES = ("Scheduled", "Late", "Pending", "Running", "Paused", "Cancelling")
# The deployment tag (prefect.yaml) that makes its failures and lateness page through
# Prometheus (deployments/monitoring/rules): rules never name deployments.
CRITICAL_TAG = "critical"


@dataclass
class Families:
    registry: CollectorRegistry
    flow_runs: Counter
    flow_run_duration: Histogram
    flow_run_retries: Counter
    flow_runs_active: Gauge
    playbook_runs: Counter
    playbook_duration: Histogram
    playbook_retries: Counter
    host_outcomes: Counter
    host_retries: Counter
    host_leftovers: Counter
    ansible_events: Counter
    log_lines: Counter
    dirty_runs: Counter
    alerts: Counter
    worker_heartbeat: Gauge
    worker_online: Gauge
    poll_errors: Counter
    last_poll: Gauge
    deployment_critical: Gauge
    critical_late_runs: Gauge


def new_families() -> Families:
    r = CollectorRegistry(auto_describe=True)
    return Families(
        registry=r,
        flow_runs=Counter(
            "fleetflow_flow_runs", "Flow runs that reached a final state.",
            ["flow", "deployment", "state"], registry=r,
        ),
        flow_run_duration=Histogram(
            "fleetflow_flow_run_duration_seconds", "Run time of finished flow runs.",
            ["flow", "deployment"], buckets=DURATION_BUCKETS, registry=r,
        ),
        flow_run_retries=Counter(
            "fleetflow_flow_run_retries", "Extra runs of finished flow runs (Prefect retries).",
            ["flow", "deployment"], registry=r,
        ),
        flow_runs_active=Gauge(
            "fleetflow_flow_runs_active", "Flow runs not finished yet, by state.",
            ["state"], registry=r,
        ),
        playbook_runs=Counter(
            "fleetflow_playbook_runs", "Playbook runs (run_playbook) by outcome.",
            ["playbook", "inventory", "status"], registry=r,
        ),
        playbook_duration=Histogram(
            "fleetflow_playbook_duration_seconds", "Wall time of playbook runs, retries included.",
            ["playbook", "inventory"], buckets=DURATION_BUCKETS, registry=r,
        ),
        playbook_retries=Counter(
            "fleetflow_playbook_retries", "Extra attempts of playbook runs (host retries).",
            ["playbook"], registry=r,
        ),
        host_outcomes=Counter(
            "fleetflow_host_outcomes", "Per-host outcomes of playbook runs, counted once per "
            "inventory group of the host ('ungrouped' when it has none).",
            ["playbook", "group", "outcome"], registry=r,
        ),
        host_retries=Counter(
            "fleetflow_host_retries", "Extra attempts on single hosts (retried when failed).",
            ["playbook"], registry=r,
        ),
        host_leftovers=Counter(
            "fleetflow_host_leftovers", "Processes of earlier runs found on hosts before a run "
            "worked on them: stopped by the run's fence, by their own run's guard (reported "
            "later), or left running (the host failed).",
            ["playbook", "action"], registry=r,
        ),
        ansible_events=Counter(
            "fleetflow_ansible_events", "Ansible events processed by playbook runs.",
            ["playbook"], registry=r,
        ),
        log_lines=Counter(
            "fleetflow_playbook_log_lines", "Log lines playbook runs sent to Prefect.",
            ["playbook"], registry=r,
        ),
        dirty_runs=Counter(
            "fleetflow_playbook_runs_dirty",
            "Playbook runs whose files were not a git commit (uncommitted changes, not in git).",
            registry=r,
        ),
        alerts=Counter(
            "fleetflow_alerts", "Automation actions (alerts) run by the server, by result.",
            ["automation", "result"], registry=r,
        ),
        worker_heartbeat=Gauge(
            "fleetflow_worker_last_heartbeat_timestamp_seconds",
            "Last heartbeat of workers seen in the last hour.", ["pool", "worker"], registry=r,
        ),
        worker_online=Gauge(
            "fleetflow_worker_online", "1 if the server counts the worker online, else 0.",
            ["pool", "worker"], registry=r,
        ),
        poll_errors=Counter(
            "fleetflow_exporter_poll_errors", "Polls of the Prefect API that failed.", registry=r
        ),
        last_poll=Gauge(
            "fleetflow_exporter_last_poll_timestamp_seconds",
            "When the exporter last read the Prefect API successfully.", registry=r,
        ),
        deployment_critical=Gauge(
            "fleetflow_deployment_critical",
            f"1 for each deployment tagged {CRITICAL_TAG!r} in prefect.yaml (alert rules "
            "join on it).", ["flow", "deployment"], registry=r,
        ),
        critical_late_runs=Gauge(
            "fleetflow_critical_deployment_late_runs",
            "Flow runs of critical deployments in state Late now.",
            ["flow", "deployment"], registry=r,
        ),
    )  # fmt: skip


def served_names(families: Families) -> set[str]:
    """Every sample name the exporter can serve (what dashboards may query)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in families.registry.collect()
        for suffix in suffixes[family.type]
    }
