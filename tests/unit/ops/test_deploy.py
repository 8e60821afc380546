"""`fleetflow deploy`'s strict schemas: what the server refuses when a run is created."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from fleetflow._prefect import parameter_schema, validate
from fleetflow.exceptions import ConfigurationError
from fleetflow.ops.deploy import MAX_TIME_LIMIT, DeploymentRules, load_rules, strict_schema

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from flows.playbook import playbook  # noqa: E402
from flows.runbook import runbook  # noqa: E402

LAB = DeploymentRules("lab", "flows/playbook.py:playbook", ("lab",), None)


def _errors(flow: Any, params: dict[str, Any], rules: DeploymentRules | None = LAB) -> list[str]:
    schema = strict_schema(parameter_schema(flow).model_dump_for_openapi(), rules, REPO)
    return [e.message for e in validate(params, schema, raise_on_error=False)]


@pytest.mark.parametrize(
    "params",
    [
        {"playbook": "/tmp/evil.yml"},
        {"playbook": "../../../tmp/evil.yml"},
        {"playbook": "ping", "inventory": "/tmp/inv"},
        {"playbook": "ping", "timeout": 5},
        {"playbook": "ping", "time_limit": MAX_TIME_LIMIT + 1},
        {"playbook": "ping", "limit": "web\x00"},
        {"playbook": "ping", "extra_vars": {"ansible_connection": "local"}},
        {"playbook": "ping", "extra_vars": {"hostvars": "x"}},
        {"playbook": "health_check", "extra_vars": {"app_name": "../usr/bin/touch /tmp/x"}},
        {"playbook": "deploy_app", "extra_vars": {"app_version": "{{ lookup('pipe', 'id') }}"}},
        {"playbook": "deploy_app", "extra_vars": {"app_version": {"nested": "x"}}},
        {"playbook": "ping", "tags": ["a b"]},
        {"playbook": "ping", "vault_password_secret": "../x"},
    ],
)
def test_refused_when_the_run_is_created(params: dict[str, Any]) -> None:
    assert _errors(playbook, params)


def test_what_a_playbook_declares_passes() -> None:
    assert _errors(playbook, {"playbook": "deploy_app", "extra_vars": {"app_version": "1.2"}}) == []
    assert _errors(playbook, {"playbook": "ping", "time_limit": 600}) == []


def test_runbook_steps_follow_each_playbooks_declaration() -> None:
    bad = {"steps": [{"playbook": "health_check", "extra_vars": {"app_name": "x"}}]}
    good = {"steps": [{"playbook": "health_check", "extra_vars": {"expected_version": "1.0"}}]}
    assert _errors(runbook, bad) and _errors(runbook, good) == []


def test_a_deployment_is_pinned_to_its_inventories() -> None:
    schema = parameter_schema(playbook).model_dump_for_openapi()
    schema["properties"]["inventory"]["enum"] = ["lab", "staging"]  # as if both existed
    pinned = strict_schema(schema, LAB, REPO)
    assert pinned["properties"]["inventory"]["enum"] == ["lab"]
    with pytest.raises(ConfigurationError, match="not environments"):
        strict_schema(schema, DeploymentRules("x", "e", ("prod",)), REPO)


def test_rules_from_prefect_yaml(tmp_path: Path) -> None:
    rules = {(r.name, r.entrypoint): r for r in load_rules(REPO / "prefect.yaml")}
    lab = rules[("lab", "flows/playbook.py:playbook")]
    assert lab.inventories == ("lab",) and lab.time_limit == 14400
    assert rules[("disk-usage", "flows/run_script.py:run_script")].time_limit == 1800
    bad = tmp_path / "prefect.yaml"
    bad.write_text(
        "deployments:\n  - {name: x, entrypoint: e, parameters: {time_limit: 99999999}}\n"
    )
    with pytest.raises(ConfigurationError, match="time_limit"):
        load_rules(bad)


def test_the_flows_check_names_again_when_they_start() -> None:
    """The API lets a caller skip the server's check: the flow's own validation refuses."""
    from pydantic import TypeAdapter, ValidationError

    from fleetflow.flowkit.params import Inventory, Playbook, Script

    for kind, value in ((Playbook, "/tmp/evil.yml"), (Inventory, "../inv"), (Script, "../sh")):
        with pytest.raises(ValidationError, match="choose one of"):
            TypeAdapter(kind).validate_python(value)
    assert TypeAdapter(Playbook).validate_python("ping") == "ping"
