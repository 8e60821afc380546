"""Every role is complete: prefixed and documented defaults, platforms, handlers, a
Molecule scenario with idempotence and verify, and a playbook that uses it; and it checks
its inputs: meta/argument_specs.yml declares exactly its defaults for every entry point
used, and tasks/validate.yml runs before any other task of each entry point."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import REPO

ROLES = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_there_are_at_least_three_roles() -> None:
    assert len(ROLES) >= 3


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_are_prefixed_and_documented_in_the_readme(role: Path) -> None:
    defaults = _load(role / "defaults/main.yml")
    readme = (role / "README.md").read_text()
    assert defaults, "no defaults"
    for name in defaults:
        assert name.startswith(f"{role.name}_"), f"{name} lacks the {role.name}_ prefix"
        assert f"`{name}`" in readme, f"{name} is not documented in README.md"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_meta_names_platforms_and_handlers_exist(role: Path) -> None:
    meta = _load(role / "meta/main.yml")["galaxy_info"]
    assert meta["role_name"] == role.name
    assert meta["platforms"], "meta/main.yml names no platform"
    handlers = _load(role / "handlers/main.yml")
    assert handlers and all(h["name"] for h in handlers)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_molecule_scenario_runs_the_full_sequence_on_a_lab_host(role: Path) -> None:
    scenario = role / "molecule/default"
    config = _load(scenario / "molecule.yml")
    sequence = config["scenario"]["test_sequence"]
    for step in ("syntax", "create", "converge", "idempotence", "verify", "destroy"):
        assert step in sequence
    assert sequence.index("idempotence") < sequence.index("verify") < len(sequence) - 1
    assert sequence[-1] == "destroy"
    playbooks = config["provisioner"]["playbooks"]
    for step in ("create", "destroy"):
        assert (scenario / playbooks[step]).resolve() == REPO / f"tests/molecule/{step}.yml"
    assert config["driver"]["options"]["managed"] is False  # keeps host key checking on
    for playbook in ("converge.yml", "verify.yml"):
        assert (scenario / playbook).is_file()


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_a_playbook_uses_the_role(role: Path) -> None:
    users = [
        p.name
        for p in (REPO / "playbooks").glob("*.yml")
        if f"role: {role.name}\n" in p.read_text() or f"name: {role.name}\n" in p.read_text()
    ]
    assert users, f"no playbook in playbooks/ uses {role.name}"


# -- inputs: "caller input is data, never code" ------------------------------------------
def _argument_specs(role: Path) -> dict[str, Any]:
    path = role / "meta/argument_specs.yml"
    assert path.is_file(), f"{role.name} has no meta/argument_specs.yml"
    specs = _load(path)["argument_specs"]
    assert isinstance(specs, dict) and specs, "meta/argument_specs.yml declares no entry point"
    return specs


def _role_includes(node: Any) -> Iterator[tuple[str, str]]:
    """(role, tasks_from) of every include_role / import_role found in a YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            action = key.rsplit(".", 1)[-1]
            if action in ("include_role", "import_role") and isinstance(value, dict):
                yield value["name"], value.get("tasks_from", "main")
            yield from _role_includes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _role_includes(item)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_declare_exactly_the_defaults(role: Path) -> None:
    defaults = set(_load(role / "defaults/main.yml"))
    specs = _argument_specs(role)
    assert "main" in specs, "no `main` entry point"
    main = set(specs["main"]["options"])
    assert not defaults - main, f"undeclared in meta/argument_specs.yml: {sorted(defaults - main)}"
    assert not main - defaults, f"declared, not in defaults/main.yml: {sorted(main - defaults)}"
    for entry_point, spec in specs.items():
        extra = set(spec.get("options", {})) - defaults
        assert not extra, f"{entry_point} declares variables without a default: {sorted(extra)}"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_declared_variable_has_a_type_and_a_description(role: Path) -> None:
    def check(options: dict[str, Any], where: str) -> None:
        for name, option in options.items():
            assert option.get("type"), f"{where}{name} has no type"
            assert str(option.get("description", "")).endswith("."), f"{where}{name}: no sentence"
            assert not (option.get("required") and "default" in option), f"{where}{name}"
            if option["type"] == "list":
                assert option.get("elements"), f"{where}{name} is a list without `elements`"
            check(option.get("options", {}), f"{where}{name}.")

    for entry_point, spec in _argument_specs(role).items():
        check(spec.get("options", {}), f"{entry_point}: ")


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_entry_point_checks_its_inputs_before_any_other_task(role: Path) -> None:
    validate = _load(role / "tasks/validate.yml")
    assert validate, "tasks/validate.yml is empty"
    for task in validate:
        check = task["ansible.builtin.assert"]
        assert check["quiet"] is True and check["fail_msg"], task["name"]
    for entry_point in _argument_specs(role):
        tasks = _load(role / f"tasks/{entry_point}.yml")
        assert tasks[0].get("ansible.builtin.import_tasks") == "validate.yml", (
            f"tasks/{entry_point}.yml does not import validate.yml first"
        )


def test_every_role_entry_point_used_is_declared() -> None:
    files = [
        *(REPO / "playbooks").glob("*.yml"),
        *(REPO / "roles").glob("*/tasks/*.yml"),
        *(REPO / "roles").glob("*/molecule/*/*.yml"),
    ]
    used = {include for path in files for include in _role_includes(_load(path))}
    assert ("app", "health") in used  # playbooks/health_check.yml
    for role, entry_point in used:
        assert entry_point in _argument_specs(REPO / "roles" / role), (
            f"{role} is used through tasks_from: {entry_point}, which argument_specs lacks"
        )
