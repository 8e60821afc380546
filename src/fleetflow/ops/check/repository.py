"""`fleetflow check`: validate the whole repository without touching any host.

Every playbook passes Ansible's syntax check, every inventory parses (strictly), every
deployment of prefect.yaml loads its flow with parameters its schema accepts, valid
schedules, a known pool and queue, and a limit that matches hosts of its inventory; the
stack file, the automations, the inventories' blackout windows and the playbooks'
variable declarations (playbooks/params/) are valid; requirements.yml is valid and
installed as it reads; yamllint and ansible-lint pass (on our files: not on galaxy/).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from fleetflow.engine._ansible import ansible_environment, ansible_tool
from fleetflow.engine.blackouts import BLACKOUTS_FILE, load_blackouts
from fleetflow.engine.inventory import host_groups
from fleetflow.exceptions import ConfigurationError, FleetflowError
from fleetflow.ops.check.deployments import Problem, check_deployment
from fleetflow.ops.galaxy import INSTALL_HINT, REQUIREMENTS_FILE, InstallStatus, install_status

__all__ = ["CheckReport", "Problem", "check_project"]

_HOST_PARAMETERS = ("limit", "hosts")


@dataclass
class CheckReport:
    checked: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.error]


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def _run(
    argv: list[str], project_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=project_dir, env=env or ansible_environment(project_dir),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def _syntax(project_dir: Path, galaxy: InstallStatus, playbook: Path) -> list[Problem]:
    """Ansible's syntax check, with the project's ansible.cfg: roles and collections of
    requirements.yml are read (and checked) where `make galaxy` installed them."""
    argv = [ansible_tool("ansible-playbook"), "-i", "localhost,", "--syntax-check", str(playbook)]
    done = _run(argv, project_dir)
    if done.returncode == 0:
        return []
    output = done.stdout + done.stderr
    hint = galaxy.hint(output)
    first = next((line for line in output.splitlines() if "[ERROR]" in line), "")
    message = f"{hint} ({first.strip() or _tail(output, 3)})" if hint else _tail(output)
    return [Problem(str(playbook.relative_to(project_dir)), message)]


def _requirements(project_dir: Path, report: CheckReport) -> InstallStatus:
    """requirements.yml is valid and installed as it reads (galaxy/ is not linted: it is
    the playbooks' syntax check that reads it)."""
    try:
        status = install_status(project_dir)
    except ConfigurationError as exc:
        report.problems.append(Problem(REQUIREMENTS_FILE, str(exc)))
        return InstallStatus(None)
    if status.requirements is not None:
        report.checked.append(REQUIREMENTS_FILE)
    report.problems += [
        Problem(REQUIREMENTS_FILE, f"{why}: {INSTALL_HINT}") for why in status.pending
    ]
    return status


def _inventory(project_dir: Path, directory: Path) -> list[Problem]:
    where = str(directory.relative_to(project_dir))
    if not any(directory.glob("hosts*")):
        return [Problem(where, "no hosts file yet (for the lab: fleetflow lab up)", error=False)]
    done = _run([ansible_tool("ansible-inventory"), "-i", str(directory), "--list"], project_dir)
    return [] if done.returncode == 0 else [Problem(where, _tail(done.stdout + done.stderr))]


def _blackouts(project_dir: Path, directory: Path) -> list[Problem]:
    """The windows must load; a group no host of the inventory is in is likely a typo."""
    where = str((directory / BLACKOUTS_FILE).relative_to(project_dir))
    try:
        blackouts = load_blackouts(directory)
    except ConfigurationError as exc:
        return [Problem(where, str(exc))]
    named = {group for w in blackouts.windows for group in w.groups} - {"all", "ungrouped"}
    if not named or not any(directory.glob("hosts*")):
        return []
    known = {group for groups in host_groups(directory, project_dir).values() for group in groups}
    if not known:
        return []  # the inventory's own check says why it does not parse
    return [
        Problem(where, f"window {w.name!r}: no host of {directory.name} is in group {g!r}", False)
        for w in blackouts.windows
        for g in w.groups
        if g in named - known
    ]


def _declarations(project_dir: Path, report: CheckReport) -> None:
    """Each declaration loads, and belongs to a playbook (a typo would declare nothing)."""
    from fleetflow.engine.variables import load_declaration

    playbooks = project_dir / "playbooks"
    for path in sorted((playbooks / "params").glob("*.y*ml")):
        where = str(path.relative_to(project_dir))
        playbook = playbooks / f"{path.stem}.yml"
        if not playbook.exists():
            report.problems.append(
                Problem(where, f"declares variables of no playbook ({path.stem})")
            )
            continue
        try:
            load_declaration(playbook)
        except ConfigurationError as exc:
            report.problems.append(Problem(where, str(exc)))
            continue
        report.checked.append(f"variables of {path.stem}")


def _lint(project_dir: Path, tool: str, *args: str) -> list[Problem]:
    binary = Path(sys.executable).parent / tool
    # The linters run Ansible their own way: not under the engine's strict settings.
    done = _run([str(binary), *args], project_dir, env=dict(os.environ))
    return [] if done.returncode == 0 else [Problem(tool, _tail(done.stdout + done.stderr, 15))]


def _limit_matches(project_dir: Path, inventory: Path, pattern: str) -> list[str]:
    argv = [ansible_tool("ansible"), "-i", str(inventory), "--list-hosts", pattern]
    done = _run(argv, project_dir)
    if done.returncode != 0:
        return []
    return [line.strip() for line in done.stdout.splitlines()[1:] if line.strip()]


def _stack_queues(project_dir: Path, report: CheckReport) -> dict[str, set[str]]:
    from fleetflow.stack import StackConfig

    path = project_dir / "deployments" / "stack.yaml"
    try:
        config = StackConfig.load(path)
    except FleetflowError as exc:
        report.problems.append(Problem("deployments/stack.yaml", str(exc)))
        return {}
    report.checked.append("deployments/stack.yaml")
    return {config.work_pool.name: {q.name for q in config.work_pool.queues}}


def _automations(project_dir: Path, report: CheckReport) -> None:
    from fleetflow.alerts._apply import _desired, load_specs

    try:
        for spec in load_specs(project_dir / "deployments" / "automations"):
            _desired(spec, {}, [], deployment_id="0" * 32 if spec.deployment else None)
            report.checked.append(f"automation {spec.automation['name']}")
    except FleetflowError as exc:
        report.problems.append(Problem("deployments/automations", str(exc)))


def _deployments(project_dir: Path) -> list[dict[str, Any]]:
    path = project_dir / "deployments" / "prefect.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    return list(data.get("deployments") or [])


def check_project(project_dir: Path, lint: bool = True) -> CheckReport:
    """Everything wrong with the repository that can be found without a host."""
    report = CheckReport()
    jobs: list[tuple[str, Callable[[], list[Problem]]]] = []
    galaxy = _requirements(project_dir, report)
    for playbook in sorted((project_dir / "playbooks").glob("*.yml")):
        jobs.append((f"playbook {playbook.name}", partial(_syntax, project_dir, galaxy, playbook)))
    for directory in sorted(p for p in (project_dir / "inventory").iterdir() if p.is_dir()):
        jobs.append((f"inventory {directory.name}", partial(_inventory, project_dir, directory)))
        if (directory / BLACKOUTS_FILE).exists():
            job = partial(_blackouts, project_dir, directory)
            jobs.append((f"blackout windows {directory.name}", job))
    if lint:
        jobs.append(("yamllint", lambda: _lint(project_dir, "yamllint", "--strict", ".")))
        jobs.append(("ansible-lint", lambda: _lint(project_dir, "ansible-lint", "-q")))
    known = _stack_queues(project_dir, report)
    _automations(project_dir, report)
    _declarations(project_dir, report)
    try:
        deployments = _deployments(project_dir)
    except (OSError, yaml.YAMLError) as exc:
        report.problems.append(Problem("deployments/prefect.yaml", str(exc)))
        deployments = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda job: job[1](), jobs)
        # Flows are imported here, on this thread, while the subprocess checks run.
        for spec in deployments:
            report.checked.append(f"deployment {spec.get('name')} ({spec.get('entrypoint')})")
            report.problems += check_deployment(project_dir, spec, known, _limit_matches)
        for (name, _), problems in zip(jobs, results, strict=True):
            report.checked.append(name)
            report.problems.extend(problems)
    return report
