"""Prefect tasks that run Ansible playbooks and report per-host truth."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from fleetflow.engine._attempts import execute
from fleetflow.engine._guard import GuardConfig
from fleetflow.engine._locks import host_locks
from fleetflow.engine._runlog import RunLog
from fleetflow.engine._runner import run_ansible
from fleetflow.engine._tuning import tuning
from fleetflow.engine.blackouts import BlackoutPolicy, gate_run
from fleetflow.engine.flowrun import (
    current_flow_run_id,
    mark_reached,
    quiet_expected_failures,
    tag_flow_run,
)
from fleetflow.engine.inventory import (
    host_groups,
    preflight,
    require_vault_password,
    resolve_inventory,
)
from fleetflow.engine.publish import progress_artifact, publish_run
from fleetflow.engine.request import RunRequest
from fleetflow.engine.retry import RetryPolicy
from fleetflow.engine.secrets import RunSecrets
from fleetflow.engine.source import describe
from fleetflow.exceptions import (
    ConfigurationError,
    PlaybookCanceled,
    PlaybookFailed,
    PlaybookRunError,
    PlaybookTimedOut,
    TimeLimitReached,
)
from fleetflow.results import PlaybookResult, RunStatus
from fleetflow.settings import FleetflowSettings, get_settings

__all__ = ["resolve_hosts", "run_playbook", "time_limit"]

quiet_expected_failures()

# (deadline on the monotonic clock, the limit in seconds) of the flow run, if it has one.
_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar("fleetflow_deadline", default=None)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Bound every run_playbook inside (tasks submitted from here too: Prefect copies the
    context into its task threads): each gets at most what is left, and none starts once
    the limit has passed (TimeLimitReached)."""
    token = _DEADLINE.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _bounded(timeout: float | None) -> float | None:
    """The run's timeout within the flow's time limit."""
    limit = _DEADLINE.get()
    if limit is None:
        return timeout
    remaining = limit[0] - time.monotonic()
    if remaining < 1:
        raise TimeLimitReached(
            f"the run's time limit of {limit[1]:.0f} s has passed; this playbook was not run"
        )
    return remaining if timeout is None else min(timeout, remaining)


_ERRORS: dict[RunStatus, type[PlaybookRunError]] = {
    RunStatus.FAILED: PlaybookFailed,
    RunStatus.TIMED_OUT: PlaybookTimedOut,
    RunStatus.CANCELED: PlaybookCanceled,
}


@task(name="run_playbook", task_run_name="ansible: {playbook}", cache_policy=NO_CACHE)
def run_playbook(
    playbook: str,
    *,
    inventory: str = "lab",
    limit: str | None = None,
    tags: list[str] | None = None,
    skip_tags: list[str] | None = None,
    extra_vars: dict[str, Any] | None = None,
    check: bool = False,
    diff: bool = False,
    forks: int | None = None,
    become: bool = False,
    timeout: float | None = None,
    max_fail_percentage: float = 0.0,
    retry: RetryPolicy | None = None,
    project_dir: Path | None = None,
    raise_on_failure: bool = True,
    host_lock: bool = True,
    lock_timeout: float | None = None,
    ssh_key_secret: str | None = None,
    become_password_secret: str | None = None,
    vault_password_secret: str | None = None,
    blackout_policy: BlackoutPolicy | None = None,
) -> PlaybookResult:
    """Run an Ansible playbook against an inventory and return what happened on every host.

    Args:
        playbook: Name under playbooks/ ("site") or a path.
        inventory: Environment under inventory/ ("lab", "staging") or a path.
        limit: Ansible host pattern narrowing the run ("web:&eu", "db-01").
        tags / skip_tags: Only run / skip tasks with these tags.
        extra_vars: Variables the playbook declares (playbooks/params/<playbook>.yml);
            anything else is refused. They reach Ansible as values, never as templates
            (every string !unsafe), through a 0600 file in the run's private dir.
        check / diff: Ansible's --check and --diff.
        forks: Parallel hosts; default: the number of targeted hosts, at most 50.
        become: Ansible's --become.
        timeout: Seconds for the whole run, retries included; then it is killed.
        max_fail_percentage: Share of hosts allowed to fail or be unreachable (default 0).
        retry: Retry only the failed/unreachable hosts (default: a single attempt).
        project_dir: Repository root (default: FLEETFLOW_PROJECT_DIR or the current checkout).
        raise_on_failure: Raise PlaybookFailed/TimedOut/Canceled (carrying the result).
        host_lock: Wait until no other run is playing on any of the targeted hosts, and
            keep them to this run until it ends (Prefect global concurrency limits).
        lock_timeout: Seconds to wait for those hosts; then HostLockTimeout, nothing run.
        ssh_key_secret / become_password_secret / vault_password_secret: Names of Prefect
            Secret blocks (CI: FLEETFLOW_SECRET_<NAME>) with the SSH private key (used
            unless the inventory names a key file), the become password (answered to
            Ansible's prompt) and the ansible-vault password. Values are masked in logs,
            results and artifacts; files holding them live in the run's private dir only.
        blackout_policy: What to do when a blackout window (inventory/<env>/blackouts.yml)
            is open over a targeted host: "wait" until it closes (holding no host lock) or
            "fail" (InBlackout, nothing run); default: the window's, else the file's.
            Check-mode runs are never held back.

    Bad input (unknown playbook or inventory, syntax errors, a limit matching no host,
    undeclared or ill-typed extra_vars, Ansible's connection or magic variables) raises
    ConfigurationError before any host is touched. Inside `time_limit`, the run gets at
    most what is left of it.
    """
    settings = get_settings()
    secrets = RunSecrets.load(ssh_key_secret, become_password_secret, vault_password_secret)
    masked = _masked_values(secrets, inventory, (project_dir or settings.project_dir).resolve())
    request = RunRequest(
        playbook=playbook,
        inventory=inventory,
        project_dir=(project_dir or settings.project_dir).resolve(),
        limit=limit,
        tags=tuple(tags or ()),
        skip_tags=tuple(skip_tags or ()),
        extra_vars=dict(extra_vars or {}),
        check=check,
        diff=diff,
        forks=forks,
        become=become,
        timeout=_bounded(timeout),
        max_fail_percentage=max_fail_percentage,
        retry=retry or RetryPolicy(),
        run_dir=settings.run_dir,
        secrets=secrets,
        guard=_guard(settings),
    )
    with RunLog(get_run_logger(), masked) as logger:
        return _run(
            request, settings, logger,
            host_lock=host_lock, lock_timeout=lock_timeout, raise_on_failure=raise_on_failure,
            blackout_policy=blackout_policy,
        )  # fmt: skip


