"""The lab fleet against real namespaces, overlays, sshd and iptables."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from fleetflow.engine._ansible import ansible_environment, ansible_tool
from fleetflow.exceptions import LabError
from fleetflow.lab import HostState, Lab
from fleetflow.lab._host import controller_ca_bundle
from fleetflow.settings import FleetflowSettings
from tests.conftest import REPO, unique_lab_name

pytestmark = pytest.mark.integration


def test_each_host_answers_ssh_with_strict_host_key_checking(lab: Lab) -> None:
    names = []
    for host in lab.hosts():
        result = lab.ssh(host.name, "hostname")
        assert result.returncode == 0, result.stderr
        names.append(result.stdout.strip())
    assert names == [h.name for h in lab.hosts()]
    assert len(set(names)) == 3


def test_unknown_host_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    """Host key checking is really on: an empty known_hosts makes ssh refuse the host."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = lab.hosts()[0]
    cmd = [
        "ssh",
        "-i",
        str(lab.key_path),
        "-o",
        f"UserKnownHostsFile={empty}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        f"root@{host.address}",
        "true",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_password_login_is_refused(lab: Lab) -> None:
    host = lab.hosts()[0]
    cmd = [
        "ssh",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={lab.known_hosts_path}",
        f"root@{host.address}",
        "true",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_file_under_etc_stays_on_its_host(lab: Lab) -> None:
    first, second = lab.hosts()[:2]
    marker = f"/etc/fleetflow-isolation-{os.getpid()}"
    assert lab.ssh(first.name, f"echo {first.name} > {marker}").returncode == 0
    assert lab.ssh(first.name, f"cat {marker}").stdout.strip() == first.name
    assert not Path(marker).exists()
    assert lab.ssh(second.name, f"test -e {marker}").returncode == 1


def test_host_sees_only_its_own_processes(lab: Lab) -> None:
    result = lab.ssh(lab.hosts()[0].name, "ls /proc | grep -c '^[0-9]'")
    assert result.returncode == 0
    assert int(result.stdout) < 15  # init, sshd and this session; the controller runs ~100


@pytest.mark.slow
def test_package_install_stays_on_its_host(lab: Lab) -> None:
    first, second = lab.hosts()[:2]
    install = lab.ssh(
        first.name,
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y -qq --no-install-recommends tree",
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    assert lab.ssh(first.name, "tree -L 1 /etc/ssh").returncode == 0
    assert lab.ssh(second.name, "command -v tree").returncode == 1


@pytest.mark.parametrize(
    ("fault", "undo", "state"),
    [("cut", "restore", HostState.CUT), ("freeze", "thaw", HostState.FROZEN)],
)
def test_fault_makes_host_unreachable_and_undo_brings_it_back(
    lab: Lab, fault: str, undo: str, state: HostState
) -> None:
    host = lab.hosts()[1].name
    getattr(lab, fault)(host)
    try:
        assert lab.status()[host] == state
        assert lab.ssh(host, "true").returncode == 255
    finally:
        getattr(lab, undo)(host)
    assert lab.status()[host] == HostState.RUNNING
    assert lab.ssh(host, "true").returncode == 0


def test_kill_then_up_restarts_with_disk_intact(lab: Lab) -> None:
    host = lab.hosts()[2].name
    assert lab.ssh(host, "echo kept > /root/before-kill").returncode == 0
    others = {h: _init_pid(lab, h) for h in (lab.hosts()[0].name, lab.hosts()[1].name)}
    lab.kill(host)
    assert lab.status()[host] == HostState.STOPPED
    assert lab.ssh(host, "true").returncode == 255
    lab.up()
    assert lab.status()[host] == HostState.RUNNING
    assert lab.ssh(host, "cat /root/before-kill").stdout.strip() == "kept"
    # Re-running `up` kept the hosts that were running.
    assert {h: _init_pid(lab, h) for h in others} == others


def _init_pid(lab: Lab, host: str) -> int:
    import json

    state = json.loads((lab.state_dir / "lab.json").read_text())
    return next(h["pid"] for h in state["hosts"] if h["name"] == host)


def _live_processes_under(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2] == "Z":
                # A zombie holds no resource (this sandbox's PID 1 never reaps; see
                # docs/limitations.md).
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            root = os.readlink(entry / "root")
        except OSError:
            continue
        if str(path) in cmdline or root.startswith(str(path)):
            found.append(int(entry.name))
    return found


def test_down_leaves_nothing(tmp_path: Path) -> None:
    lab = Lab(unique_lab_name("down"), inventory_dir=tmp_path / "inv")
    try:
        hosts = lab.up(2)
        lab.cut(hosts[0].name)
        lab.freeze(hosts[1].name)
        assert _live_processes_under(lab.state_dir)
    finally:
        lab.down()
    assert not lab.state_dir.exists()
    assert not lab.inventory_path.exists()
    assert _live_processes_under(lab.state_dir) == []
    assert str(lab.state_dir) not in Path("/proc/self/mountinfo").read_text()
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
    assert f"FFLAB-{lab.name}" not in rules
    for host in hosts:
        with pytest.raises(OSError):
            socket.create_connection((host.address, host.port), timeout=1).close()


def test_failed_up_leaves_no_partial_fleet(tmp_path: Path) -> None:
    """Host 2's address is taken: `up` fails clearly and removes host 1 and all state."""
    settings = FleetflowSettings(lab_ssh_port=2222)
    lab = Lab(unique_lab_name("fail"), inventory_dir=tmp_path / "inv", settings=settings)
    subnet = lab._allocate_subnet()
    blocker = socket.socket()
    blocker.bind((f"127.0.{subnet}.2", 2222))
    blocker.listen()
    try:
        with pytest.raises(LabError, match=re.escape(f"127.0.{subnet}.2:2222 already answers")):
            lab.up(3)
    finally:
        blocker.close()
        lab.down()
    assert not lab.state_dir.exists()
    assert _live_processes_under(settings.lab_dir / lab.name) == []


def _fleetflow(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEETFLOW_PROJECT_DIR": str(REPO)}
    return subprocess.run(
        [str(REPO / ".venv/bin/fleetflow"), *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False,
    )  # fmt: skip


def test_a_named_lab_from_the_cli_is_configured_as_lab_and_found_by_its_hosts() -> None:
    name = unique_lab_name("gv")
    environment = REPO / "inventory" / name
    try:
        up = _fleetflow("lab", "up", "1", "--name", name)
        assert up.returncode == 0, up.stderr
        assert "group_vars: shared with" in up.stdout
        # The lab's own environment gets inventory/lab's settings, not the roles' defaults.
        shown = subprocess.run(
            [ansible_tool("ansible-inventory"), "-i", str(environment), "--host", f"{name}-01"],
            capture_output=True, text=True, env=ansible_environment(REPO), cwd=REPO, check=False,
        )  # fmt: skip
        assert json.loads(shown.stdout)["baseline_timezone"] == "Europe/Zurich", shown.stderr
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", str(environment / "hosts.yml")], cwd=REPO, check=False
        )
        assert ignored.returncode == 0, "a named lab's generated inventory must not be committed"
        ssh = _fleetflow("lab", "ssh", f"{name}-01", "hostname")  # no --name: found by host
        assert (ssh.returncode, ssh.stdout.strip()) == (0, f"{name}-01"), ssh.stderr
        status = _fleetflow("lab", "status", "--name", name)
        assert status.returncode == 0, status.stderr
        assert "{" not in status.stdout
        rows = [line.split() for line in status.stdout.splitlines()]
        assert ["HOST", "ADDRESS", "PORT", "GROUP", "STATE"] in rows
        assert any(row[:1] == [f"{name}-01"] and row[-1] == "running" for row in rows)
    finally:
        down = _fleetflow("lab", "down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert not environment.exists()
    assert (REPO / "inventory/lab/group_vars").is_dir()


def test_lab_hosts_trust_the_controllers_ca_bundle(lab: Lab) -> None:
    """Package installs over TLS inside a host behave as on the controller, an intercepting
    proxy's CA included."""
    bundle = controller_ca_bundle()
    assert bundle is not None
    host = lab.hosts()[0].name
    on_host = lab.ssh(host, "sha256sum /etc/ssl/certs/ca-certificates.crt")
    assert on_host.stdout.split()[:1] == [hashlib.sha256(bundle.read_bytes()).hexdigest()]
    url = "https://pypi.org/simple/"
    try:
        urllib.request.urlopen(url, timeout=20).close()
    except OSError as exc:
        pytest.skip(f"the controller itself cannot reach {url}: {exc}")
    fetch = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=20).status)"
    result = lab.ssh(host, f"python3 -c {shlex.quote(fetch)}")
    assert result.stdout.strip() == "200", result.stderr
