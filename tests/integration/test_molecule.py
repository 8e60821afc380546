"""Every role's Molecule scenario, run for real against lab hosts (`molecule test`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from fleetflow.lab import Lab

from ..conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
ROLES = sorted(p.parents[2].name for p in REPO.glob("roles/*/molecule/default/molecule.yml"))
# Lab names are short (16 characters): a short per-session prefix keeps them unique.
PREFIX = f"m{os.getpid() % 10000}"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
Scenario = tuple[Path, "Future[tuple[int, str]]"]  # role directory, its `molecule test`
SEQUENCE = ("syntax", "create", "converge", "idempotence", "verify", "destroy")


def _molecule_test(role_dir: Path, ephemeral: Path) -> tuple[int, str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLEETFLOW_MOLECULE_PREFIX": PREFIX,
        # Molecule keys its working directory by the role directory's name, which the
        # broken copy shares with script_runner: give each run its own.
        "MOLECULE_EPHEMERAL_DIRECTORY": str(ephemeral),
        # Molecule links the role under test into ANSIBLE_HOME/roles by its galaxy
        # name; script_runner and its broken copy share that name, and two runs
        # replacing one link at once raced (FileExistsError): one home per run.
        "ANSIBLE_HOME": str(ephemeral / "ansible-home"),
        "NO_COLOR": "1",
        "ANSIBLE_NOCOLOR": "1",
    }
    done = subprocess.run(
        [str(BIN / "molecule"), "test"], cwd=role_dir, env=env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    return done.returncode, _ANSI.sub("", done.stdout + done.stderr)


def _lab_name(role_dir: Path) -> str:
    platform = re.search(
        r"name: \$\{FLEETFLOW_MOLECULE_PREFIX:-mol\}-(\S+)-01$", _scenario(role_dir), re.M
    )
    assert platform, "platform name not found"
    return f"{PREFIX}-{platform.group(1)}"


def _scenario(role_dir: Path) -> str:
    return (role_dir / "molecule/default/molecule.yml").read_text()


def _broken_copy(root: Path) -> Path:
    """script_runner with a task that always changes."""
    for part in ("roles/script_runner", "tests/molecule", "scripts"):
        shutil.copytree(REPO / part, root / part)
    role_dir = root / "roles/script_runner"
    scenario = role_dir / "molecule/default/molecule.yml"
    scenario.write_text(_scenario(role_dir).replace("-scripts-01", "-broken-01"))
    with (role_dir / "tasks/main.yml").open("a") as tasks:
        tasks.write(
            "\n- name: Record the time of every run\n"
            "  ansible.builtin.command: date\n"
            "  changed_when: true\n"
        )
    return role_dir


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Scenario]]:
    """Every scenario plus the broken copy, run at once: each has a lab of its own and
    most of a run is waiting on SSH round trips, so together they take about as long as
    the slowest one alone."""
    root = tmp_path_factory.mktemp("molecule")
    dirs = {role: REPO / "roles" / role for role in ROLES}
    dirs["broken"] = _broken_copy(root / "broken")
    with ThreadPoolExecutor(max_workers=len(dirs)) as pool:
        yield {
            name: (role_dir, pool.submit(_molecule_test, role_dir, root / f"ephemeral-{name}"))
            for name, role_dir in dirs.items()
        }


def test_every_role_has_a_scenario() -> None:
    roles = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())
    assert roles == ROLES and len(ROLES) >= 3


@pytest.mark.parametrize("role", ROLES)
def test_role_passes_its_molecule_scenario(role: str, scenarios: dict[str, Scenario]) -> None:
    role_dir, run = scenarios[role]
    rc, output = run.result()
    assert rc == 0, output[-6000:]
    for step in SEQUENCE:
        assert f"{step}: Executed: Successful" in output, f"{step} did not run:\n{output[-3000:]}"
    assert not Lab(_lab_name(role_dir)).exists(), "destroy left the scenario's lab behind"


def test_a_task_that_always_changes_fails_the_idempotence_step(
    scenarios: dict[str, Scenario],
) -> None:
    role_dir, run = scenarios["broken"]
    rc, output = run.result()
    assert rc != 0, output[-3000:]
    assert "converge: Executed: Successful" in output
    report = output.partition("Idempotence test failed because of the following tasks:")[2]
    assert "script_runner : Record the time of every run" in report, output[-3000:]
    assert "verify: Executed" not in output
    assert not Lab(_lab_name(role_dir)).exists(), "the failed scenario left its lab behind"
