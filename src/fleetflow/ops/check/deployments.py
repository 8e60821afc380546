"""Checks of one prefect.yaml deployment, for `fleetflow check` (no server, no host)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
from prefect.events import DeploymentTriggerTypes
from prefect.flows import load_flow_from_entrypoint
from pydantic import TypeAdapter, ValidationError

from fleetflow._prefect import parameter_schema, validate
from fleetflow.engine.inventory import resolve_inventory
from fleetflow.exceptions import FleetflowError

__all__ = ["Problem", "check_deployment"]

_SCHEDULES: dict[str, Any] = {
    "cron": CronSchedule,
    "interval": IntervalSchedule,
    "rrule": RRuleSchedule,
}
LimitMatcher = Callable[[Path, Path, str], list[str]]
_TRIGGER: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)


@dataclass(frozen=True)
class Problem:
    """One finding of `fleetflow check`: an error, or a warning that does not fail it."""

    where: str
    message: str
    error: bool = True

    def __str__(self) -> str:
        return f"{'ERROR' if self.error else 'warning'} {self.where}: {self.message}"


def _parameters(where: str, flow: Any, params: dict[str, Any]) -> list[Problem]:
    schema = parameter_schema(flow).model_dump_for_openapi()
    problems = [
        Problem(where, f"unknown parameter {name!r}")
        for name in sorted(set(params) - set(schema.get("properties", {})))
    ]
    for error in validate(params, schema, raise_on_error=False, ignore_required=True):
        path = ".".join(str(p) for p in error.path) or "parameters"
        problems.append(Problem(where, f"parameter {path}: {error.message}"))
    return problems


def _templated(value: Any) -> bool:
    """A Jinja template (rendered from the event when the trigger fires) or Prefect's
    {"__prefect_kind": ...} form of one: its value is unknown until then."""
    if isinstance(value, dict):
        return "__prefect_kind" in value
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _triggers(where: str, flow: Any, triggers: list[Any]) -> list[Problem]:
    """Each trigger as `prefect deploy` reads it; its parameters by name, and by value
    where the value is not a template."""
    problems = []
    for number, spec in enumerate(triggers, start=1):
        at = f"{where} trigger {number}"
        try:
            trigger = _TRIGGER.validate_python(spec)
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            problems.append(Problem(at, f"invalid trigger: {reasons}"))
            continue
        params = dict(trigger.parameters or {})
        fixed = {k: v for k, v in params.items() if not _templated(v)}
        problems += _parameters(at, flow, fixed)
        problems += [
            Problem(at, f"unknown parameter {name!r}")
            for name in sorted(set(params) - set(fixed))
            if name not in inspect.signature(flow.fn).parameters
        ]
    return problems


def _schedules(where: str, schedules: list[dict[str, Any]]) -> list[Problem]:
    problems = []
    for entry in schedules:
        kind = next((k for k in _SCHEDULES if k in entry), None)
        if kind is None:
            problems.append(Problem(where, f"schedule without cron, interval or rrule: {entry}"))
            continue
        fields = {k: entry[k] for k in (kind, "timezone") if k in entry}
        try:
            _SCHEDULES[kind](**fields)
        except ValidationError as exc:
            reasons = "; ".join(str(e["msg"]) for e in exc.errors())
            problems.append(Problem(where, f"schedule {entry[kind]!r}: {reasons}"))
        except (ValueError, TypeError) as exc:
            problems.append(Problem(where, f"schedule {entry[kind]!r}: {exc}"))
        if kind == "cron" and "timezone" not in entry:
            problems.append(Problem(where, f"cron {entry[kind]!r} has no timezone", error=False))
    return problems


def _pool(where: str, spec: dict[str, Any], known: dict[str, set[str]]) -> list[Problem]:
    pool = spec.get("work_pool") or {}
    name, queue = pool.get("name"), pool.get("work_queue_name")
    if name not in known:
        return [Problem(where, f"work pool {name!r} is not the stack's ({sorted(known)})")]
    if queue is not None and queue not in known[name]:
        return [Problem(where, f"queue {queue!r} is not in pool {name} ({sorted(known[name])})")]
    return []


def _default(flow: Any, name: str) -> Any:
    parameter = inspect.signature(flow.fn).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def _limit(
    where: str, project_dir: Path, flow: Any, params: dict[str, Any], matcher: LimitMatcher
) -> list[Problem]:
    inventory = params.get("inventory", _default(flow, "inventory"))
    names = [n for n in ("limit", "hosts") if n in inspect.signature(flow.fn).parameters]
    pattern = next((params.get(n, _default(flow, n)) for n in names), None)
    if not inventory or not pattern:
        return []
    named = Path(str(inventory))
    candidate = named if named.is_absolute() else project_dir / "inventory" / named
    if candidate.is_dir() and not any(candidate.glob("hosts*")):
        return []  # not generated yet (the lab); the inventory check warns about it
    try:
        path = resolve_inventory(str(inventory), project_dir)
    except FleetflowError as exc:
        return [Problem(where, str(exc))]
    if not matcher(project_dir, path, str(pattern)):
        return [
            Problem(where, f"host pattern {pattern!r} matches no host of inventory {inventory}")
        ]
    return []


def check_deployment(
    project_dir: Path, spec: dict[str, Any], known: dict[str, set[str]], matcher: LimitMatcher
) -> list[Problem]:
    where = f"deployment {spec.get('name', '?')} ({spec.get('entrypoint', '?')})"
    entrypoint = str(spec.get("entrypoint", ""))
    try:
        flow: Any = load_flow_from_entrypoint(str(project_dir / entrypoint))
    except Exception as exc:  # any import or lookup failure is the finding
        return [Problem(where, f"cannot load flow: {type(exc).__name__}: {exc}")]
    params = dict(spec.get("parameters") or {})
    problems = _parameters(where, flow, params)
    problems += _schedules(where, list(spec.get("schedules") or []))
    problems += _pool(where, spec, known)
    problems += _triggers(where, flow, list(spec.get("triggers") or []))
    if not problems:
        problems += _limit(where, project_dir, flow, params, matcher)
    return problems
