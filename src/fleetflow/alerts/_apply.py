"""Automations as code: make the server's fleetflow automations match the repository.

Each ``deployments/automations/*.yaml`` holds one automation in Prefect's own shape
(name, description, enabled, trigger, actions) plus ``notify:``, which becomes one
send-notification action per alert channel that exists. Only automations whose name
starts with ``fleetflow/`` are managed: apply creates, updates and deletes those to
match, and leaves everything else alone. Applying twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import SyncPrefectClient
from prefect.events.schemas.automations import AutomationCore
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, ConfigDict, ValidationError

from fleetflow.alerts._channels import resolve_channels
from fleetflow.exceptions import AlertError

__all__ = ["PREFIX", "Plan", "apply_plan", "load_specs", "plan"]

PREFIX = "fleetflow/"


class Notify(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: list[str]
    subject: str
    body: str


class StuckRuns(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expected_seconds: dict[str, int]
    notify: Notify


@dataclass(frozen=True)
class Spec:
    source: Path
    automation: dict[str, Any]
    notify: Notify | None
    deployment: str | None = None  # "flow/deployment" whose id the trigger needs


_FINAL = [f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")]


def _stuck_specs(source: Path, stuck: StuckRuns) -> list[Spec]:
    """One proactive automation per deployment: Running, then no final state in time."""
    specs = []
    for deployment, seconds in sorted(stuck.expected_seconds.items()):
        automation = {
            "name": f"{PREFIX}stuck/{deployment}",
            "description": f"A run of {deployment} is still Running after {seconds} s.",
            "enabled": True,
            "trigger": {
                "type": "event",
                "posture": "Proactive",
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "after": ["prefect.flow-run.Running"],
                "expect": _FINAL,
                "for_each": ["prefect.resource.id"],
                "threshold": 1,
                "within": seconds,
            },
        }
        specs.append(Spec(source, automation, stuck.notify, deployment))
    return specs


@dataclass
class Plan:
    create: list[AutomationCore] = field(default_factory=list)
    update: list[tuple[Any, AutomationCore, list[str]]] = field(default_factory=list)
    delete: list[tuple[Any, str]] = field(default_factory=list)  # (id, name)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing_channels: dict[str, list[str]] = field(default_factory=dict)
    # Enabled automations with no action once channels are resolved: they fire and tell
    # no one, which looks like working alerting; the CLI refuses them unless asked.
    silent: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return len(self.create) + len(self.update) + len(self.delete)

    def lines(self) -> list[str]:
        out = [f"+ create {a.name}" for a in self.create]
        out += [f"~ update {a.name} ({', '.join(diff)})" for _, a, diff in self.update]
        out += [f"- delete {name}" for _, name in self.delete]
        out += [f"= unchanged {name}" for name in self.unchanged]
        out += [f"? skipped {what}" for what in self.skipped]
        out += [
            f"! {name}: no channel {', '.join(chans)} (set FLEETFLOW_ALERT_* or make the block)"
            for name, chans in self.missing_channels.items()
        ]
        return out


def load_specs(directory: Path) -> list[Spec]:
    specs = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text()) or {}
            if "stuck_runs" in data:
                specs += _stuck_specs(path, StuckRuns.model_validate(data["stuck_runs"]))
                continue
            notify = Notify.model_validate(data.pop("notify")) if "notify" in data else None
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise AlertError(f"invalid automation file {path}: {exc}") from exc
        name = str(data.get("name", ""))
        if not name.startswith(PREFIX):
            raise AlertError(f"{path}: automation names must start with {PREFIX!r}, got {name!r}")
        specs.append(Spec(path, data, notify))
    names = [s.automation["name"] for s in specs]
    if len(set(names)) != len(names):
        raise AlertError(f"automation names repeat in {directory}: {sorted(names)}")
    return specs


def _desired(
    spec: Spec, channels: dict[str, Any], missing: list[str], deployment_id: Any = None
) -> AutomationCore:
    data = dict(spec.automation)
    if deployment_id is not None:
        related = {"prefect.resource.id": f"prefect.deployment.{deployment_id}"}
        data["trigger"] = {**data["trigger"], "match_related": related}
    actions = list(data.pop("actions", []))
    if spec.notify:
        for channel in spec.notify.channels:
            if channel not in channels:
                missing.append(channel)
                continue
            actions.append(
                {
                    "type": "send-notification",
                    "block_document_id": str(channels[channel]),
                    "subject": spec.notify.subject,
                    "body": spec.notify.body,
                }
            )
    try:
        return AutomationCore.model_validate({**data, "actions": actions})
    except ValidationError as exc:
        raise AlertError(f"invalid automation {spec.source}: {exc}") from exc


def _differences(current: AutomationCore, desired: AutomationCore) -> list[str]:
    """The fields the server's copy differs in (trigger ids are generated: ignored)."""
    keys = ("name", "description", "enabled", "trigger", "actions")
    # Python-mode dumps: `expect`/`after` stay sets, whose JSON order varies by process.
    ours, theirs = (a.model_dump(exclude={"trigger": {"id"}}) for a in (desired, current))
    return [k for k in keys if ours[k] != theirs[k]]


def plan(client: SyncPrefectClient, specs: list[Spec]) -> Plan:
    wanted = sorted({c for s in specs if s.notify for c in s.notify.channels})
    channels = resolve_channels(client, wanted)
    result = Plan()
    existing = {a.name: a for a in client.read_automations() if a.name.startswith(PREFIX)}
    for spec in specs:
        missing: list[str] = []
        deployment_id = None
        if spec.deployment:
            try:
                deployment_id = client.read_deployment_by_name(spec.deployment).id
            except ObjectNotFound:
                result.skipped.append(
                    f"{spec.automation['name']} (no deployment {spec.deployment})"
                )
                existing.pop(spec.automation["name"], None)  # keep it until the deployment returns
                continue
        desired = _desired(spec, channels, missing, deployment_id)
        if missing:
            result.missing_channels[desired.name] = missing
        if desired.enabled and not desired.actions:
            result.silent.append(desired.name)
        current = existing.pop(desired.name, None)
        if current is None:
            result.create.append(desired)
        elif diff := _differences(AutomationCore.model_validate(current.model_dump()), desired):
            result.update.append((current.id, desired, diff))
        else:
            result.unchanged.append(desired.name)
    result.delete = [(a.id, name) for name, a in sorted(existing.items())]
    return result


def apply_plan(client: SyncPrefectClient, todo: Plan) -> None:
    for automation in todo.create:
        client.create_automation(automation)
    for automation_id, automation, _diff in todo.update:
        client.update_automation(automation_id, automation)
    for automation_id, _name in todo.delete:
        client.delete_automation(automation_id)
