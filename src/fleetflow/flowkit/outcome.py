"""How a flow ends when something expected goes wrong: a state that says why, no traceback.

Prefect turns an exception escaping a flow into a Failed state whose message is the
exception's text, and logs a traceback for it: right for a bug, noise for a host that
failed. `@reports_outcome` (under `@flow`) catches fleetflow's own errors and ends the run
with a state made for reading instead (the alerts and `fleetflow run --watch` show its
message), and appends the outcome to the run's name: Prefect 3.9's UI shows a run's name
in full on the runs list and as the run page's title, but its state message nowhere
above the fold (tests/integration/test_ui.py reads the rendered pages):

- Failed, naming the failed hosts with their reasons (the first MAX_HOSTS_NAMED, then
  "and N more"), when a playbook failed on hosts;
- Refused (a Failed state of another name), when the flow refused its input before any of
  its playbooks reached a host (e.g. a limit matching no host). Prefect emits
  `prefect.flow-run.Refused` for it, so the failure automation, which listens for
  `prefect.flow-run.Failed`, does not page anyone for a typo; the caller still sees a
  failed run (`prefect deployment run --watch` and `fleetflow run --watch` exit 1);
- Failed with the error's own message otherwise (a lock or time limit, a stopped rollout).

Anything else (a bug) still raises, with its traceback.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

from prefect import State, get_client, get_run_logger
from prefect.context import FlowRunContext
from prefect.states import Failed

from fleetflow.engine.flowrun import current_flow_run_id, is_host_tag, reached_hosts
from fleetflow.engine.publish import one_line
from fleetflow.exceptions import ConfigurationError, FleetflowError, PlaybookRunError
from fleetflow.results import PlaybookResult, RunStatus

__all__ = ["MAX_HOSTS_NAMED", "REFUSED", "base_name", "failure_message", "reports_outcome"]

REFUSED = "Refused"
MAX_HOSTS_NAMED = 3
_REASON_LIMIT = 200
_MESSAGE_LIMIT = 1500
# Long enough for a host, its task and the start of its reason; the list wraps it.
_NAME_LIMIT = 240
_OUTCOME_SEPARATOR = ": "


def reports_outcome[F: Callable[..., Any]](fn: F) -> F:
    """Decorate a flow function (below `@flow`) so expected failures end it as described
    in this module's docstring."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        run_id = current_flow_run_id()
        _forget_last_outcome()
        try:
            return fn(*args, **kwargs)
        except FleetflowError as exc:
            return _state_for(exc, refused=not reached_hosts(run_id))
        finally:
            reached_hosts(run_id, forget=True)

    # Prefect reads parameters and their types from the signature; the flows' annotations
    # are strings (PEP 563) that only resolve in the flow's own module.
    wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    wrapper.__annotations__ = typing.get_type_hints(fn, include_extras=True)
    return typing.cast(F, wrapper)


def _state_for(exc: FleetflowError, *, refused: bool) -> State[Any]:
    logger = get_run_logger()
    if refused and isinstance(exc, ConfigurationError):
        message = f"refused: {exc}"
        logger.error("%s; nothing was run", message)
        _append_to_name(message)
        return Failed(name=REFUSED, message=one_line(message, _MESSAGE_LIMIT), data=exc)
    message = str(exc)
    if isinstance(exc, PlaybookRunError) and message in (exc.result.message, exc.result.summary()):
        message = failure_message(exc.result)  # the engine's own words: say it shorter
    logger.error("%s", message)
    _append_to_name(message)
    # `exc` as the data: a caller of the flow function gets it raised, as before.
    return Failed(message=one_line(message, _MESSAGE_LIMIT), data=exc)


def _append_to_name(outcome: str) -> None:
    """Rename the flow run `<name>: <outcome>` (best effort: the state holds the truth)."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    run = context.flow_run
    name = one_line(f"{base_name(run.name)}{_OUTCOME_SEPARATOR}{outcome}", _NAME_LIMIT)
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run.id, name=name)
    except Exception as exc:  # a busy server must not turn an outcome into a crash
        get_run_logger().warning("could not put the outcome in the run's name: %s", exc)


def base_name(name: str) -> str:
    """A run's name without the outcome an attempt appended: Prefect's generated names
    (`crimson-fox`) and fleetflow's deployments have no ': ' of their own."""
    return name.split(_OUTCOME_SEPARATOR, 1)[0]


def _forget_last_outcome() -> None:
    """A retried run starts under its own name, without the last attempt's host tags:
    they said how that attempt ended, and a retry that completes must not keep them."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.run_count <= 1:
        return
    run_id = context.flow_run.id
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
            name, tags = base_name(run.name), [t for t in run.tags if not is_host_tag(t)]
            if (name, tags) != (run.name, run.tags):
                client.update_flow_run(run_id, name=name, tags=tags)
    except Exception as exc:  # as in _append_to_name
        get_run_logger().warning("could not clear the last attempt's outcome: %s", exc)


def failure_message(result: PlaybookResult) -> str:
    """`2 of 5 hosts failed: web-02 (unreachable at 'Gather facts': ...); ...; and N more`."""
    failed = result.failed_hosts
    if result.status != RunStatus.FAILED or not failed:
        return result.message or result.summary()
    named = []
    for host in failed[:MAX_HOSTS_NAMED]:
        r = result.hosts[host]
        where = (
            f" at '{r.failure.task}': {one_line(r.failure.message, _REASON_LIMIT)}"
            if r.failure
            else ""
        )
        named.append(f"{host} ({r.status.value}{where})")
    more = len(failed) - MAX_HOSTS_NAMED
    tail = f"; and {more} more" if more > 0 else ""
    noun = "host" if len(result.hosts) == 1 else "hosts"
    return (
        f"{len(failed)} of {len(result.hosts)} {noun} failed in {result.playbook}: "
        + "; ".join(named)
        + tail
    )