def _guard(settings: FleetflowSettings) -> GuardConfig:
    run_id = current_flow_run_id()
    return GuardConfig(
        enabled=settings.remote_guard,
        policy=settings.ghost_policy,
        run_id=str(run_id) if run_id else "local",
    )


def _masked_values(secrets: RunSecrets, inventory: str, project_dir: Path) -> list[str]:
    """The run's secrets and, with a vault password, every vaulted value it can open."""
    values = secrets.values()
    if secrets.vault_password is None:
        return values
    from fleetflow.engine._vault import vaulted_values  # imports Ansible: only for vaulted projects

    roots = [project_dir / "playbooks", project_dir / "roles"]
    with contextlib.suppress(ConfigurationError):  # the preflight says what is wrong
        roots.append(resolve_inventory(inventory, project_dir))
    vaulted = vaulted_values(roots, secrets.vault_password.get_secret_value())
    return sorted({*values, *vaulted}, key=len, reverse=True)


def _groups(inventory: str | Path, project_dir: Path) -> dict[str, list[str]]:
    try:
        return host_groups(resolve_inventory(inventory, project_dir), project_dir)
    except ConfigurationError:
        return {}  # the preflight says what is wrong with it


def _run(
    request: RunRequest,
    settings: FleetflowSettings,
    logger: RunLog,
    *,
    host_lock: bool,
    lock_timeout: float | None,
    raise_on_failure: bool,
    blackout_policy: BlackoutPolicy | None = None,
) -> PlaybookResult:
    request = replace(request, tuning=tuning(settings, logger))
    background = ThreadPoolExecutor(1, thread_name_prefix="fleetflow-groups")
    # Metric labels only: read beside the preflight, on the other core, not while Ansible
    # runs (where it took CPU from ansible-playbook).
    groups = background.submit(_groups, request.inventory, request.project_dir)
    source = background.submit(describe, request.project_dir)
    try:
        plan = preflight(request)
        if request.secrets.vault_password is None:
            require_vault_password(plan.inventory)
    finally:
        background.shutdown(wait=False)
    logger.info(
        "%s on %s: %d hosts, %d tasks%s; %s",
        plan.playbook.name, request.inventory, len(plan.hosts), plan.task_count,
        " (check mode)" if request.check else "", source.result(),
    )  # fmt: skip
    if not request.check:  # check mode changes nothing: never held back by a blackout
        gate_run(plan.inventory, plan.hosts, groups.result, logger, policy=blackout_policy)
    with (
        host_locks(plan.hosts, lock_timeout, logger) if host_lock else nullcontext(),
        progress_artifact(plan.playbook, request.inventory) as progress,
    ):
        mark_reached(current_flow_run_id())
        result = execute(request, plan, run_ansible, logger, on_collector=progress.follow)
    result = result.model_copy(update={"source": source.result()})
    result = publish_run(
        result, playbook=plan.playbook, inventory=request.inventory,
        groups=groups.result(), progress=progress, log=logger,
    )  # fmt: skip
    tag_flow_run(result)
    if raise_on_failure and result.status in _ERRORS:
        raise _ERRORS[result.status](result.message or result.summary(), result)
    return result


@task(name="resolve_hosts", cache_policy=NO_CACHE)
def resolve_hosts(
    playbook: str,
    *,
    inventory: str = "lab",
    limit: str | None = None,
    extra_vars: dict[str, Any] | None = None,
    project_dir: Path | None = None,
) -> list[str]:
    """The hosts a playbook would run on, resolved by Ansible without contacting them.

    With `extra_vars`, they are checked as a run would check them (a runbook checks every
    step before the first runs); without, the playbook's variables are not looked at.
    """
    project = (project_dir or get_settings().project_dir).resolve()
    request = RunRequest(playbook, inventory, project, limit=limit, extra_vars=extra_vars)
    return list(preflight(request).hosts)
