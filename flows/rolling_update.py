"""rolling_update: preflight everything, then deploy a version batch by batch with health checks.

Two branches run in parallel first (preflight checks, and a snapshot of the versions now
running); deployment waits for both. Each batch is deployed then health-checked; the first
failing batch stops the rollout, and later batches are left untouched.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from fleetflow import PlaybookResult, RolloutStopped, resolve_hosts, run_playbook
from fleetflow.engine.run import time_limit as limited
from fleetflow.flowkit.outcome import reports_outcome
from fleetflow.flowkit.params import (
    DEFAULT_TIME_LIMIT,
    BatchSize,
    HostPattern,
    Inventory,
    TimeLimit,
    Version,
)
from fleetflow.flowkit.summary import markdown_table


def batches(hosts: list[str], size: int) -> list[list[str]]:
    return [hosts[i : i + size] for i in range(0, len(hosts), size)]


@flow(name="rolling_update")
@reports_outcome
def rolling_update(
    version: Version,
    hosts: HostPattern = "web",
    inventory: Inventory = "lab",
    batch_size: BatchSize = 2,
    time_limit: TimeLimit = DEFAULT_TIME_LIMIT,
) -> dict[str, Any]:
    """Deploy `version` of the application to `hosts`, `batch_size` hosts at a time.

    Args:
        version: The application version to deploy (letters, digits, . _ + -).
        hosts: The hosts to update, an Ansible host pattern.
        inventory: The environment to run on (inventory/<name>/), by name.
        batch_size: Hosts deployed and health-checked at once; a failing batch stops the rollout.
        time_limit: Seconds the whole run may take (at most a day); then it is stopped.
    """
    with limited(time_limit):
        return _rollout(version, hosts, inventory, batch_size)


def _rollout(version: str, hosts: str, inventory: str, batch_size: int) -> dict[str, Any]:
    logger = get_run_logger()
    targets = resolve_hosts(
        "deploy_app", inventory=inventory, limit=hosts, extra_vars={"app_version": version}
    )
    preflight = run_playbook.submit("preflight", inventory=inventory, limit=hosts)
    snapshot = run_playbook.submit(
        "health_check", inventory=inventory, limit=hosts, raise_on_failure=False
    )
    preflight.result()  # raises: no host is changed when any host fails its preflight
    before: PlaybookResult = snapshot.result()
    report: dict[str, Any] = {"version": version, "batches": [], "stopped": False}
    plan = batches(targets, batch_size)
    for number, batch in enumerate(plan, start=1):
        row = {"batch": number, "hosts": batch, "deploy": "not run", "health": "not run",
               "changed": ""}  # fmt: skip
        report["batches"].append(row)
        if report["stopped"]:
            continue
        limit = ",".join(batch)
        deploy = run_playbook(
            "deploy_app",
            inventory=inventory,
            limit=limit,
            extra_vars={"app_version": version},
            # The dependency on both branches is recorded in the run graph.
            wait_for=[preflight, snapshot],
            return_state=True,
        )
        row["deploy"] = deploy.type.value.lower()
        if deploy.is_completed():
            row["changed"] = ", ".join(deploy.result().changed_hosts) or "none"
            health = run_playbook(
                "health_check",
                inventory=inventory,
                limit=limit,
                extra_vars={"expected_version": version},
                wait_for=[deploy],
                return_state=True,
            )
            row["health"] = health.type.value.lower()
        if row["health"] != "completed":
            report["stopped"] = True
            logger.error("batch %d failed; stopping the rollout of %s", number, version)
    _publish(report, before)
    if report["stopped"]:
        failed = next(r for r in report["batches"] if r["health"] != "completed")
        raise RolloutStopped(f"rollout of {version} stopped at batch {failed['batch']}")
    return report


def _publish(report: dict[str, Any], before: PlaybookResult) -> None:
    rows = []
    for row in report["batches"]:
        versions = ", ".join(
            str(before.hosts[h].outputs.get("version", "none")) if h in before.hosts else "?"
            for h in row["hosts"]
        )
        rows.append((row["batch"], ", ".join(row["hosts"]), row["deploy"], row["health"],
                     row["changed"], versions))  # fmt: skip
    columns = ("batch", "hosts", "deploy", "health", "changed", "version before")
    lines = [f"# Rolling update to {report['version']}", "", markdown_table(columns, rows), ""]
    if report["stopped"]:
        lines.append("**Stopped**: later batches were not touched.")
    elif all(row["changed"] == "none" for row in report["batches"]):
        lines.append(f"Done: every host already ran {report['version']}; nothing changed.")
    else:
        lines.append("Done.")
    create_markdown_artifact("\n".join(lines), key="rolling-update-report")


if __name__ == "__main__":
    rolling_update("1.1.0")
