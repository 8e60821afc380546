"""A named fleet of lab hosts: create, keep, inspect, break and remove it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Self

import yaml

from fleetflow._progress import step
from fleetflow.engine._factcache import forget_hosts
from fleetflow.exceptions import ConfigurationError, LabError
from fleetflow.lab import _host, _net
from fleetflow.lab._image import ensure_image, file_lock
from fleetflow.lab._prereq import check_lab_prerequisites
from fleetflow.settings import FleetflowSettings, get_settings

logger = logging.getLogger(__name__)

MAX_HOSTS = 250
GROUPS = ("web", "db", "batch")
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
# Each lab owns 127.0.<subnet>.0/24; 127.0.1.1 is Debian's own-hostname address, so start at 10.
_FIRST_SUBNET, _LAST_SUBNET = 10, 250
_GITIGNORE_HEADER = "# Written by 'fleetflow lab up': this environment is machine specific."


class HostState(StrEnum):
    RUNNING = "running"
    FROZEN = "frozen"
    CUT = "cut"
    STOPPED = "stopped"


@dataclass(frozen=True)
class LabHost:
    """A lab host as Ansible sees it."""

    name: str
    address: str
    port: int
    group: str
    index: int


@dataclass
class _HostRecord:
    index: int
    name: str
    address: str
    pid: int = 0
    start_time: int = 0

    @property
    def process(self) -> _host.HostProcess:
        return _host.HostProcess(self.pid, self.start_time)


def lab_of_host(host: str, settings: FleetflowSettings | None = None) -> str:
    """The name of the running lab that has a host called `host` (from the labs' state)."""
    settings = settings or get_settings()
    labs = []
    for state in sorted(settings.lab_dir.glob("*/lab.json")):
        try:
            data = json.loads(state.read_text())
            names = {h["name"] for h in data["hosts"]}
        except (OSError, ValueError, KeyError, TypeError):
            continue
        labs.append(state.parent.name)
        if host in names:
            return state.parent.name
    raise ConfigurationError(
        f"no lab has a host {host!r}; labs: {', '.join(labs) or 'none (fleetflow lab up)'}"
    )


class Lab:
    """A fleet of isolated SSH hosts on this machine.

    ``with Lab("t1") as lab: lab.up(3)`` always removes the fleet on exit.
    """

    def __init__(
        self,
        name: str = "lab",
        *,
        inventory_dir: Path | None = None,
        settings: FleetflowSettings | None = None,
    ) -> None:
        if not _NAME_RE.match(name):
            raise ConfigurationError(
                f"lab name {name!r} is invalid: use 1-16 lowercase letters, digits or dashes, "
                "starting with a letter"
            )
        self.name = name
        self.settings = settings or get_settings()
        self.state_dir = self.settings.lab_dir / name
        if inventory_dir is None and self.exists():
            # Reopened lab: keep writing (and later removing) the inventory it was made with.
            inventory_dir = Path(json.loads(self._state_file.read_text())["inventory"]).parent
        self.inventory_dir = inventory_dir or self.state_dir / "inventory"

    # -- paths -------------------------------------------------------------------------
    @property
    def inventory_path(self) -> Path:
        return self.inventory_dir / "hosts.yml"

    @property
    def key_path(self) -> Path:
        return self.state_dir / "ssh/id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_dir / "ssh/known_hosts"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "lab.json"

    def _host_dir(self, name: str) -> Path:
        return self.state_dir / "hosts" / name

    # -- state -------------------------------------------------------------------------
    def exists(self) -> bool:
        return self._state_file.exists()

    def _load(self) -> tuple[int, dict[str, _HostRecord]]:
        data = json.loads(self._state_file.read_text())
        records = {h["name"]: _HostRecord(**h) for h in data["hosts"]}
        return int(data["subnet"]), records

    def _save(self, subnet: int, records: dict[str, _HostRecord]) -> None:
        data = {
            "name": self.name,
            "subnet": subnet,
            "port": self.settings.lab_ssh_port,
            "inventory": str(self.inventory_path),
            "hosts": [asdict(r) for r in sorted(records.values(), key=lambda r: r.index)],
        }
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self._state_file)

    def _allocate_subnet(self) -> int:
        used = set()
        for state in self.settings.lab_dir.glob("*/lab.json"):
            try:
                used.add(int(json.loads(state.read_text())["subnet"]))
            except (ValueError, KeyError, json.JSONDecodeError):
                continue
        for subnet in range(_FIRST_SUBNET, _LAST_SUBNET + 1):
            if subnet not in used:
                return subnet
        raise LabError("no free lab subnet left: remove a lab with 'fleetflow lab down'")

    def hosts(self) -> list[LabHost]:
        """The lab's hosts, in index order (empty if the lab does not exist)."""
        if not self.exists():
            return []
        _, records = self._load()
        return [self._lab_host(r) for r in sorted(records.values(), key=lambda r: r.index)]

    def host(self, name: str) -> LabHost:
        for host in self.hosts():
            if host.name == name:
                return host
        raise ConfigurationError(f"lab {self.name!r} has no host {name!r}")

    def _lab_host(self, record: _HostRecord) -> LabHost:
        group = GROUPS[(record.index - 1) % len(GROUPS)]
        return LabHost(record.name, record.address, self.settings.lab_ssh_port, group, record.index)

    # -- lifecycle ---------------------------------------------------------------------
    def up(self, count: int | None = None) -> list[LabHost]:
        """Make the lab have exactly `count` running hosts; keep the ones already running.

        With `count` None an existing lab keeps its size and a new one gets 5 hosts.
        On error, hosts started by this call are stopped again and a new lab is removed.
        """
        if count is not None and not 1 <= count <= MAX_HOSTS:
            raise ConfigurationError(
                f"host count must be between 1 and {MAX_HOSTS} (one /24 of loopback per lab), "
                f"got {count}"
            )
        check_lab_prerequisites()
        image = ensure_image(self.settings.image_dir, self.settings.lab_debian_suite)
        with file_lock(self.settings.lab_dir / ".lock"):
            created = not self.exists()
            try:
                return self._up_locked(image, count, created)
            except BaseException:
                if created:
                    self._down_locked()
                raise

    def _up_locked(self, image: Path, count: int | None, created: bool) -> list[LabHost]:
        if created:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.state_dir.chmod(0o700)
            subnet, records = self._allocate_subnet(), dict[str, _HostRecord]()
            _host.write_private_key(self.key_path, f"fleetflow-lab-{self.name}")
            self._save(subnet, records)
        else:
            subnet, records = self._load()
        wanted = count or len(records) or 5
        for record in [r for r in records.values() if r.index > wanted]:
            _host.stop_host(record.process)
            self._release_host(record)
            del records[record.name]
        started: list[_HostRecord] = []
        try:
            for index in range(1, wanted + 1):
                new = self._start_if_needed(image, subnet, index, records)
                if new is not None:
                    started.append(new)
                    self._save(subnet, records)
                step(f"lab {self.name}: hosts started", index, wanted)
            self._wait_ready(started)
        except BaseException:
            for record in started:
                _host.stop_host(record.process)
            raise
        self._write_known_hosts(records)
        self._write_inventory(records)
        self._share_group_vars()
        return self.hosts()

    def _start_if_needed(
        self, image: Path, subnet: int, index: int, records: dict[str, _HostRecord]
    ) -> _HostRecord | None:
        name = f"{self.name}-{index:02d}"
        record = records.get(name)
        if record is not None and _host.is_alive(record.process):
            return None
        spec = _host.HostSpec(name, f"127.0.{subnet}.{index}", self.settings.lab_ssh_port)
        host_dir = self._host_dir(name)
        if record is None or not (host_dir / "known_host").exists():
            self._check_address_free(spec)
            pub = self.key_path.with_suffix(".pub").read_text().strip()
            (host_dir / "upper").mkdir(parents=True, exist_ok=True)
            (host_dir / "known_host").write_text(_host.prepare_host(host_dir, spec, pub) + "\n")
        proc = _host.start_host(host_dir, image, spec)
        record = _HostRecord(index, name, spec.address, proc.pid, proc.start_time)
        records[name] = record
        return record

    def _check_address_free(self, spec: _host.HostSpec) -> None:
        if _host.port_open(spec.address, spec.port, timeout=0.2):
            raise LabError(
                f"{spec.address}:{spec.port} already answers: another sshd (maybe the "
                "controller's, listening on 0.0.0.0) holds it. Make it listen on 127.0.0.1 "
                "only, or set FLEETFLOW_LAB_SSH_PORT to another port."
            )

    def _wait_ready(self, records: list[_HostRecord], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(records)
        while pending:
            record = pending[0]
            if not _host.is_alive(record.process):
                raise LabError(
                    f"lab host {record.name} exited while starting:\n"
                    + _host.console_tail(self._host_dir(record.name))
                )
            if _host.port_open(record.address, self.settings.lab_ssh_port):
                pending.pop(0)
                answering = len(records) - len(pending)
                step(f"lab {self.name}: hosts answering SSH", answering, len(records))
            elif time.monotonic() > deadline:
                raise LabError(f"lab host {record.name} did not open its SSH port in {timeout} s")
            else:
                time.sleep(0.05)

    def _release_host(self, record: _HostRecord) -> None:
        self._forget_facts([record.name])
        shutil.rmtree(self._host_dir(record.name), ignore_errors=True)
        if shutil.which("iptables"):
            _net.restore(self.name, record.address)

    def down(self) -> None:
        """Stop every host and remove every process, rule and file the lab created."""
        with file_lock(self.settings.lab_dir / ".lock"):
            self._down_locked()

    def _down_locked(self) -> None:
        if self.exists():
            _, records = self._load()
            for record in records.values():
                _host.stop_host(record.process)
            self._forget_facts(list(records))
        if shutil.which("iptables"):
            _net.remove_chain(self.name)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        if self.state_dir.exists():
            raise LabError(f"could not remove {self.state_dir}")
        self.inventory_path.unlink(missing_ok=True)
        if self._in_project_inventory():
            link, ignore = self.inventory_dir / "group_vars", self.inventory_dir / ".gitignore"
            if link.is_symlink():  # a group_vars directory of its own is the operator's
                link.unlink()
            with contextlib.suppress(OSError):
                if ignore.read_text().startswith(_GITIGNORE_HEADER):
                    ignore.unlink()
            with contextlib.suppress(OSError):  # not empty: keeps what an operator put there
                self.inventory_dir.rmdir()

    def _forget_facts(self, names: list[str]) -> None:
        """A removed host's cached facts must not reach a new host of the same name; the
        engine would drop them anyway (a new host has a new key), this keeps none behind."""
        if self.settings.fact_cache_dir is not None and self.settings.fact_cache_dir.is_dir():
            forget_hosts(self.settings.fact_cache_dir, names)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # -- status and faults -------------------------------------------------------------
    def status(self) -> dict[str, HostState]:
        """The state of each host: running, frozen (SIGSTOP), cut (network) or stopped."""
        if not self.exists():
            return {}
        _, records = self._load()
        have_iptables = shutil.which("iptables") is not None
        result = {}
        for record in sorted(records.values(), key=lambda r: r.index):
            state = _host.process_state(record.process)
            if state in (None, "Z", "X"):
                result[record.name] = HostState.STOPPED
            elif state == "T":
                result[record.name] = HostState.FROZEN
            elif have_iptables and _net.is_cut(self.name, record.address):
                result[record.name] = HostState.CUT
            else:
                result[record.name] = HostState.RUNNING
        return result

    def _record(self, name: str) -> _HostRecord:
        if not self.exists():
            raise ConfigurationError(f"lab {self.name!r} is not up")
        _, records = self._load()
        if name not in records:
            raise ConfigurationError(
                f"lab {self.name!r} has no host {name!r}; it has {', '.join(sorted(records))}"
            )
        return records[name]

    def cut(self, name: str) -> None:
        """Drop all network traffic to and from the host."""
        _net.cut(self.name, self._record(name).address)

    def restore(self, name: str) -> None:
        """Undo `cut`."""
        _net.restore(self.name, self._record(name).address)

    def freeze(self, name: str) -> None:
        """SIGSTOP every process of the host: connections hang as on a stuck server."""
        _host.signal_host(self._record(name).process, signal.SIGSTOP)
        _host.wait_stopped(self._record(name).process, stopped=True)

    def thaw(self, name: str) -> None:
        """Undo `freeze`."""
        _host.signal_host(self._record(name).process, signal.SIGCONT)
        _host.wait_stopped(self._record(name).process, stopped=False)

    def kill(self, name: str) -> None:
        """Kill the host like a power cut; `up` starts it again with its disk intact."""
        _host.stop_host(self._record(name).process)

    # -- access ------------------------------------------------------------------------
    def ssh_args(self, name: str) -> list[str]:
        """An ssh command line (without the remote command) for the host, keys checked."""
        host = self.host(name)
        return [
            "ssh", "-i", str(self.key_path),
            "-o", f"UserKnownHostsFile={self.known_hosts_path}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
            "-p", str(host.port),
            f"root@{host.address}",
        ]  # fmt: skip

    def ssh(self, name: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the host over SSH (strict host key checking)."""
        return subprocess.run(
            [*self.ssh_args(name), command],
            stdin=subprocess.DEVNULL,  # ssh would otherwise read (and may unblock) our stdin
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _write_known_hosts(self, records: dict[str, _HostRecord]) -> None:
        lines = []
        for record in sorted(records.values(), key=lambda r: r.index):
            line = (self._host_dir(record.name) / "known_host").read_text().strip()
            if self.settings.lab_ssh_port != 22:
                addr, rest = line.split(" ", 1)
                line = f"[{addr}]:{self.settings.lab_ssh_port} {rest}"
            lines.append(line)
        self.known_hosts_path.write_text("\n".join(lines) + "\n")

    @property
    def shared_group_vars(self) -> Path:
        """Every lab's group_vars: those of the project's `lab` environment."""
        return self.settings.project_dir / "inventory" / "lab" / "group_vars"

    def _in_project_inventory(self) -> bool:
        """A named lab's environment, inventory/<name>, all of it written by the lab."""
        inventory = self.settings.project_dir / "inventory"
        return (
            self.inventory_dir.parent.resolve() == inventory.resolve()
            and self.inventory_dir.resolve() != self.shared_group_vars.parent.resolve()
        )

    def _share_group_vars(self) -> None:
        """A lab is a lab whatever its name: a playbook must configure it as it configures
        `lab`, not silently with the defaults. A symlink, not a copy, so that a change to
        inventory/lab/group_vars reaches every lab; a group_vars of its own is kept. The
        environment is generated (machine-specific paths): git is told to ignore it."""
        if not self._in_project_inventory():
            return
        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        (self.inventory_dir / ".gitignore").write_text(f"{_GITIGNORE_HEADER}\n*\n")
        link = self.inventory_dir / "group_vars"
        if self.shared_group_vars.is_dir() and not (link.exists() or link.is_symlink()):
            link.symlink_to(os.path.relpath(self.shared_group_vars, self.inventory_dir))

    def _write_inventory(self, records: dict[str, _HostRecord]) -> None:
        children: dict[str, dict[str, dict[str, dict[str, object]]]] = {
            group: {"hosts": {}} for group in GROUPS
        }
        for record in sorted(records.values(), key=lambda r: r.index):
            host = self._lab_host(record)
            children[host.group]["hosts"][host.name] = {
                "ansible_host": host.address,
                "ansible_port": host.port,
            }
        inventory = {
            "all": {
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.key_path),
                    "ansible_ssh_common_args": (
                        f"-o UserKnownHostsFile={self.known_hosts_path} "
                        "-o StrictHostKeyChecking=yes"
                    ),
                    "ansible_python_interpreter": "/usr/bin/python3",
                },
                "children": {g: c for g, c in children.items() if c["hosts"]},
            }
        }
        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        header = (
            "---\n" + f"# Generated by 'fleetflow lab up' for lab {self.name!r}; do not edit.\n"
        )
        self.inventory_path.write_text(header + yaml.safe_dump(inventory, sort_keys=False))
