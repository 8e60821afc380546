"""Fast defaults against the lab: the fact cache is really used, Mitogen really runs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fleetflow import HostStatus, RunStatus
from fleetflow.lab import Lab

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
