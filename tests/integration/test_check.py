"""`fleetflow check` on the repository, and on a copy with one of every problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO
from .runs import fleetflow_check

pytestmark = pytest.mark.integration


def test_the_repository_passes() -> None:
    done = fleetflow_check(REPO, "--no-lint")
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 errors" in done.stdout


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    for name in ("ansible.cfg", "playbooks", "roles", "deployments", "flows", "scripts"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy(source, tmp_path / name)
    shutil.copytree(
        REPO / "inventory" / "lab" / "group_vars", tmp_path / "inventory/lab/group_vars"
    )
    shutil.copy(REPO / "tests/fixtures/playbooks/broken.yml", tmp_path / "playbooks/broken.yml")
    (tmp_path / "inventory/staging").mkdir()
    (tmp_path / "inventory/staging/hosts.yml").write_text("all: [unclosed\n")
    (tmp_path / "inventory/qa").mkdir()
    (tmp_path / "inventory/qa/hosts.yml").write_text(
        "all:\n  hosts:\n    qa-01:\n      ansible_host: 127.0.0.1\n"
    )
    prefect_yaml = tmp_path / "deployments/prefect.yaml"
    config = yaml.safe_load(prefect_yaml.read_text())
    site = next(d for d in config["deployments"] if d["entrypoint"].startswith("flows/site"))
    site["parameters"] |= {"retries": "many", "colour": "blue"}
    site["schedules"][0]["cron"] = "61 * * * *"
    config["deployments"].append(
        {
            "name": "qa",
            "entrypoint": "flows/playbook.py:playbook",
            "parameters": {"inventory": "qa", "limit": "no-such-host", "playbook": "ping"},
            "work_pool": {"name": "fleetflow", "work_queue_name": "nowhere"},
        }
    )
    config["deployments"].append(
        {"name": "qa-ok-pool", "entrypoint": "flows/playbook.py:playbook",
         "parameters": {"inventory": "qa", "limit": "no-such-host"},
         "work_pool": {"name": "fleetflow", "work_queue_name": "lab"}}
    )  # fmt: skip
    config["deployments"].append({"name": "gone", "entrypoint": "flows/missing.py:nothing"})
    prefect_yaml.write_text(yaml.safe_dump(config))
    (tmp_path / "deployments/automations/bad.yaml").write_text(
        "name: fleetflow/bad\ntrigger: {type: nonsense}\n"
    )
    return tmp_path


def test_every_problem_is_listed_and_the_exit_is_non_zero(broken: Path) -> None:
    done = fleetflow_check(broken, "--no-lint")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    problems = [line for line in out.splitlines() if line.startswith("ERROR")]
    expected = [
        "playbooks/broken.yml",
        "inventory/staging",
        "parameter retries",
        "unknown parameter 'colour'",
        "'61 * * * *'",
        "queue 'nowhere' is not in pool fleetflow",
        "host pattern 'no-such-host' matches no host of inventory qa",
        "cannot load flow",
        "invalid automation",
    ]
    for needle in expected:
        assert any(needle in line for line in problems), f"{needle!r} not reported:\n{out}"
    assert not any("Traceback" in line for line in out.splitlines())
