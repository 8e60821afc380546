"""Checks that the machine can run a lab, with messages that say how to fix it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from fleetflow.exceptions import PrerequisiteMissing

# tool -> Debian package that provides it
_TOOLS = {
    "unshare": "util-linux",
    "setsid": "util-linux",
    "mount": "mount",
    "chroot": "coreutils",
    "ssh": "openssh-client",
}


def require_tool(tool: str, package: str) -> str:
    """Return the path of `tool` or raise PrerequisiteMissing naming its package."""
    path = shutil.which(tool)
    if path is None:
        raise PrerequisiteMissing(
            f"'{tool}' is not installed; install it with: apt-get install -y {package}"
        )
    return path


def check_lab_prerequisites() -> None:
    """Fail early and clearly when this machine cannot host lab hosts."""
    if os.geteuid() != 0:
        raise PrerequisiteMissing(
            "the lab needs root: it mounts overlay filesystems and creates mount, UTS and "
            "PID namespaces for every host. Run it as root (e.g. sudo fleetflow lab up)."
        )
    for tool, package in _TOOLS.items():
        require_tool(tool, package)
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise PrerequisiteMissing(
            "the kernel has no overlay filesystem; load it with: modprobe overlay"
        )
    probe = subprocess.run(
        ["unshare", "--mount", "--uts", "--pid", "--fork", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        raise PrerequisiteMissing(
            "this machine does not let us create mount/UTS/PID namespaces "
            f"(unshare said: {probe.stderr.strip() or probe.returncode}). Lab hosts need "
            "them; run on a VM or a privileged container."
        )
