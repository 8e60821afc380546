"""Remote work stops with its run (issue #26), on lab hosts through run_playbook: with
become (a root-owned command started through su, its password from a Secret block), a
timeout stops the command on the host; a daemon the playbook keeps on purpose stays;
the next run's fence stops a leftover of an earlier run and nothing else, or fails the
host by policy without touching it. Cancel and controller death through the real stack
are scenarios 9 and 10 of test_faults.py."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.blocks.system import Secret

from fleetflow import PlaybookResult, RunStatus, run_playbook
from fleetflow.lab import Lab
from tests.conftest import REPO

from .faults import LONG_LOG as LOG
from .faults import host_pids as pids
from .faults import kill_on_host as kill
from .faults import quiet_after

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
LONG = str(REPO / "tests/fixtures/playbooks/long.yml")
USER = "ffghost"


@flow
def one_run(playbook: str, inventory: str, kwargs: dict[str, Any]) -> PlaybookResult:
    return run_playbook(playbook, inventory=inventory, **kwargs)


@pytest.fixture(scope="module")
def su_inventory(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The lab's inventory logging in to its first host as an unprivileged user who
    becomes root with su and root's password (a Secret block)."""
    host, password = lab.hosts()[0].name, secrets.token_urlsafe(18)
    Secret(value=lab.key_path.read_text()).save("ff-test-ghost-key", overwrite=True)
    Secret(value=password).save("ff-test-ghost-become", overwrite=True)
    setup = (
        f"set -e; id {USER} >/dev/null 2>&1 || useradd -m -s /bin/sh -p '*' {USER}; "
        f"mkdir -p ~{USER}/.ssh; cp /root/.ssh/authorized_keys ~{USER}/.ssh/; "
        f"chown -R {USER} ~{USER}/.ssh; chpasswd"
    )
    made = subprocess.run([*lab.ssh_args(host), setup], input=f"root:{password}\n",
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    copied = tmp_path_factory.mktemp("su-inventory") / "inventory"
    shutil.copytree(lab.inventory_dir, copied)
    (copied / "host_vars").mkdir(exist_ok=True)
    (copied / "host_vars" / f"{host}.yml").write_text(f"ansible_user: {USER}\n")
    yield copied


def test_a_timeout_stops_a_root_command_started_through_su_and_keeps_the_daemon(
    lab: Lab, su_inventory: Path
) -> None:
    host, tag = lab.hosts()[0].name, uuid.uuid4().hex[:8]
    result = one_run(LONG, str(su_inventory), {
        "limit": host, "timeout": 25, "raise_on_failure": False,
        "extra_vars": {"tag": tag, "seconds": 300, "use_su": True},
        "ssh_key_secret": "ff-test-ghost-key", "become_password_secret": "ff-test-ghost-become",
    })  # fmt: skip
    returned = time.monotonic()  # the run was killed before run_playbook returned
    assert result.status == RunStatus.TIMED_OUT, result.message
    assert lab.ssh(host, f"grep 'line {tag} 3 ' {LOG}").stdout.split()[-1] == "root"
    # The command would write for 300 s: it stops within 10 s of the timeout.
    quiet = quiet_after(lab, host, tag, since=returned)
    print(f"timeout -> host quiet after {quiet:.1f} s")  # noqa: T201
    assert quiet <= 10
    daemon = pids(lab, host, f"ff-daemon-{tag}")
    assert daemon, "the daemon the playbook started on purpose was stopped"
    kill(lab, host, f"ff-daemon-{tag}")


def _plant(lab: Lab, host: str, marker: str, tag: str) -> None:
    """A root process that looks like a leftover of run `marker` (and its twin without
    the marker: same user, same command line)."""
    loop = f'while :; do echo "line {tag} x" >> {LOG}; sleep 1; done'
    lab.ssh(host, f"FLEETFLOW_RUN={marker} nohup sh -c '{loop}' ghost-{tag} >/dev/null 2>&1 & "
                  f"nohup sh -c '{loop}' ghost-{tag} >/dev/null 2>&1 &")  # fmt: skip
    assert len(pids(lab, host, f"ghost-{tag}")) == 2


def test_the_fence_stops_a_root_leftover_through_su_and_spares_its_twin(
    lab: Lab, su_inventory: Path
) -> None:
    host, tag = lab.hosts()[0].name, uuid.uuid4().hex[:8]
    _plant(lab, host, f"dead-run.{tag}", tag)
    try:
        result = one_run(LONG, str(su_inventory), {
            "limit": host, "extra_vars": {"tag": f"{tag}-next", "seconds": 1, "use_su": True},
            "ssh_key_secret": "ff-test-ghost-key",
            "become_password_secret": "ff-test-ghost-become",
        })  # fmt: skip
        assert result.status == RunStatus.SUCCESSFUL, result.message
        leftovers = result.hosts[host].leftovers
        # (The guard of the test before may have stopped something too: reported as such.)
        stopped = [g for g in leftovers if g.stopped_by == "fence"]
        assert {(g.run, g.user) for g in stopped} == {(f"dead-run.{tag}", "root")}
        assert any(f"ghost-{tag}" in g.command for g in stopped)
        assert len(pids(lab, host, f"ghost-{tag}")) == 1, "the unmarked twin must survive"
        assert result.table()[0]["leftovers"] == len(leftovers)
    finally:
        kill(lab, host, f"ghost-{tag}", f"ff-daemon-{tag}-next")


def test_the_fail_policy_fails_the_host_without_touching_it(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, tag = lab.hosts()[1].name, uuid.uuid4().hex[:8]
    _plant(lab, host, f"dead-run.{tag}", tag)
    monkeypatch.setenv("FLEETFLOW_GHOST_POLICY", "fail")
    try:
        result = one_run(LONG, str(lab.inventory_dir), {
            "limit": host, "raise_on_failure": False,
            "extra_vars": {"tag": f"{tag}-next", "seconds": 1},
        })  # fmt: skip
        assert result.status == RunStatus.FAILED
        failure = result.hosts[host].failure
        assert failure is not None
        assert f"ghost of run dead-run.{tag} still running: PID" in failure.message
        assert len(pids(lab, host, f"ghost-{tag}")) == 2, "the fence must not stop them"
        assert not pids(lab, host, f"ff-daemon-{tag}-next"), "the playbook must not have run"
    finally:
        kill(lab, host, f"ghost-{tag}")
