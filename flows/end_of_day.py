"""end_of_day: a bank's end-of-day payments batch, the chain of scripts ops ran by hand, as a DAG.

    settlement file on the db hosts (sensor)
      -> reconcile (db)
      -> reports (batch)  |  archive logs (web)    two branches at the same time
      -> publish (db): summary and "done" marker, only when both branches succeeded

Each step runs one of scripts/eod_*.sh through the run_script playbook. A step retries its
failed hosts only (`retries`); a step that still fails ends the run Failed, naming the step
and its hosts, and the steps after it are not started. The branches run on disjoint host
groups (checked before anything runs) so neither waits for the other's host locks.

Resuming works as in flows/runbook.py: every step is a task whose result is persisted and
cached per flow run (RUN_ID + INPUTS), so retrying the failed run (`prefect flow-run retry`,
Retry in the UI) serves the steps that succeeded from the cache and runs only the rest.
The business date is resolved once per run by such a task too, so a run retried after
midnight still closes the day it started for.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, cast
from zoneinfo import ZoneInfo

from prefect import State, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS, RUN_ID
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from pydantic import Field

from fleetflow import ConfigurationError, PlaybookResult, PlaybookRunError, run_playbook
from fleetflow.engine.run import resolve_hosts
from fleetflow.engine.run import time_limit as limited
from fleetflow.exceptions import FleetflowError
from fleetflow.flowkit.outcome import failure_message, reports_outcome
from fleetflow.flowkit.params import (
    DEFAULT_TIME_LIMIT,
    HostPattern,
    Inventory,
    Retries,
    RetryDelay,
    TimeLimit,
    retry_policy,
)
from fleetflow.flowkit.sensors import wait_for_file
from fleetflow.flowkit.summary import markdown_table

BusinessDate = Annotated[
    dt.date, Field(description="The day to close (YYYY-MM-DD); default: today in Europe/London.")
]
SettlementTimeout = Annotated[
    int, Field(ge=1, le=86400, description="Seconds to wait for the settlement file.")
]
BANK_ZONE = ZoneInfo("Europe/London")
INBOX = "/srv/eod/inbox"


@task(name="eod_business_date", cache_policy=RUN_ID + INPUTS, persist_result=True)
def business_day(given: dt.date | None) -> str:
    """The date to close, fixed at the run's first attempt (a retry reuses it)."""
    return (given or dt.datetime.now(BANK_ZONE).date()).isoformat()


@task(
    name="eod_settlement_file",
    task_run_name="wait for {path}",
    cache_policy=RUN_ID + INPUTS,
    persist_result=True,
)
def settlement_file(path: str, inventory: str, hosts: str, timeout: int) -> float:
    """Wait for the file on every db host; returns the seconds waited."""
    return wait_for_file(path, inventory=inventory, limit=hosts, timeout=timeout).waited_seconds


@task(
    name="eod_step",
    task_run_name="{step} on {hosts}",
    cache_policy=RUN_ID + INPUTS,
    persist_result=True,
)
def eod_step(
    step: str, script: str, args: list[str], hosts: str, inventory: str, retries: int, delay: float
) -> PlaybookResult:
    """Run scripts/<script> on `hosts`, retrying the failed hosts only."""
    del step  # the run's name and the cache key only
    return run_playbook.fn(
        "run_script",
        inventory=inventory,
        limit=hosts,
        extra_vars={"script_name": script, "script_args": args},
        retry=retry_policy(retries, delay),
    )


@flow(name="end_of_day", log_prints=True)
@reports_outcome
def end_of_day(
    business_date: BusinessDate | None = None,
    inventory: Inventory = "lab",
    db_hosts: HostPattern = "db",
    batch_hosts: HostPattern = "batch",
    web_hosts: HostPattern = "web",
    settlement_timeout: SettlementTimeout = 3600,
    retries: Retries = 1,
    retry_delay: RetryDelay = 5,
    time_limit: TimeLimit = DEFAULT_TIME_LIMIT,
) -> dict[str, str]:
    """Close `business_date`: wait for its settlement file, reconcile, report and archive in
    parallel, then publish. Returns the published summary (key=value lines as a dict).

    Args:
        business_date: The day to close (YYYY-MM-DD); default: today in Europe/London.
        inventory: The environment to run on (inventory/<name>/), by name.
        db_hosts: Hosts that receive the settlement file, reconcile and publish (a host pattern).
        batch_hosts: Hosts that make the reports (a host pattern, disjoint from the others).
        web_hosts: Hosts whose logs are archived (a host pattern, disjoint from the others).
        settlement_timeout: Seconds to wait for the settlement file; then the run fails.
        retries: Extra attempts of a step for its failed or unreachable hosts only (0-5).
        retry_delay: Seconds before the first retry; doubled for each next one.
        time_limit: Seconds the whole run may take (at most a day); then it is stopped.
    """
    with limited(time_limit):
        _check_disjoint(inventory, {"db": db_hosts, "batch": batch_hosts, "web": web_hosts})
        day = business_day(business_date)
        return _close(day, inventory, db_hosts, batch_hosts, web_hosts, settlement_timeout,
                      retries, retry_delay)  # fmt: skip


