"""Change control: plan a playbook run, wait for a person to approve it, then apply it.

1. Plan: the playbook runs in check + diff mode; nothing on the hosts changes. The plan
   (hosts that would change, each changed task and its diff, secrets censored) is a
   markdown artifact of the flow run, key `plan`.
2. Approve: the flow run pauses with a typed form (`Approval`: approve/reject, approver,
   comment) that the Prefect UI shows on Resume, or that a script posts to the API
   (`POST /flow_runs/<id>/resume` with `{"run_input": {...}}`). With `approvers`, only
   those names may decide; anyone else's answer is logged and the run keeps waiting.
3. Apply: only an approval runs the playbook for real, and only the content planned: the
   files the run reads (playbooks/, roles/, scripts/, galaxy/, ansible.cfg and the
   inventory) are fingerprinted at plan time and again before applying; if any differs,
   the run fails with ContentChanged naming each changed file, nothing applied (outcome
   `refused`). A deployed run reads one commit's checkout, so this catches an edit on the
   worker's disk; a run from a working tree, a commit or edit made while it waited. A
   rejection or no decision within the timeout ends the run Cancelled (not Failed:
   nothing broke, nothing was applied) with the reason in its state message; the
   decision is an artifact (key `approval`) and a
   `fleetflow.change.<approved|rejected|expired|refused>` event.

A plan that changes nothing needs no approval: the run completes at once.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import cast

from prefect import State, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.input import RunInput
from prefect.states import Cancelled
from pydantic import Field

from fleetflow._prefect import propose_pause
from fleetflow.engine.inventory import resolve_inventory
from fleetflow.engine.publish import playbook_resource
from fleetflow.engine.source import changed_paths, content_digest
from fleetflow.exceptions import ApprovalError, ContentChanged, PlaybookFailed
from fleetflow.flowkit.summary import markdown_table
from fleetflow.results import PlaybookResult, RunStatus
from fleetflow.settings import get_settings

__all__ = ["Approval", "Decision", "plan_and_apply", "plan_markdown"]

# A plan artifact larger than this is cut (the server keeps artifacts in its database).
MAX_PLAN_CHARS = 200_000
MAX_DIFF_LINES = 400
# Seconds the server keeps a paused run resumable after fleetflow stopped waiting.
PAUSE_GRACE = 120


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class Approval(RunInput):
    """The answer to a plan: the form the Prefect UI shows when the run is resumed."""

    decision: Decision = Field(
        description="approve: apply the plan now. reject: end the run, nothing applied."
    )
    approver: str = Field(min_length=1, max_length=100, description="Who decides (name, login).")
    comment: str = Field(default="", max_length=2000, description="Why; kept with the run.")


def plan_and_apply(
    run: Callable[[bool], PlaybookResult],
    *,
    timeout: int = 3600,
    approvers: Sequence[str] = (),
    poll_interval: int = 5,
    inventory: str | None = None,
) -> PlaybookResult | State:
    """Plan, pause for approval (at most `timeout` s), apply on approval.

    `run(check)` runs the playbook with everything but check mode fixed; check runs must
    also ask for diffs (they are the plan).

    `inventory` (the run's, by name) lets the content be fingerprinted before the plan
    runs; without it, right after.

    Returns the applied run's result, the plan's when nothing would change, or a
    Cancelled state (for the flow to return) when the change was rejected or expired.
    Raises PlaybookFailed when the plan itself fails on a host: nothing is applied.
    """
    logger = get_run_logger()
    project = get_settings().project_dir
    # Before the plan runs: an edit made while it runs must count as a change too.
    planned = _digest(project, inventory) if inventory else None
    plan = run(True)
    planned = planned or _digest(project, plan.inventory)
    create_markdown_artifact(plan_markdown(plan), key="plan", description=plan.summary())
    if plan.status != RunStatus.SUCCESSFUL:
        raise PlaybookFailed(f"the plan failed, nothing was applied: {plan.message}", plan)
    if not plan.changed_hosts:
        logger.info("nothing would change on any host: no approval needed, nothing applied")
        return plan
    logger.info(
        "plan: %d of %d hosts would change (%s); waiting up to %d s for approval",
        len(plan.changed_hosts), len(plan.hosts), ", ".join(plan.changed_hosts), timeout,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    approval = _wait_for_approval(plan, deadline, tuple(approvers), poll_interval)
    if approval is None:
        return _refuse(plan, "expired", f"no decision within {timeout} s: nothing was applied")
    if approval.decision == Decision.REJECT:
        because = f": {approval.comment}" if approval.comment else ""
        return _refuse(plan, "rejected", f"rejected by {approval.approver}{because}", approval)
    if changes := changed_paths(planned, _digest(project, plan.inventory)):
        reason = (f"approved by {approval.approver}, not applied: the content changed since "
                  f"the plan ({plan.source or 'content unknown'}): {', '.join(changes[:20])}"
                  + (f" and {len(changes) - 20} more" if len(changes) > 20 else ""))  # fmt: skip
        _record(plan, "refused", reason, approval)
        raise ContentChanged(reason)
    logger.info("approved by %s%s; applying", approval.approver, _said(approval))
    _record(plan, "approved", f"approved by {approval.approver}", approval)
    applied = run(False)
    if unplanned := sorted(set(applied.changed_hosts) - set(plan.changed_hosts)):
        logger.warning("hosts changed that the plan did not show: %s", ", ".join(unplanned))
    return applied


def _digest(project: Path, inventory: str) -> dict[str, str]:
    return content_digest(project, resolve_inventory(inventory, project))


def _said(approval: Approval) -> str:
    return f" ({approval.comment})" if approval.comment else ""


def _wait_for_approval(
    plan: PlaybookResult, deadline: float, approvers: tuple[str, ...], poll: float
) -> Approval | None:
    """The first decision by an allowed approver, or None at `deadline` (monotonic)."""
    logger = get_run_logger()
    form = Approval.with_initial_data(description=_form_text(plan, approvers))
    for round_ in itertools.count(1):
        if deadline - time.monotonic() < 1:
            return None
        answer = _pause(form, f"approval-{round_}", deadline, poll)
        if answer is None or not approvers or answer.approver in approvers:
            return answer
        logger.warning(
            "%s may not decide this change (approvers: %s): %s ignored, still waiting",
            answer.approver, ", ".join(approvers), answer.decision.value,
        )  # fmt: skip
    return None  # itertools.count does not end; mypy cannot know


def _pause(form: type[Approval], key: str, deadline: float, poll: float) -> Approval | None:
    """Pause the flow run for `form`'s answer; None at `deadline` (monotonic) without one.

    Prefect's pause_flow_run gives the server the same deadline as its own wait, and a
    run leaving Paused after that deadline is forced to Failed ("never resumed"): an
    expired approval would alert like a broken run. So the server gets PAUSE_GRACE more
    seconds than this wait, and the run ends Cancelled, with the reason, inside them.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise ApprovalError("approval needs a flow run to pause")
    run_id = context.flow_run.id
    seconds = int(deadline - time.monotonic()) + PAUSE_GRACE
    with get_client(sync_client=True) as client:
        state, keyset = propose_pause(client, run_id, timeout_seconds=seconds, pause_key=key)
        if not state.is_paused():
            raise ApprovalError(f"the flow run could not pause for approval: {state}")
        form.save(keyset)
        while True:
            time.sleep(max(min(poll, deadline - time.monotonic()), 0))
            current = client.read_flow_run(run_id).state
            if current is not None and current.is_running():
                return cast(Approval, form.load(keyset))  # sync in a sync flow
            if time.monotonic() >= deadline:
                return None


def _refuse(
    plan: PlaybookResult, outcome: str, reason: str, approval: Approval | None = None
) -> State:
    get_run_logger().warning("change %s: %s", outcome, reason)
    _record(plan, outcome, reason, approval)
    return Cancelled(message=f"change {outcome}: {reason}")


def _record(plan: PlaybookResult, outcome: str, reason: str, approval: Approval | None) -> None:
    """The decision as an artifact of the run and an event (the audit trail)."""
    rows = [
        ("outcome", f"**{outcome}**"),
        ("reason", reason),
        ("approver", approval.approver if approval else "-"),
        ("comment", approval.comment if approval and approval.comment else "-"),
        ("hosts in the plan", ", ".join(plan.changed_hosts)),
        ("content planned", str(plan.source) if plan.source else "-"),
    ]
    table = markdown_table((), rows)
    create_markdown_artifact(table, key="approval", description=f"change {outcome}")
    emit_event(
        event=f"fleetflow.change.{outcome}",
        resource=playbook_resource(plan.playbook),
        payload={
            "playbook": Path(plan.playbook).stem,
            "inventory": Path(plan.inventory).name,
            "reason": reason,
            "approver": approval.approver if approval else "",
            "comment": approval.comment if approval else "",
            "hosts": plan.changed_hosts,
            "commit": plan.source.commit if plan.source else "",
            "dirty": plan.source.dirty if plan.source else True,
        },
    )


def _form_text(plan: PlaybookResult, approvers: Sequence[str]) -> str:
    who = f" Allowed approvers: {', '.join(approvers)}." if approvers else ""
    return (
        f"**{plan.summary()}**\n\nPlanned with {plan.source or 'content unknown'}."
        f" The plan artifact of this run shows each change and its diff."
        f" Approve to apply it now; reject to end the run with nothing applied.{who}"
    )


def _diff_block(diff: str) -> list[str]:
    lines = diff.splitlines()
    if len(lines) > MAX_DIFF_LINES:
        cut = len(lines) - MAX_DIFF_LINES
        lines = [*lines[:MAX_DIFF_LINES], f"... {cut} more lines not shown"]
    fence = "````" if "```" in diff else "```"
    return [f"{fence}diff", *lines, fence]


def _host_rows(plan: PlaybookResult) -> list[tuple[str, str, int, str]]:
    rows = []
    for host, result in sorted(plan.hosts.items()):
        failure = result.failure
        failure_text = f"{failure.task}: {failure.message}" if failure else ""
        rows.append((host, result.status.value, len(result.changes), failure_text))
    return rows


def plan_markdown(plan: PlaybookResult) -> str:
    """The plan as markdown: a table of hosts, then every host's changed tasks and diffs."""
    out = [
        f"# Plan: {Path(plan.playbook).stem} on {Path(plan.inventory).name}",
        "",
        f"**{plan.summary()}**" + (f" (limit `{plan.limit}`)" if plan.limit else ""),
        "",
        markdown_table(("host", "status", "would change", "failure"), _host_rows(plan)),
    ]
    for host, result in sorted(plan.hosts.items()):
        if not result.changes:
            continue
        out += ["", f"## {host}"]
        for change in result.changes:
            out += ["", f"### {change.task}"]
            out += _diff_block(change.diff) if change.diff else ["(changes; no diff shown)"]
    text = "\n".join(out) + "\n"
    if len(text) > MAX_PLAN_CHARS:
        text = text[:MAX_PLAN_CHARS] + f"\n\n... plan cut at {MAX_PLAN_CHARS} characters\n"
    return text
