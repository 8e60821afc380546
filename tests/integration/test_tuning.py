"""Fast defaults against the lab: the fact cache is really used, Mitogen really runs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fleetflow import HostStatus, RunStatus
from fleetflow.lab import Lab
from fleetflow.settings import FleetflowSettings
from tests.conftest import unique_lab_name

from ..conftest import REPO
from .test_engine import one_run

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
FACTS = str(REPO / "bench/playbooks/facts.yml")
WRITTEN = "cat /tmp/ff-bench"


def test_cached_facts_are_used_until_the_cache_is_turned_off(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "facts"
    monkeypatch.setenv("FLEETFLOW_FACT_CACHE_DIR", str(cache))
    first = one_run(FACTS, str(lab.inventory_dir), {})
    assert first.status == RunStatus.SUCCESSFUL
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    host = lab.hosts()[0].name
    assert lab.ssh(host, WRITTEN).stdout.strip() == "Debian"
    # Doctor the cached facts: a run that writes the marker read them from the cache.
    (entry,) = cache.glob(f"*{host}")  # ansible-core 2.21 names it s1_<host>
    cached = json.loads(entry.read_text())
    facts = json.loads(cached["__payload__"])
    facts["ansible_distribution"] = "from-the-cache"
    entry.write_text(json.dumps({**cached, "__payload__": json.dumps(facts)}))
    assert one_run(FACTS, str(lab.inventory_dir), {}).status == RunStatus.SUCCESSFUL
    assert lab.ssh(host, WRITTEN).stdout.strip() == "from-the-cache"
    monkeypatch.setenv("FLEETFLOW_FACT_CACHE_DIR", "")
    assert one_run(FACTS, str(lab.inventory_dir), {}).status == RunStatus.SUCCESSFUL
    assert lab.ssh(host, WRITTEN).stdout.strip() == "Debian"


def test_mitogen_runs_the_playbook_and_reports_every_host(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETFLOW_STRATEGY", "mitogen")
    playbook = str(REPO / "tests/fixtures/playbooks/strategy.yml")
    result = one_run(playbook, str(lab.inventory_dir), {})
    assert result.status == RunStatus.SUCCESSFUL
    for host in lab.hosts():
        outcome = result.hosts[host.name]
        assert (outcome.status, outcome.ok) == (HostStatus.OK, 2)
        # Mitogen runs modules inside its own remote interpreter, named after it.
        assert "mitogen" in outcome.outputs["runner"], outcome.outputs


HOST_KEY_PLAYBOOK = """\
- name: Write the host key Ansible's facts report
  hosts: all
  tasks:
    - name: Write it
      ansible.builtin.copy:
        content: "{{ ansible_facts['ssh_host_key_ed25519_public'] }}\\n"
        dest: /tmp/ff-fact-key
        mode: "0644"
"""


def _fact_keys(lab: Lab) -> dict[str, tuple[str, str]]:
    """Per host: (the key the facts said, the host's real key)."""
    found = {}
    for host in lab.hosts():
        said = lab.ssh(host.name, "cat /tmp/ff-fact-key").stdout.strip()
        real = lab.ssh(host.name, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
        found[host.name] = (said, real)
    return found


def test_a_host_rebuilt_under_the_same_name_never_gets_the_old_hosts_facts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, inventory = unique_lab_name("fc"), tmp_path / "inventory"
    playbook = tmp_path / "hostkey.yml"
    playbook.write_text(HOST_KEY_PLAYBOOK)
    cache = tmp_path / "facts"
    # The lab is told of another cache: what keeps the old facts out here is the engine's
    # check of the pinned key, not `lab down` removing them.
    elsewhere = FleetflowSettings(fact_cache_dir=tmp_path / "lab-facts")
    monkeypatch.setenv("FLEETFLOW_FACT_CACHE_DIR", str(cache))
    try:
        Lab(name, inventory_dir=inventory, settings=elsewhere).up(2)
        first = one_run(str(playbook), str(inventory), {})
        assert first.status == RunStatus.SUCCESSFUL
        old = _fact_keys(Lab(name, settings=elsewhere))
        assert all(said == real for said, real in old.values()), old
        # Same host, same key: the cache is used (no Gathering Facts: one `ok` fewer).
        again = one_run(str(playbook), str(inventory), {})
        assert {h: (r.ok, r.changed) for h, r in again.hosts.items()} == {
            h: (first.hosts[h].ok - 1, 0) for h in first.hosts
        }
        Lab(name, settings=elsewhere).down()
        Lab(name, inventory_dir=inventory, settings=elsewhere).up(2)
        assert len(list(cache.glob(f"*{name}-0*"))) == 2  # the destroyed hosts' facts
        rebuilt = one_run(str(playbook), str(inventory), {})
        assert rebuilt.status == RunStatus.SUCCESSFUL
        new = _fact_keys(Lab(name, settings=elsewhere))
        for host, (said, real) in new.items():
            assert real != old[host][1], "the rebuilt host has a new key"
            assert said == real, f"{host} got the destroyed host's facts"
        # Gathered anew: as many `ok` as the very first run.
        assert {h: r.ok for h, r in rebuilt.hosts.items()} == {
            h: r.ok for h, r in first.hosts.items()
        }
    finally:
        # `lab down` drops the cached facts of the lab's hosts from the cache it uses.
        Lab(name, settings=FleetflowSettings(fact_cache_dir=cache)).down()
    assert not list(cache.glob(f"*{name}-0*"))
