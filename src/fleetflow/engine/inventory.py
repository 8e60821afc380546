"""Find playbooks and inventories, and check a run request without touching any host.

The check runs ``ansible-playbook --list-hosts --list-tasks``: Ansible itself parses the
inventory (strictly: an unparsable source is an error, not an empty inventory), the
playbook (syntax, roles, imports) and resolves the limit with its own pattern rules.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetflow.engine._ansible import ansible_environment, ansible_tool, natural_key, parse_graph
from fleetflow.engine.request import RunRequest
from fleetflow.engine.secrets import write_private
from fleetflow.engine.variables import check_variables, unsafe_yaml
from fleetflow.exceptions import (
    ConfigurationError,
    InventoryError,
    NoHostsMatched,
    PlaybookError,
)

__all__ = [
    "Preflight",
    "files_below",
    "host_addresses",
    "host_groups",
    "inventory_names",
    "playbook_names",
    "preflight",
    "require_vault_password",
    "resolve_inventory",
    "resolve_playbook",
]

_PLAYBOOK_SUFFIXES = (".yml", ".yaml")
_HOST_LINE = re.compile(r"^ {6}(\S.*)$")
_VAULT_HEADER = b"$ANSIBLE_VAULT;"
# What a playbook or environment may be called to be chosen by name.
_REPOSITORY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


@dataclass(frozen=True)
class Preflight:
    """What a run request resolves to, found without contacting any host."""

    playbook: Path
    inventory: Path
    hosts: tuple[str, ...]
    task_count: int


def _probe(path: Path, test: Callable[[Path], bool]) -> bool:
    """A filesystem test that says False for names the OS refuses (too long, NUL bytes)."""
    try:
        return test(path)
    except (OSError, ValueError):
        return False


def playbook_names(project_dir: Path) -> list[str]:
    """The repository's playbooks by name: the stems of playbooks/*.yml (and *.yaml)."""
    base = project_dir / "playbooks"
    if not base.is_dir():
        return []
    found = {p.stem for p in base.iterdir() if p.suffix in _PLAYBOOK_SUFFIXES and p.is_file()}
    return sorted(n for n in found if _REPOSITORY_NAME.match(n))


def inventory_names(project_dir: Path) -> list[str]:
    """The repository's environments by name: the directories under inventory/."""
    base = project_dir / "inventory"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and _REPOSITORY_NAME.match(p.name))


