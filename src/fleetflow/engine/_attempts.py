"""Run a checked request to a merged PlaybookResult: attempts and host-only retries.

Free of Prefect so unit tests can drive it with a fake runner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from fleetflow.engine._collector import EventCollector
from fleetflow.engine._factcache import guard_fact_cache
from fleetflow.engine._log import Logger
from fleetflow.engine._runner import RunnerFn, RunnerOutcome
from fleetflow.engine.inventory import Preflight
from fleetflow.engine.request import RunRequest
from fleetflow.engine.retry import RetryPolicy
from fleetflow.results import HostResult, PlaybookResult, RunStatus

# Ansible's exit codes for "some hosts failed" and "some hosts unreachable".
_HOST_FAILURE_RCS = (0, 2, 4)
MAX_DEFAULT_FORKS = 50


def execute(
    request: RunRequest,
    plan: Preflight,
    runner: RunnerFn,
    logger: Logger,
    *,
    cancel: threading.Event | None = None,
    on_collector: Callable[[EventCollector], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PlaybookResult:
    """Run the checked request; retry only failed/unreachable hosts; merge the attempts."""
    cancel = cancel or threading.Event()
    started = datetime.now(UTC)
    if (cache := request.tuning.fact_cache_dir) is not None:
        vault = request.secrets.vault_password
        guard_fact_cache(
            cache, plan.inventory, plan.hosts, request.project_dir, logger,
            vault_password=vault.get_secret_value() if vault else None,
        )  # fmt: skip
    deadline = time.monotonic() + request.timeout if request.timeout else None
    merged: dict[str, HostResult] = {}
    targets, limit = plan.hosts, request.limit
    attempt = 0
    while True:
        attempt += 1
        outcome, collector, request = _attempt(
            request, plan, hosts=targets, limit=limit, deadline=deadline, runner=runner,
            logger=logger, cancel=cancel, on_collector=on_collector,
        )  # fmt: skip
        for host, host_result in collector.host_results().items():
            previous = merged.get(host)
            host_result.attempts = previous.attempts + 1 if previous else 1
            merged[host] = host_result
        retry_hosts = [h for h in targets if not merged[h].succeeded]
        if not _should_retry(outcome, retry_hosts, collector, attempt, request.retry):
            break
        delay = request.retry.delay_before(attempt + 1)
        logger.warning(
            "attempt %d: %s failed or unreachable; retrying only %s in %.0f s",
            attempt, len(retry_hosts), ", ".join(retry_hosts), delay,
        )  # fmt: skip
        sleep(delay)
        if cancel.is_set():
            outcome = RunnerOutcome("canceled", outcome.rc, outcome.output_tail)
            break
        targets, limit = tuple(retry_hosts), ",".join(retry_hosts)
    result = _result(request, plan, merged, outcome, attempts=attempt, started=started)
    _log_recap(logger, result)
    return result


def _attempt(
    request: RunRequest,
    plan: Preflight,
    *,
    hosts: tuple[str, ...],
    limit: str | None,
    deadline: float | None,
    runner: RunnerFn,
    logger: Logger,
    cancel: threading.Event,
    on_collector: Callable[[EventCollector], None] | None,
) -> tuple[RunnerOutcome, EventCollector, RunRequest]:
    """One ansible-playbook run. If Mitogen's strategy breaks before any host is touched
    (a Mitogen/ansible-core mismatch shows only at run time), run again with linear and
    keep linear for later attempts."""
    while True:
        collector = EventCollector(
            hosts, plan.task_count, logger, record_changes=request.check or request.diff
        )
        if on_collector:
            on_collector(collector)
        remaining = deadline - time.monotonic() if deadline else None
        invocation = request.for_attempt(
            plan.playbook, plan.inventory, limit=limit,
            # Sized to the fleet: Ansible's default of 5 serializes anything larger.
            forks=request.forks or min(len(plan.hosts), MAX_DEFAULT_FORKS),
            timeout=max(remaining, 1.0) if remaining is not None else None,
        )  # fmt: skip
        outcome = runner(invocation, collector, cancel)
        broke = outcome.rc not in _HOST_FAILURE_RCS and outcome.status == "failed"
        if not (request.tuning.mitogen and broke and not collector.touched_hosts):
            return outcome, collector, request
        logger.warning(
            "the Mitogen strategy failed before touching a host (exit %d); running again "
            "with linear:\n%s", outcome.rc, outcome.output_tail,
        )  # fmt: skip
        request = replace(request, tuning=request.tuning.without_mitogen())


def _should_retry(
    outcome: RunnerOutcome,
    retry_hosts: list[str],
    collector: EventCollector,
    attempt: int,
    policy: RetryPolicy,
) -> bool:
    if outcome.status in ("timeout", "canceled") or attempt >= policy.attempts:
        return False
    # Only host failures are worth a retry; a playbook error would fail the same way again.
    return bool(retry_hosts) and collector.recap is not None and outcome.rc in _HOST_FAILURE_RCS


def _result(
    request: RunRequest,
    plan: Preflight,
    hosts: dict[str, HostResult],
    outcome: RunnerOutcome,
    *,
    attempts: int,
    started: datetime,
) -> PlaybookResult:
    status, message = _decide(request, hosts, outcome)
    return PlaybookResult(
        playbook=plan.playbook.name,
        inventory=str(request.inventory),
        limit=request.limit,
        status=status,
        hosts=hosts,
        attempts=attempts,
        rc=outcome.rc,
        started_at=started,
        finished_at=datetime.now(UTC),
        check=request.check,
        message=message,
    )


def _decide(
    request: RunRequest, hosts: dict[str, HostResult], outcome: RunnerOutcome
) -> tuple[RunStatus, str]:
    if outcome.status == "canceled":
        return RunStatus.CANCELED, "canceled; ansible-playbook and its SSH connections were killed"
    if outcome.status == "timeout":
        return RunStatus.TIMED_OUT, f"timed out after {request.timeout} s and was killed"
    failed = sorted(h for h, r in hosts.items() if not r.succeeded)
    share = 100.0 * len(failed) / max(len(hosts), 1)
    if failed and share > request.max_fail_percentage:
        reasons = "; ".join(_describe(hosts[h]) for h in failed)
        return RunStatus.FAILED, (
            f"{len(failed)} of {len(hosts)} hosts failed ({share:.0f}% > "
            f"max_fail_percentage {request.max_fail_percentage:g}%): {reasons}"
        )
    if outcome.rc not in _HOST_FAILURE_RCS:
        return RunStatus.FAILED, f"ansible-playbook exited {outcome.rc}:\n{outcome.output_tail}"
    if outcome.rc != 0 and not failed:
        # 2 and 4 mean a host failed or was unreachable, but 4 is also Ansible's parser
        # error (e.g. a vaulted inventory without its password): no host ran anything.
        return RunStatus.FAILED, (
            f"ansible-playbook exited {outcome.rc} with no host failed or unreachable:\n"
            f"{outcome.output_tail}"
        )
    return RunStatus.SUCCESSFUL, ""


def _describe(host: HostResult) -> str:
    if host.failure is None:
        return f"{host.host} {host.status.value}"
    return f"{host.host} {host.status.value} at '{host.failure.task}': {host.failure.message}"


def _log_recap(logger: Logger, result: PlaybookResult) -> None:
    logger.info("PLAY RECAP (%d attempt%s)", result.attempts, "s" * (result.attempts > 1))
    for row in result.table():
        logger.info(
            "%-20s : ok=%d changed=%d unreachable=%d failed=%d skipped=%d rescued=%d ignored=%d",
            row["host"], row["ok"], row["changed"], row["unreachable"], row["failed"],
            row["skipped"], row["rescued"], row["ignored"],
        )  # fmt: skip
    log = logger.info if result.status == RunStatus.SUCCESSFUL else logger.error
    log("%s%s", result.summary(), f" - {result.message}" if result.message else "")
