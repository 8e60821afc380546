"""runbook: playbooks run as numbered steps; a retried run resumes at the step that failed.

Every step is checked before the first one runs (a typo in step 5 must not surface after
steps 1-4 changed the fleet). Each step is a task whose result is persisted and cached
per flow run (Prefect's RUN_ID + INPUTS cache policy), so retrying a failed run
(`prefect flow-run retry <id>`, or Retry in the UI) serves the steps that already
succeeded from the cache without running them, and runs the failed step and the rest.
A new flow run runs every step. Results are kept where Prefect keeps results
(PREFECT_LOCAL_STORAGE_PATH); workers on several machines need a shared one to resume
each other's runs.
"""

from __future__ import annotations

from typing import Annotated, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS, RUN_ID
from prefect.runtime import flow_run
from pydantic import Field

from fleetflow import ConfigurationError, PlaybookResult, PlaybookRunError, run_playbook
from fleetflow.engine.run import resolve_hosts
from fleetflow.engine.run import time_limit as limited
from fleetflow.flowkit.outcome import failure_message, reports_outcome
from fleetflow.flowkit.params import DEFAULT_TIME_LIMIT, Inventory, Step, TimeLimit
from fleetflow.flowkit.summary import markdown_table

Steps = Annotated[list[Step], Field(min_length=1, max_length=100)]


@task(
    name="runbook_step",
    task_run_name="step {number}: {title}",
    cache_policy=RUN_ID + INPUTS,
    persist_result=True,
)
def run_step(number: int, title: str, step: Step, inventory: str) -> PlaybookResult:
    """Run one step; its number is part of the cache key, so a step repeated later runs."""
    del number, title  # cache key and run name only
    return run_playbook.fn(
        step.playbook, inventory=inventory, limit=step.limit, extra_vars=dict(step.extra_vars)
    )


def _check(steps: list[Step], inventory: str) -> None:
    for number, step in enumerate(steps, start=1):
        try:
            resolve_hosts.fn(
                step.playbook, inventory=inventory, limit=step.limit,
                extra_vars=dict(step.extra_vars),
            )  # fmt: skip
        except ConfigurationError as exc:
            raise ConfigurationError(f"step {number} ({step.title}): {exc}") from exc


@flow(name="runbook", log_prints=True)
@reports_outcome
def runbook(
    steps: Steps, inventory: Inventory = "lab", time_limit: TimeLimit = DEFAULT_TIME_LIMIT
) -> list[dict[str, object]]:
    """Run `steps` in order, stopping at the first that fails; retry the run to resume there.

    Returns one row per step: what happened to it in this attempt ("ran", "done earlier"
    when served from an earlier attempt of this run, "failed", "not run") and its hosts.

    Args:
        steps: The steps in order (1-100): each a playbook with its own name, host pattern and
            variables.
        inventory: The environment to run on (inventory/<name>/), by name.
        time_limit: Seconds the whole run may take (at most a day); then it is stopped.
    """
    with limited(time_limit):
        return _run(steps, inventory)


def _run(steps: list[Step], inventory: str) -> list[dict[str, object]]:
    logger = get_run_logger()
    _check(steps, inventory)
    rows: list[dict[str, object]] = [
        {"step": n, "title": s.title, "outcome": "not run", "changed": "", "summary": ""}
        for n, s in enumerate(steps, start=1)
    ]
    failure: BaseException | None = None
    for row, step in zip(rows, steps, strict=True):
        state = run_step(row["step"], step.title, step, inventory, return_state=True)
        if not state.is_completed():
            row["outcome"] = "failed"
            failure = cast(BaseException, state.result(raise_on_failure=False))
            break
        result: PlaybookResult = state.result()
        cached = state.name == "Cached"
        row["outcome"] = "done earlier" if cached else "ran"
        row["changed"] = ", ".join(result.changed_hosts) or "none"
        row["summary"] = result.summary()
        if cached:
            logger.info("step %s (%s) succeeded in an earlier attempt: not run again",
                        row["step"], step.title)  # fmt: skip
    _publish(rows)
    if failure is not None:
        raise _stopped(rows, failure)
    return rows


def _stopped(rows: list[dict[str, object]], failure: BaseException) -> BaseException:
    failed = next(r for r in rows if r["outcome"] == "failed")
    hint = f"step {failed['step']} ({failed['title']}) failed: {failure}"
    if isinstance(failure, PlaybookRunError):
        hint = f"step {failed['step']} ({failed['title']}): {failure_message(failure.result)}"
        return type(failure)(
            f"{hint}. Retry flow run {flow_run.get_id()} to resume at step {failed['step']}.",
            failure.result,
        )
    return failure


def _publish(rows: list[dict[str, object]]) -> None:
    table = markdown_table(
        ("step", "what", "outcome", "changed hosts"),
        [(r["step"], r["title"], r["outcome"], r["changed"]) for r in rows],
    )
    create_markdown_artifact(table, key="runbook", description="Runbook steps")


if __name__ == "__main__":
    runbook([Step(playbook="ping", name="Check every host answers")])
