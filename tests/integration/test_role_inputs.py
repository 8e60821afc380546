"""Roles refuse caller values that would become code, before they run anything: the real
ansible-playbook against the lab.

Regression (security issue "caller input is data, never code"): playbooks/health_check.yml
ran `/opt/{{ app_name }}/current/bin/health`, so app_name
`../usr/bin/touch /tmp/ff-x /tmp/ff-y` made every host run touch as root.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleetflow.lab import Lab

from ..conftest import REPO

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
MARKERS = ("/tmp/ff-x", "/tmp/ff-y")
APP_NAME_PATTERN = "^[a-z][a-z0-9_-]{0,31}$"
SCRIPT_PATTERN = "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"


def _ansible_playbook(
    lab: Lab, playbook: str, extra_vars: dict[str, Any], tmp_path: Path
) -> tuple[int, str]:
    """Run playbooks/<playbook> on the lab with extra vars from a JSON file (-e @file)."""
    vars_file = tmp_path / "extra_vars.json"
    vars_file.write_text(json.dumps(extra_vars))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(lab.inventory_dir),
         str(REPO / "playbooks" / playbook), "-e", f"@{vars_file}"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def _on_host(lab: Lab, host: str, command: str) -> subprocess.CompletedProcess[str]:
    done = lab.ssh(host, command)
    assert done.returncode in (0, 1), f"{host}: {command}: {done.stderr}"
    return done


def test_health_check_refuses_an_app_name_that_is_a_command(lab: Lab, tmp_path: Path) -> None:
    """The app_name of the issue fails the run, named with its pattern, and runs nothing:
    no marker file on any lab host nor on the controller."""
    hosts = [h.name for h in lab.hosts()]
    for host in hosts:
        _on_host(lab, host, f"rm -f {' '.join(MARKERS)}")
    for marker in MARKERS:
        Path(marker).unlink(missing_ok=True)

    rc, output = _ansible_playbook(
        lab, "health_check.yml", {"app_name": "../usr/bin/touch /tmp/ff-x /tmp/ff-y"}, tmp_path
    )

    for host in hosts:
        for marker in MARKERS:
            found = _on_host(lab, host, f"test -e {marker}")
            assert found.returncode == 1, f"{marker} exists on {host}: the command ran"
    for marker in MARKERS:
        assert not Path(marker).exists(), f"{marker} exists on the controller"
    assert rc != 0, output
    assert "app_name=" in output and APP_NAME_PATTERN in output, output[-4000:]
    assert "TASK [app : Run the application's health check]" not in output, output[-4000:]
    for host in hosts:
        recap = re.search(rf"^{re.escape(host)}\s*:.*\bchanged=0\b.*\bfailed=1\b", output, re.M)
        assert recap, f"{host} is not failed and unchanged in the recap:\n{output[-2000:]}"


def test_health_check_accepts_a_well_formed_app_name(lab: Lab, tmp_path: Path) -> None:
    """The patterns are not stricter than real names: validation passes and the health
    check itself runs (and fails: no such application is installed)."""
    rc, output = _ansible_playbook(lab, "health_check.yml", {"app_name": "no-such-app"}, tmp_path)

    assert rc != 0, output
    assert "is refused" not in output, output[-4000:]
    assert "TASK [app : Run the application's health check]" in output
    assert "/opt/no-such-app/current/bin/health" in output, output[-4000:]


@pytest.mark.parametrize(
    "script",
    ["../scripts/disk_usage.sh", "disk_usage.sh;touch /tmp/ff-z"],
    ids=["slash", "semicolon"],
)
def test_script_runner_refuses_a_cron_job_script_that_is_not_a_file_name(
    lab: Lab, tmp_path: Path, script: str
) -> None:
    """`../scripts/disk_usage.sh` is a file the existence check would accept: the pattern
    is what refuses it. Nothing is installed and no cron line names it."""
    job = {"name": "Bad job", "script": script, "minute": "0"}
    rc, output = _ansible_playbook(
        lab,
        "run_script.yml",
        {"script_name": "disk_usage.sh", "script_runner_cron_jobs": [job]},
        tmp_path,
    )

    assert rc != 0, output
    assert "script_runner_cron_jobs script=" in output and SCRIPT_PATTERN in output, output[-4000:]
    assert "TASK [script_runner : Create the scripts" not in output, output[-4000:]
    assert "TASK [Run the script under its lock]" not in output
    for host in (h.name for h in lab.hosts()):
        cron = _on_host(lab, host, "cat /etc/cron.d/fleetflow-scripts 2>/dev/null; true")
        assert script not in cron.stdout, f"{host}: {cron.stdout}"
        assert _on_host(lab, host, "test -e /tmp/ff-z").returncode == 1
