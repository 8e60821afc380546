"""What a playbook run tells the flow run it belongs to.

- Tags `failed:<host>` / `unreachable:<host>`: Prefect's runs list shows a run's tags on
  its row and filters by them, so an operator sees which hosts failed without opening the
  run, and finds a host's failed runs by its tag. At most MAX_HOST_TAGS hosts are named;
  the rest are counted in one `failed:+N more` tag so a row stays readable.
- Whether any playbook of the flow run reached a host (`reached_hosts`): a flow refusing
  bad input before that is refused, not failed (fleetflow.flowkit.outcome).
- No traceback for an expected failure (`quiet_expected_failures`): Prefect logs a task or
  flow that raises with its traceback. For fleetflow's own errors (bad input, failed hosts,
  a lock or time limit) the message is the whole story and is already in the log; ~40
  lines of Python under it hid the reason from operators. A bug still gets its traceback.
"""

from __future__ import annotations

import logging
from uuid import UUID

from fleetflow.exceptions import FleetflowError
from fleetflow.results import HostStatus, PlaybookResult

__all__ = [
    "MAX_HOST_TAGS",
    "current_flow_run_id",
    "host_tags",
    "is_host_tag",
    "mark_reached",
    "quiet_expected_failures",
    "reached_hosts",
    "tag_flow_run",
]

logger = logging.getLogger(__name__)

MAX_HOST_TAGS = 5
_HOST_TAG_PREFIXES = (f"{HostStatus.FAILED.value}:", f"{HostStatus.UNREACHABLE.value}:")
# Flow runs of this process whose playbooks started on hosts. A flow run and its
# run_playbook tasks share the process; the flow forgets its id when it ends.
_REACHED: set[UUID] = set()


def current_flow_run_id() -> UUID | None:
    """The flow run this code runs in, if any (a bare call outside a flow has none)."""
    from prefect.context import FlowRunContext, TaskRunContext

    flow_context = FlowRunContext.get()
    if flow_context is not None and flow_context.flow_run is not None:
        return flow_context.flow_run.id
    task_context = TaskRunContext.get()
    return task_context.task_run.flow_run_id if task_context is not None else None


def mark_reached(flow_run_id: UUID | None) -> None:
    """Note that a playbook of this flow run is about to start on hosts."""
    if flow_run_id is not None:
        _REACHED.add(flow_run_id)


def reached_hosts(flow_run_id: UUID | None, *, forget: bool = False) -> bool:
    """Whether a playbook of this flow run started on hosts; `forget` drops the note."""
    if flow_run_id is None:
        return False
    reached = flow_run_id in _REACHED
    if forget:
        _REACHED.discard(flow_run_id)
    return reached


def is_host_tag(tag: str) -> bool:
    """Whether `tag` is one of host_tags' (they say how an attempt ended)."""
    return tag.startswith(_HOST_TAG_PREFIXES)


def host_tags(result: PlaybookResult) -> list[str]:
    """`failed:<host>` / `unreachable:<host>` for the first hosts by name."""
    bad = [
        f"{r.status.value}:{host}"
        for host, r in sorted(result.hosts.items())
        if r.status in (HostStatus.FAILED, HostStatus.UNREACHABLE)
    ]
    named = bad[:MAX_HOST_TAGS]
    if len(bad) > MAX_HOST_TAGS:
        named.append(f"failed:+{len(bad) - MAX_HOST_TAGS} more")
    return named


def tag_flow_run(result: PlaybookResult) -> None:
    """Add the result's host tags to the flow run this runs in (best effort: the tags are a
    view; the run's state and artifacts carry the truth)."""
    tags = host_tags(result)
    flow_run_id = current_flow_run_id()
    if not tags or flow_run_id is None:
        return
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(flow_run_id).tags
            merged = list(dict.fromkeys([*current, *tags]))
            client.update_flow_run(flow_run_id, tags=merged)
    except Exception as exc:  # a busy server must not turn a result into a crash
        logger.warning("could not tag the flow run with its failed hosts: %s", exc)


class _NoTracebackForExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], FleetflowError):
            if record.msg == _ENGINE_EXIT:
                # The flow run process ending on the flow's own (already logged) failure:
                # "unexpected exception" under an expected failure misled operators.
                return False
            record.exc_info, record.exc_text = None, None
        return True


# What Prefect's flow engine logs when a flow run process ends on a raised exception.
_ENGINE_EXIT = "Engine execution exited with unexpected exception"
_QUIET = _NoTracebackForExpected()
# The loggers Prefect's task and flow engines report a raised exception through.
_ENGINE_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


def quiet_expected_failures() -> None:
    """Log fleetflow's own errors from Prefect's engines without a traceback (idempotent)."""
    for name in _ENGINE_LOGGERS:
        engine_logger = logging.getLogger(name)
        if _QUIET not in engine_logger.filters:
            engine_logger.addFilter(_QUIET)