def _shown(text: str, limit: int = 80) -> str:
    """A caller's text quoted in a message, cut short: a message must stay a line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def resolve_playbook(playbook: str | Path, project_dir: Path) -> Path:
    """A playbook name under playbooks/ ("site" or "site.yml") or a path to one."""
    text = str(playbook).strip()
    if not text:
        raise PlaybookError("no playbook given")
    candidates = [Path(text)] if Path(text).is_absolute() else [project_dir / text]
    base = project_dir / "playbooks"
    candidates += [base / text, *(base / f"{text}{suffix}" for suffix in _PLAYBOOK_SUFFIXES)]
    for candidate in candidates:
        if _probe(candidate, Path.is_file):
            return candidate.resolve()
    raise PlaybookError(
        f"playbook {_shown(text)} not found (looked in {base}); known playbooks: "
        f"{', '.join(playbook_names(project_dir)) or 'none'}"
    )


def resolve_inventory(inventory: str | Path, project_dir: Path) -> Path:
    """An environment name under inventory/ ("lab", "staging") or a path to an inventory."""
    text = str(inventory).strip()
    if not text:
        raise InventoryError("no inventory given")
    path = Path(text)
    direct = path if path.is_absolute() else project_dir / path
    for candidate in (direct, project_dir / "inventory" / text):
        if _probe(candidate, Path.exists):
            _require_hosts_file(candidate)
            return candidate.resolve()
    base = project_dir / "inventory"
    raise InventoryError(
        f"unknown inventory {_shown(text)}: no such environment under {base} or path; "
        f"environments: {', '.join(inventory_names(project_dir)) or 'none'}"
    )


def _require_hosts_file(inventory: Path) -> None:
    """An environment directory holding only group_vars/host_vars has no hosts to run on."""
    if not inventory.is_dir():
        return
    sources = [p for p in inventory.iterdir() if p.name not in ("group_vars", "host_vars")]
    if not sources:
        hint = " (the lab's is written by 'fleetflow lab up')" if inventory.name == "lab" else ""
        raise InventoryError(f"inventory {inventory} has no hosts file{hint}")


def require_vault_password(inventory: Path) -> None:
    """For a run without a vault password: refuse an inventory with a vault-encrypted
    file. Ansible opens such a vars file for every host it loads, so without the password
    it plays nothing; the preflight's host listing does not load them, so it passed and
    the run failed (exit 4) with every host skipped. (Not in the preflight: resolve_hosts
    asks for hosts without a run's secrets.)"""
    if not inventory.is_dir():
        return
    for path in files_below(inventory):
        if _vault_encrypted(path):
            raise InventoryError(
                f"inventory {inventory.name} has a vault-encrypted file "
                f"({path.relative_to(inventory)}) and the run has no vault password: "
                "name its Secret block with vault_password_secret"
            )


def files_below(directory: Path) -> list[Path]:
    """Every file below `directory`, through symlinked directories (a named lab's
    group_vars is one), each real directory once."""
    files, seen = [], set()
    for root, dirs, names in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        files += [Path(root) / name for name in sorted(names)]
    return files


def _vault_encrypted(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(_VAULT_HEADER)) == _VAULT_HEADER
    except OSError:
        return False


def preflight(request: RunRequest) -> Preflight:
    """Check a run request with Ansible itself; raise ConfigurationError on bad input."""
    project_dir, limit = request.project_dir, request.limit
    playbook = resolve_playbook(request.playbook, project_dir)
    inventory = resolve_inventory(request.inventory, project_dir)
    # None: only the hosts are asked for (resolve_hosts); a run always passes a mapping.
    extra_vars = request.extra_vars
    variables = {} if extra_vars is None else check_variables(playbook, extra_vars)
    if limit is not None and not limit.strip():
        raise NoHostsMatched("limit is empty: give a host pattern or leave it unset")
    # Named for the sweep that removes what a killed process left (fleetflow.engine.sweep).
    with tempfile.TemporaryDirectory(prefix=f"ff-preflight-{os.getpid()}-") as tmp:
        proc = subprocess.run(
            _listing_command(request, playbook, inventory, variables, Path(tmp)),
            # Ansible refuses a non-blocking stdin, which a worker or CLI may have left us.
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=project_dir,
            env=ansible_environment(project_dir),
            check=False,
            timeout=300,
        )
    if proc.returncode != 0:
        error = _classify_failure(proc.stdout + proc.stderr, playbook, inventory, limit)
        if isinstance(error, NoHostsMatched):
            raise NoHostsMatched(f"{error}; {_what_exists(inventory, project_dir)}")
        raise error
    hosts, tasks = _parse_listing(proc.stdout)
    if not hosts:
        raise NoHostsMatched(
            f"no host of inventory {request.inventory} matches the plays of {playbook.name}"
            + (f" with limit {limit!r}" if limit else "")
            + f"; {_what_exists(inventory, project_dir)}"
        )
    return Preflight(playbook, inventory, tuple(sorted(hosts, key=natural_key)), tasks)


def _listing_command(
    request: RunRequest,
    playbook: Path,
    inventory: Path,
    variables: dict[str, Any],
    tmp: Path,
) -> list[str]:
    """`ansible-playbook --list-hosts --list-tasks` for the request; files in `tmp`."""
    cmd = [ansible_tool("ansible-playbook"), "-i", str(inventory)]
    cmd += ["--list-hosts", "--list-tasks", str(playbook)]
    if request.limit:
        cmd += ["--limit", request.limit]
    if request.tags:
        cmd += ["--tags", ",".join(request.tags)]
    if request.skip_tags:
        cmd += ["--skip-tags", ",".join(request.skip_tags)]
    if variables:
        # Through a 0600 file, never the command line (visible in ps); as data only.
        vars_file = write_private(tmp / "extra_vars.yml", unsafe_yaml(variables))
        cmd += ["-e", f"@{vars_file}"]
    if (vault_password := request.secrets.vault_password) is not None:
        vault_file = write_private(tmp / "vault", vault_password.get_secret_value())
        cmd += ["--vault-password-file", str(vault_file)]
    return cmd


def _classify_failure(
    output: str, playbook: Path, inventory: Path, limit: str | None
) -> ConfigurationError:
    message = _error_text(output)
    if "no hosts to target" in message or "Could not match supplied host pattern" in output:
        return NoHostsMatched(f"limit {limit!r} matches no host in inventory {inventory.name}")
    if "inventory" in message.lower() and str(playbook) not in message:
        return InventoryError(f"inventory {inventory} cannot be used: {message}")
    return PlaybookError(f"playbook {playbook.name} is not valid: {message}")


def _what_exists(inventory: Path, project_dir: Path, shown: int = 5) -> str:
    """What a limit could have named: the inventory's groups and its first hosts."""
    of_host = host_groups(inventory, project_dir)
    groups = sorted({g for gs in of_host.values() for g in gs}, key=natural_key)
    hosts = sorted(of_host, key=natural_key)

    def listed(names: list[str]) -> str:
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        return ", ".join(names[:shown]) + more if names else "none"

    return f"groups: {listed(groups)}; hosts: {listed(hosts)}"


def _error_text(output: str) -> str:
    """Ansible's own error lines, without the noise around them."""
    lines = [ln.rstrip() for ln in output.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "ERROR" in ln), 0)
    return "\n".join(lines[start : start + 12]) or "ansible-playbook failed without a message"


