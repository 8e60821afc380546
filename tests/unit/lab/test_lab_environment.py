"""What a lab leaves in the project: the host's lab found by name, shared group_vars."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from fleetflow.exceptions import ConfigurationError
from fleetflow.lab import Lab, lab_of_host
from fleetflow.ops import cli
from fleetflow.settings import FleetflowSettings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FleetflowSettings:
    for name in ("LAB_DIR", "PROJECT_DIR", "FACT_CACHE_DIR"):
        monkeypatch.setenv(f"FLEETFLOW_{name}", str(tmp_path / name.lower()))
    (tmp_path / "project_dir/inventory/lab/group_vars").mkdir(parents=True)
    (tmp_path / "project_dir/inventory/lab/group_vars/all.yml").write_text("---\nx: 1\n")
    monkeypatch.setattr(shutil, "which", lambda _: None)  # no iptables chain to touch
    return FleetflowSettings()


def _state(settings: FleetflowSettings, lab: str, *hosts: str) -> None:
    state = settings.lab_dir / lab / "lab.json"
    state.parent.mkdir(parents=True)
    records = [{"index": i, "name": h, "address": f"127.0.9.{i}"} for i, h in enumerate(hosts, 1)]
    inventory = settings.project_dir / "inventory" / lab / "hosts.yml"
    state.write_text(
        json.dumps({"name": lab, "subnet": 9, "inventory": str(inventory), "hosts": records})
    )


def test_a_host_names_its_lab(settings: FleetflowSettings) -> None:
    _state(settings, "lab", "lab-01", "lab-02")
    _state(settings, "ux", "ux-01", "ux-03")
    assert lab_of_host("ux-03", settings) == "ux"
    assert lab_of_host("lab-02", settings) == "lab"
    with pytest.raises(ConfigurationError, match=r"no lab has a host 'db-9'; labs: lab, ux"):
        lab_of_host("db-9", settings)


def test_lab_ssh_without_name_goes_to_the_hosts_lab(
    settings: FleetflowSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _state(settings, "lab", "lab-01")
    _state(settings, "ux", "ux-01", "ux-03")
    called: list[list[str]] = []
    monkeypatch.setattr(os, "execvp", lambda _, argv: called.append(argv))
    assert cli.main(["lab", "ssh", "ux-03", "hostname"]) == 0
    (argv,) = called
    assert "root@127.0.9.2" in argv and argv[-1] == "hostname"
    assert f"UserKnownHostsFile={settings.lab_dir}/ux/ssh/known_hosts" in argv


def test_a_named_lab_shares_the_lab_group_vars_and_is_ignored_by_git(
    settings: FleetflowSettings,
) -> None:
    lab = Lab("ux", inventory_dir=settings.project_dir / "inventory/ux", settings=settings)
    lab._share_group_vars()
    link = settings.project_dir / "inventory/ux/group_vars"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # the checkout may move
    assert (link / "all.yml").read_text() == "---\nx: 1\n"
    assert (settings.project_dir / "inventory/ux/.gitignore").read_text().endswith("\n*\n")
    lab.down()
    assert not (settings.project_dir / "inventory/ux").exists()
    assert (settings.project_dir / "inventory/lab/group_vars/all.yml").exists()


def test_a_labs_own_group_vars_and_files_are_kept(settings: FleetflowSettings) -> None:
    own = settings.project_dir / "inventory/ux/group_vars"
    own.mkdir(parents=True)
    lab = Lab("ux", inventory_dir=own.parent, settings=settings)
    lab._share_group_vars()
    assert not own.is_symlink()
    lab.down()
    assert own.is_dir()


def test_a_lab_outside_the_project_gets_nothing_written_beside_it(
    settings: FleetflowSettings, tmp_path: Path
) -> None:
    lab = Lab("ux", inventory_dir=tmp_path / "elsewhere", settings=settings)
    lab._share_group_vars()
    assert not (tmp_path / "elsewhere").exists()


def test_lab_down_forgets_its_hosts_cached_facts(settings: FleetflowSettings) -> None:
    _state(settings, "ux", "ux-01", "ux-03")
    cache = settings.fact_cache_dir
    assert cache is not None
    cache.mkdir()
    for name in ("s1_ux-01", "s1_ux-03", "s1_ux-011", "s1_lab-01"):
        (cache / name).write_text("{}")
    Lab("ux", settings=settings).down()
    assert sorted(p.name for p in cache.iterdir()) == ["s1_lab-01", "s1_ux-011"]
