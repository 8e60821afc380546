"""reference/flows.md: every deployed flow (an entrypoint of prefect.yaml) with the
parameter schema Prefect publishes for it, and each of its deployments."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleetflow._prefect import parameter_schema
from fleetflow.exceptions import ConfigurationError
from fleetflow.ops.reference._markdown import code, prose, table, text
from fleetflow.ops.reference._schema import Field, fields, fields_table, referenced

__all__ = ["Deployment", "FlowReference", "deployed_flows", "flows_page"]

_ARGS = re.compile(r"^(Args|Arguments|Parameters):\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Deployment:
    """One deployment of prefect.yaml, as an operator triggers and recognises it."""

    name: str
    description: str
    started_by: tuple[str, ...]
    work_pool: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class FlowReference:
    """A deployed flow: its docstring, its parameters, the models they take, its
    deployments."""

    name: str
    entrypoint: str
    summary: str
    schema: dict[str, Any]
    deployments: tuple[Deployment, ...]

    @property
    def parameters(self) -> list[Field]:
        return fields(self.schema)

    def models(self) -> dict[str, dict[str, Any]]:
        definitions: dict[str, dict[str, Any]] = self.schema.get("definitions", {})
        return {name: definitions[name] for name in referenced(self.schema)}


def deployed_flows(project_dir: Path) -> list[FlowReference]:
    """The flows prefect.yaml deploys, in the order it names them first."""
    from prefect.flows import load_flow_from_entrypoint

    specs = _deployment_specs(project_dir / "prefect.yaml")
    entrypoints = list(dict.fromkeys(str(spec.get("entrypoint")) for spec in specs))
    found = []
    for entrypoint in entrypoints:
        flow: Any = load_flow_from_entrypoint(str(project_dir / entrypoint))
        mine = [s for s in specs if s.get("entrypoint") == entrypoint]
        found.append(
            FlowReference(
                name=flow.name,
                entrypoint=entrypoint,
                summary=_ARGS.split(inspect.getdoc(flow.fn) or "", maxsplit=1)[0].strip(),
                schema=parameter_schema(flow).model_dump_for_openapi(),
                deployments=tuple(_deployment(flow.name, spec) for spec in mine),
            )
        )
    return found


def _deployment_specs(prefect_yaml: Path) -> list[dict[str, Any]]:
    try:
        data = yaml.safe_load(prefect_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read {prefect_yaml}: {exc}") from exc
    return list(data.get("deployments") or [])


def _deployment(flow: str, spec: dict[str, Any]) -> Deployment:
    started = [_schedule(s) for s in spec.get("schedules") or []]
    started += [
        "event " + ", ".join(code(e) for e in trigger.get("expect") or [])
        for trigger in spec.get("triggers") or []
        if trigger.get("type") == "event"
    ]
    pool = spec.get("work_pool") or {}
    where = f"{pool.get('name', '?')}, queue {pool.get('work_queue_name') or 'default'}"
    limit = spec.get("concurrency_limit")
    if limit:
        where += "; one run at a time" if limit == 1 else f"; at most {limit} runs at once"
    return Deployment(
        name=f"{flow}/{spec.get('name')}",
        description=str(spec.get("description") or ""),
        started_by=tuple(started) or ("on demand",),
        work_pool=where,
        parameters=dict(spec.get("parameters") or {}),
    )


def _schedule(spec: dict[str, Any]) -> str:
    if "cron" in spec:
        when = "cron " + code(str(spec["cron"]))
    elif "interval" in spec:
        when = f"every {spec['interval']} s"
    else:
        when = "rrule " + code(str(spec.get("rrule")))
    if spec.get("timezone"):
        when += f" ({spec['timezone']})"
    return when + ("" if spec.get("active", True) else ", paused")


def flows_page(project_dir: Path) -> str:
    """The flows reference page for the repository at `project_dir`."""
    lines = [
        "# Flows",
        "",
        "Generated when the site is built from the flows that `prefect.yaml` deploys: each "
        "flow's parameters as Prefect publishes them (the schema the server checks a run "
        "against, and the form the UI shows), then its deployments. Choices of playbooks, "
        "scripts and inventories are the repository's at build time; `fleetflow deploy` "
        "also narrows each deployment to the inventories it names.",
        "",
    ]
    for flow in deployed_flows(project_dir):
        lines += _flow_section(flow)
    return "\n".join(lines)


def _flow_section(flow: FlowReference) -> list[str]:
    lines = [f"## {flow.name}", "", code(flow.entrypoint), "", prose(flow.summary), ""]
    lines += ["### Parameters", "", fields_table(flow.parameters), ""]
    for name, model in flow.models().items():
        lines += [f"#### {name}", "", text(str(model.get("description", ""))), ""]
        lines += [fields_table(fields(model)), ""]
    rows = [
        (
            code(d.name),
            text(d.description),
            "<br>".join(d.started_by),
            text(d.work_pool),
            "<br>".join(code(f"{k}={json.dumps(v)}") for k, v in d.parameters.items()),
        )
        for d in flow.deployments
    ]
    lines += ["### Deployments", ""]
    lines += [table(("Deployment", "What it does", "Started by", "Work pool", "Sets"), rows), ""]
    return lines
