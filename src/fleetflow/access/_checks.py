"""The body and query checks some policy rules name (`Check`): applied after the role
allowed the route, they refuse or rewrite what the caller sent before Prefect sees it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams

from fleetflow.access._policy import Check, Need

__all__ = ["BY_TAG", "SERVICE_ROLE", "Principal", "Refused", "apply_check", "parse_object"]

SERVICE_ROLE = "service"  # the stack's internal credential: workers and the stack's commands
# Tags that say something about a run's outcome or origin: only fleetflow sets them.
BY_TAG = "by:"  # by:<login>: who created the run (fleetflow history reads it)
RESERVED_TAG_PREFIXES = (BY_TAG, "failed:", "unreachable:")
_FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
# Fields of a run created from a deployment that an operator may send as they are;
# whatever else changes how or where the run executes.
_RUN_FIELDS = frozenset({"name", "parameters", "tags", "state", "idempotency_key"})
# Prefect's own clients send these with their empty defaults: harmless, dropped.
_EMPTY_BY_DEFAULT = (
    "context", "job_variables", "labels", "empirical_policy",
    "parent_task_run_id", "infrastructure_document_id", "work_queue_name",
)  # fmt: skip
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})

ReadUpstream = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Principal:
    """Who a request comes from, as the gateway checked it."""

    name: str
    role: str  # viewer|operator|approver|admin, or "service"
    rank: Need


class Refused(Exception):
    """The request is not forwarded; `status` and `message` go back to the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def parse_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise Refused(400, "the request body is not JSON") from exc
    if not isinstance(data, dict):
        raise Refused(400, "the request body is not a JSON object")
    return data


async def apply_check(
    check: Check, who: Principal, path: str, *, query: QueryParams, body: bytes,
    read: ReadUpstream,
) -> bytes:  # fmt: skip
    """The body to forward (maybe rewritten), or Refused."""
    if check == Check.SECRETS_QUERY:
        # Anything but a spelling of false: Prefect reads t, y, on, 1... as true.
        asked = query.getlist("include_secrets")
        if any(value.strip().lower() not in _FALSE for value in asked):
            _need_admin(who, "Secret values")
        return body
    if check == Check.SECRETS_BODY:
        if parse_object(body).get("include_secrets"):
            _need_admin(who, "Secret values")
        return body
    target = path.split("/")[2]
    if check == Check.CREATE_RUN:
        return _dump(await _create_run(who, target, parse_object(body), read))
    if check == Check.SET_STATE:
        await _set_state(who, target, parse_object(body), read)
        return body
    if check == Check.RESUME:
        return _dump(await _resume(who, target, parse_object(body), read))
    return body


def _need_admin(who: Principal, what: str) -> None:
    if who.rank < Need.ADMIN:
        raise Refused(403, f"{what} need the admin role; {who.name} is {who.role}")


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


async def _create_run(
    who: Principal, deployment_id: str, data: dict[str, Any], read: ReadUpstream
) -> dict[str, Any]:
    if who.rank < Need.ADMIN:
        _only_run_fields(who, data)
        await _parameters_in_schema(deployment_id, data.get("parameters") or {}, read)
        data["enforce_parameter_schema"] = True
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise Refused(400, "tags must be a list of strings")
    kept = [t for t in tags if not t.startswith(RESERVED_TAG_PREFIXES)]
    data["tags"] = [*kept, f"{BY_TAG}{who.name}"]
    return data


def _only_run_fields(who: Principal, data: dict[str, Any]) -> None:
    # The UI's run form always asks for the schema check; the gateway forces it anyway.
    data.pop("enforce_parameter_schema", None)
    for key in _EMPTY_BY_DEFAULT:
        if key in data and _all_empty(data[key]):
            del data[key]
    extra = sorted(set(data) - _RUN_FIELDS)
    if extra:
        raise Refused(
            403, f"{', '.join(extra)} may only be set by an admin; {who.name} is {who.role}"
        )
    state = data.get("state")
    if state is not None and (not isinstance(state, dict) or state.get("type") != "SCHEDULED"):
        raise Refused(403, "a run can only be created Scheduled")


def _all_empty(value: Any) -> bool:
    if isinstance(value, dict):
        return all(not v or _all_empty(v) for v in value.values())
    return not value


async def _parameters_in_schema(deployment_id: str, parameters: Any, read: ReadUpstream) -> None:
    if not isinstance(parameters, dict):
        raise Refused(400, "parameters must be a JSON object")
    deployment = await read(f"/deployments/{deployment_id}")
    schema = deployment.get("parameter_openapi_schema") or {}
    known = set((schema.get("properties") or {}).keys())
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise Refused(
            403,
            f"parameters not in deployment {deployment.get('name', deployment_id)}'s schema: "
            f"{', '.join(unknown)}",
        )


async def _set_state(who: Principal, run_id: str, data: dict[str, Any], read: ReadUpstream) -> None:
    if who.rank >= Need.ADMIN:
        return
    state = data.get("state")
    kind = state.get("type") if isinstance(state, dict) else None
    if kind == "CANCELLING":
        return
    if kind == "SCHEDULED":
        run = await read(f"/flow_runs/{run_id}")
        current = (run.get("state") or {}).get("type")
        if current in _FINAL_STATES:
            return
        raise Refused(403, f"only a finished run can be retried; this one is {current}")
    raise Refused(403, f"setting a run to {kind} needs the admin role; {who.name} is {who.role}")


async def _resume(
    who: Principal, run_id: str, data: dict[str, Any], read: ReadUpstream
) -> dict[str, Any]:
    """The approval carries the login's name, whatever the form said."""
    if who.role == SERVICE_ROLE:
        # The stack's own credential (workers, scripts on the stack's machine): it speaks
        # for whoever it names, as the server it holds the key to would let it anyway.
        return data
    run = await read(f"/flow_runs/{run_id}")
    approvers = (run.get("parameters") or {}).get("approvers") or []
    if approvers and who.name not in approvers:
        raise Refused(
            403, f"{who.name} is not among this run's approvers ({', '.join(map(str, approvers))})"
        )
    run_input = data.get("run_input")
    if isinstance(run_input, dict):
        run_input["approver"] = who.name
    return data