def _check_disjoint(inventory: str, groups: dict[str, str]) -> None:
    seen: dict[str, str] = {}
    for role, pattern in groups.items():
        for host in resolve_hosts.fn("run_script", inventory=inventory, limit=pattern):
            if host in seen:
                raise ConfigurationError(
                    f"{host} is in both the {seen[host]} and the {role} hosts; "
                    "the steps need disjoint host groups"
                )
            seen[host] = role


STEPS = ("settlement file", "reconcile", "reports", "archive", "publish")


def _close(
    day: str, inventory: str, db: str, batch: str, web: str, timeout: int,
    retries: int, delay: float,
) -> dict[str, str]:  # fmt: skip
    rows = dict.fromkeys(STEPS, "not run")

    def step(name: str, script: str, args: list[str], hosts: str) -> PrefectFuture[PlaybookResult]:
        return eod_step.submit(name, script, args, hosts, inventory, retries, delay)

    try:
        path = f"{INBOX}/settlement-{day}.csv"
        _must(rows, "settlement file", settlement_file.submit(path, inventory, db, timeout))
        reconciled = _must(rows, "reconcile", step("reconcile", "eod_reconcile.sh", [day], db))
        figures = _agreed(reconciled, ("payments", "total_cents", "settlement_sha256"))
        branches = {
            "reports": step("reports", "eod_report.sh", [day, *figures], batch),
            "archive": step("archive", "eod_archive.sh", [day], web),
        }
        # Both branches end before either is judged: the run's report says how each ended.
        ended: dict[str, PlaybookResult | BaseException] = {}
        for name, future in branches.items():
            outcome = _settle(rows, name, future)
            ended[name] = outcome
        failed = {n: e for n, e in ended.items() if isinstance(e, BaseException)}
        if failed:
            raise _stopped(failed)
        shas = [*_agreed(cast(PlaybookResult, ended["reports"]), ("report_sha256",)),
                *_agreed(cast(PlaybookResult, ended["archive"]), ("archive_sha256",))]  # fmt: skip
        published = _must(rows, "publish", step("publish", "eod_publish.sh", [day, *shas], db))
    finally:
        _publish(day, rows)
    return _values(published)[0]


def _settle[T](rows: dict[str, str], name: str, future: PrefectFuture[T]) -> T | BaseException:
    """The step's result, or the error it ended with; notes the outcome in `rows`."""
    future.wait()
    state: State[T] = future.state
    if not state.is_completed():
        rows[name] = "failed"
        return cast(BaseException, state.result(raise_on_failure=False))
    rows[name] = "done earlier" if state.name == "Cached" else "ran"
    if state.name == "Cached":
        get_run_logger().info("step %s succeeded in an earlier attempt: not run again", name)
    return state.result()


def _must[T](rows: dict[str, str], name: str, future: PrefectFuture[T]) -> T:
    ended = _settle(rows, name, future)
    if isinstance(ended, BaseException):
        raise _stopped({name: ended})
    return ended


def _stopped(failed: dict[str, BaseException]) -> BaseException:
    """One error naming every failed step and its hosts, and how to resume."""
    parts = []
    for name, error in failed.items():
        why = failure_message(error.result) if isinstance(error, PlaybookRunError) else str(error)
        parts.append(f"step {name} failed: {why}")
    resume = f"Retry flow run {flow_run.get_id()} to resume at the failed step."
    first = next(iter(failed.values()))
    message = "; ".join(parts) + f". {resume}"
    if isinstance(first, PlaybookRunError):
        return type(first)(message, first.result)
    if isinstance(first, FleetflowError):
        return type(first)(message)
    return first  # a bug: raised as it is, with its traceback


def _values(result: PlaybookResult) -> list[dict[str, str]]:
    """Each host's key=value output lines, in host order."""
    found = []
    for host in sorted(result.hosts):
        lines = str(result.hosts[host].outputs.get("stdout", "")).splitlines()
        found.append(dict(line.split("=", 1) for line in lines if "=" in line))
    return found


def _agreed(result: PlaybookResult, keys: tuple[str, ...]) -> list[str]:
    """`keys` of the step's output, the same on every host (each db host reconciles its own
    copy of the file: copies that differ must stop the day, not pick a winner)."""
    values = {tuple(v.get(k, "") for k in keys) for v in _values(result)}
    if len(values) != 1 or "" in next(iter(values)):
        raise FleetflowError(
            f"{result.playbook} on {', '.join(sorted(result.hosts))}: expected one value of "
            f"{', '.join(keys)}, got {sorted(values)}"
        )
    return list(next(iter(values)))


def _publish(day: str, rows: dict[str, str]) -> None:
    table = markdown_table(("step", "outcome"), rows.items())
    create_markdown_artifact(f"# End of day {day}\n\n{table}\n", key="end-of-day",
                             description=f"End of day {day}")  # fmt: skip


if __name__ == "__main__":
    end_of_day()
