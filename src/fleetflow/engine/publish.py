"""What a finished playbook run tells the rest of the system, as Prefect events.

- `fleetflow.host.failed` / `fleetflow.host.unreachable`, one per such host: automations
  alert on them (deployments/automations/).
- `fleetflow.playbook.finished`, one per run, with every host as a related resource and
  its outcome, changed count, attempts and inventory groups in the payload: the
  Prometheus exporter counts from it and `fleetflow history HOST` reads it back. Prefect
  refuses events with over 100 related resources, so a run over more than HOST_CHUNK
  hosts sends one event per chunk of hosts (payload `part` 1..`parts`); the run's own
  numbers count from part 1 only.

Inside a run, Prefect relates each event to the flow run, task run and deployment.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect.events import emit_event

from fleetflow.results import HostStatus, PlaybookResult

PLAYBOOK_EVENT = "fleetflow.playbook.finished"
HOST_RESOURCE = "fleetflow.host."
# Room for Prefect's own related resources (flow run, task run, deployment, tags...).
HOST_CHUNK = 80


def emit_run_events(
    result: PlaybookResult, groups: Mapping[str, list[str]], ansible_events: int, log_lines: int
) -> None:
    _emit_host_events(result)
    payload = playbook_payload(result, groups, ansible_events, log_lines)
    hosts = sorted(result.hosts)
    parts = list(itertools.batched(hosts, HOST_CHUNK)) or [()]
    for number, part in enumerate(parts, start=1):
        emit_event(
            event=PLAYBOOK_EVENT,
            resource=playbook_resource(result.playbook),
            related=[
                {
                    "prefect.resource.id": f"{HOST_RESOURCE}{host}",
                    "prefect.resource.role": "host",
                    "prefect.resource.name": host,
                }
                for host in part
            ],
            payload={
                **payload,
                "hosts": {host: payload["hosts"][host] for host in part},
                "part": number,
                "parts": len(parts),
            },
        )


def playbook_resource(playbook: str) -> dict[str, str]:
    """The resource of a playbook's events (runs, change decisions): one id per playbook."""
    name = Path(playbook).stem
    return {"prefect.resource.id": f"fleetflow.playbook.{name}", "prefect.resource.name": name}


def playbook_payload(
    result: PlaybookResult, groups: Mapping[str, list[str]], ansible_events: int, log_lines: int
) -> dict[str, Any]:
    """The run in numbers; label-like values are short names (playbook, inventory dir)."""
    return {
        "playbook": Path(result.playbook).stem,
        "inventory": Path(result.inventory).name,
        "status": result.status.value,
        "check": result.check,
        "duration_seconds": round((result.finished_at - result.started_at).total_seconds(), 3),
        "attempts": result.attempts,
        "ansible_events": ansible_events,
        "log_lines": log_lines,
        "hosts": {
            host: {
                "status": outcome.status.value,
                "changed": outcome.changed,
                "attempts": outcome.attempts,
                "groups": list(groups.get(host, [])),
            }
            for host, outcome in sorted(result.hosts.items())
        },
    }


def _emit_host_events(result: PlaybookResult) -> None:
    for host, outcome in sorted(result.hosts.items()):
        if outcome.status not in (HostStatus.FAILED, HostStatus.UNREACHABLE):
            continue
        emit_event(
            event=f"fleetflow.host.{outcome.status.value}",
            resource={
                "prefect.resource.id": f"{HOST_RESOURCE}{host}",
                "prefect.resource.name": host,
            },
            payload={
                "playbook": result.playbook,
                "inventory": result.inventory,
                "task": outcome.failure.task if outcome.failure else "",
                "message": outcome.failure.message if outcome.failure else outcome.status.value,
            },
        )