def _parse_listing(stdout: str) -> tuple[list[str], int]:
    hosts: list[str] = []
    tasks = 0
    section = ""
    for line in stdout.splitlines():
        stripped = line.strip()
        if line.startswith("    hosts ("):
            section = "hosts"
        elif line.startswith("    tasks:"):
            section = "tasks"
        elif line.startswith("  play #"):
            section = ""
        elif section == "hosts" and (match := _HOST_LINE.match(line)):
            if match.group(1) not in hosts:
                hosts.append(match.group(1))
        elif section == "tasks" and line.startswith("      ") and stripped:
            tasks += 1
    return hosts, tasks


def _inventory_cli(
    inventory: Path, project_dir: Path, option: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`ansible-inventory -i INVENTORY OPTION`, with the project's Ansible environment."""
    return subprocess.run(
        [ansible_tool("ansible-inventory"), "-i", str(inventory), option],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=project_dir,
        env=ansible_environment(project_dir), check=False, timeout=timeout,
    )  # fmt: skip


def host_groups(inventory: Path, project_dir: Path, timeout: float = 60) -> dict[str, list[str]]:
    """Each host's groups (ancestors included; not all/ungrouped), from `ansible-inventory
    --graph`, which reads no variables (so needs no vault password). Empty on failure:
    callers use the groups as metric labels, never for deciding what to run.
    """
    try:
        proc = _inventory_cli(inventory, project_dir, "--graph", timeout)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_graph(proc.stdout) if proc.returncode == 0 else {}


def host_addresses(inventory: Path, project_dir: Path, timeout: float = 60) -> set[str]:
    """Every host's name and `ansible_host` address, from `ansible-inventory --list`.

    The vault is not opened (no password here): a vaulted `ansible_host` is not listed.
    """
    try:
        proc = _inventory_cli(inventory, project_dir, "--list", timeout)
        hostvars = json.loads(proc.stdout or "{}").get("_meta", {}).get("hostvars", {})
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise InventoryError(f"cannot list the hosts of {inventory}: {exc}") from exc
    found = set(hostvars)
    found.update(str(v["ansible_host"]) for v in hostvars.values() if "ansible_host" in v)
    return found
