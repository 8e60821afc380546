"""How Ansible is called: which CLI, with which environment, and how its listings read.

Every Ansible command fleetflow starts (the run's ansible-playbook through ansible-runner,
the preflight, ansible-inventory, the repository checks) gets its program from
`ansible_tool` and the settings below, so a run and the checks before it cannot disagree
about strict inventory parsing or host key checking.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from fleetflow.exceptions import ConfigurationError

__all__ = [
    "ANSIBLE_FLAGS",
    "ansible_environment",
    "ansible_tool",
    "inherited",
    "natural_key",
    "parse_graph",
]

# What every Ansible command of ours runs with: an unparsable inventory source is an
# error (not an empty inventory), unknown host keys are refused, output is plain text.
ANSIBLE_FLAGS: Mapping[str, str] = {
    "ANSIBLE_HOST_KEY_CHECKING": "True",
    "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
    "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
    "ANSIBLE_NOCOLOR": "True",
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
}

# What Ansible inherits from our environment; the rest (PREFECT_*, FLEETFLOW_*: the API
# credential, the database URL, CI secrets) stays out of reach of its plugins and tasks.
# FLEETFLOW_STACK_MARK (a directory's path) lets `stack down` find every process of its runs.
_INHERITED = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TERM", "TMPDIR", "SSH_AUTH_SOCK",
     "FLEETFLOW_STACK_MARK"}
)  # fmt: skip
_INHERITED_PREFIXES = ("ANSIBLE_", "LC_")


def ansible_tool(name: str) -> str:
    """Path of an Ansible CLI from this interpreter's environment (then PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ConfigurationError(f"{name} is not installed in this environment")
    return found


def inherited(name: str) -> bool:
    """Whether an environment variable of ours may reach Ansible."""
    return name in _INHERITED or name.startswith(_INHERITED_PREFIXES)


def ansible_environment(project_dir: Path) -> dict[str, str]:
    """Environment for Ansible commands: the project's ansible.cfg, ANSIBLE_FLAGS, and only
    the allow-listed part of ours."""
    env = {key: value for key, value in os.environ.items() if inherited(key)}
    cfg = project_dir / "ansible.cfg"
    if cfg.exists():
        env["ANSIBLE_CONFIG"] = str(cfg)
    env.update(ANSIBLE_FLAGS)
    return env


def natural_key(name: str) -> list[int | str]:
    """Sort key putting web-2 before web-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def parse_graph(text: str) -> dict[str, list[str]]:
    """Parse `ansible-inventory --graph` ("@all:", "  |--@web:", "  |  |--web-01") into
    each host's groups, ancestors included, all/ungrouped left out."""
    groups: dict[str, set[str]] = {}
    path: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        depth = line.find("--") // 3 + 1 if "--" in line else 0
        name = line.split("--", 1)[-1].strip()
        del path[depth:]
        if name.startswith("@") and name.endswith(":"):
            path.append(name[1:-1])
        else:
            groups.setdefault(name, set()).update(g for g in path if g not in ("all", "ungrouped"))
    return {host: sorted(names) for host, names in groups.items()}
