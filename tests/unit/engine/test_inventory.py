"""Playbook/inventory resolution and parameter validation (no hosts involved)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetflow.engine._ansible import natural_key, parse_graph
from fleetflow.engine.inventory import (
    _parse_listing,
    require_vault_password,
    resolve_inventory,
    resolve_playbook,
)
from fleetflow.engine.variables import check_variables
from fleetflow.exceptions import ConfigurationError, InventoryError, PlaybookError
from tests.conftest import REPO


def test_playbook_by_name_with_or_without_suffix() -> None:
    assert resolve_playbook("site", REPO) == REPO / "playbooks/site.yml"
    assert resolve_playbook("site.yml", REPO) == REPO / "playbooks/site.yml"


def test_unknown_playbook_lists_the_known_ones() -> None:
    with pytest.raises(PlaybookError, match=r"known playbooks: .*site"):
        resolve_playbook("nope", REPO)


def test_inventory_by_environment_name_or_path(tmp_path: Path) -> None:
    staging = tmp_path / "inventory/staging"
    staging.mkdir(parents=True)
    (staging / "hosts.yml").write_text("all:\n  hosts:\n    web-01:\n")
    assert resolve_inventory("staging", tmp_path) == staging
    assert resolve_inventory(str(staging / "hosts.yml"), tmp_path) == staging / "hosts.yml"


def test_unknown_environment_lists_the_known_ones() -> None:
    with pytest.raises(InventoryError, match="environments: lab"):
        resolve_inventory("production-eu", REPO)


@pytest.mark.parametrize(
    "value", [[1, 2], "a=b", 3, {1: "x"}, {"not valid": 1}, {"app_version": object()}]
)
def test_extra_vars_must_be_a_mapping_of_names(value: Any) -> None:
    with pytest.raises(ConfigurationError):
        check_variables(REPO / "playbooks/deploy_app.yml", value)


def test_listing_parser(tmp_path: Path) -> None:
    listing = (
        "\nplaybook: x.yml\n\n  play #1 (all): A\tTAGS: []\n    pattern: ['all']\n"
        "    hosts (2):\n      h1\n      h2\n    tasks:\n      T1\tTAGS: []\n"
        "  play #2 (db): B\tTAGS: []\n    pattern: ['db']\n    hosts (1):\n      h2\n"
        "    tasks:\n      T2\tTAGS: []\n      T3\tTAGS: []\n"
    )
    assert _parse_listing(listing) == (["h1", "h2"], 3)


def test_hosts_sort_naturally() -> None:
    assert sorted(["web-10", "web-2", "db-1"], key=natural_key) == ["db-1", "web-2", "web-10"]


def test_environment_without_hosts_file_says_how_to_get_one(tmp_path: Path) -> None:
    (tmp_path / "inventory/lab/group_vars").mkdir(parents=True)
    with pytest.raises(InventoryError, match=r"has no hosts file.*fleetflow lab up"):
        resolve_inventory("lab", tmp_path)


def test_host_groups_include_ancestors_but_not_all_or_ungrouped() -> None:
    graph = (
        "@all:\n  |--@ungrouped:\n  |  |--solo\n  |--@eu:\n  |  |--@web:\n"
        "  |  |  |--web-01\n  |  |--db-01\n  |--@batch:\n  |  |--web-01\n"
    )
    assert parse_graph(graph) == {
        "solo": [], "web-01": ["batch", "eu", "web"], "db-01": ["eu"],
    }  # fmt: skip


def test_a_vault_encrypted_inventory_file_needs_the_vault_password(tmp_path: Path) -> None:
    inventory = tmp_path / "staging"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text("all: {hosts: {a: {}}}\n")
    (inventory / "group_vars" / "all" / "plain.yml").write_text("x: 1\n")
    require_vault_password(inventory)  # nothing encrypted: nothing to refuse
    shared = tmp_path / "shared_vars"
    shared.mkdir()
    (shared / "db.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\n3133\n")
    (inventory / "host_vars").symlink_to(shared)  # as a named lab's group_vars link
    (shared / "loop").symlink_to(shared)  # a cycle is walked once
    with pytest.raises(InventoryError, match=r"vault-encrypted file \(host_vars/db.yml\).*"
                       r"vault_password_secret"):  # fmt: skip
        require_vault_password(inventory)
