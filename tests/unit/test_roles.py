"""Every role is complete: prefixed and documented defaults, platforms, handlers, a
Molecule scenario with idempotence and verify, and a playbook that uses it."""

from __future__ import annotations

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
