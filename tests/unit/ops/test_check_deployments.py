"""`fleetflow check` of deployment triggers: templated parameters are accepted unread,
fixed ones are checked like the deployment's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetflow.ops.check.deployments import check_deployment

REPO = Path(__file__).resolve().parents[3]
KNOWN = {"fleetflow": {"lab"}}


def _check(triggers: list[dict[str, Any]]) -> list[str]:
    spec = {
        "name": "on-event",
        "entrypoint": "flows/wait_then_run.py:wait_then_run",
        "parameters": {"inventory": "lab"},
        "work_pool": {"name": "fleetflow", "work_queue_name": "lab"},
        "triggers": triggers,
    }
    return [p.message for p in check_deployment(REPO, spec, KNOWN, lambda *_: ["h"])]


def _trigger(**parameters: Any) -> dict[str, Any]:
    return {"type": "event", "expect": ["fleetflow.release.ready"], "parameters": parameters}


def test_jinja_templated_trigger_parameters_pass() -> None:
    assert _check([_trigger(
        playbook="{{ event.payload.playbook }}",
        limit="{{ event.payload.limit | default(none) }}",
        extra_vars="{{ event.payload.extra_vars | default({}) }}",
        conditions={"__prefect_kind": "jinja", "template": "{{ event.payload.conditions }}"},
    )]) == []  # fmt: skip


def test_fixed_trigger_parameters_are_checked_against_the_flow() -> None:
    problems = _check([_trigger(playbook="", limit="{{ event.payload.limit }}", colour="red")])
    assert "unknown parameter 'colour'" in problems
    assert any(p.startswith("parameter playbook:") for p in problems), problems


def test_unknown_templated_parameter_and_invalid_trigger_are_reported() -> None:
    invalid = {"type": "event", "within": -1}
    problems = _check([_trigger(hosts="{{ event.payload.hosts }}"), invalid])
    assert problems[0] == "unknown parameter 'hosts'"
    assert problems[1].startswith("invalid trigger:"), problems
