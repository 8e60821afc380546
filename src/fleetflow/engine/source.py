"""Which content a run used: the git commit of the repository it ran from, and whether the
files on disk were exactly that commit.

Two ways a run gets its content:

- **checkout**: a deployment's pull step (`fleetflow.ops.checkout.checkout`) fetched a
  commit from the git remote into a directory of its own and said so in the process's
  environment (SOURCE_VARIABLE). Its files are the commit's, so the run is clean.
- **working tree**: the run reads a checkout someone works in (a laptop, `make demo`, a
  deployment made with `fleetflow deploy --working-tree`). git says which commit is checked
  out and whether anything differs from it; a directory outside git is unknown content,
  which counts as dirty.

`content_digest` fingerprints the files a playbook run reads, so an approved plan can be
held to the content it was planned with (flowkit/change.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "SOURCE_VARIABLE",
    "Source",
    "changed_paths",
    "content_digest",
    "describe",
]

# Set by the checkout pull step in the flow-run process: {"directory", "commit", "ref",
# "remote"}, JSON. Only trusted for the directory it names.
SOURCE_VARIABLE = "FLEETFLOW_SOURCE"
# What a playbook run reads from the repository besides its inventory.
_CONTENT = ("ansible.cfg", "playbooks", "roles", "scripts", "galaxy")
# git status takes ~10 ms on this repository; a broken or hung git must not stall a run.
_GIT_TIMEOUT = 20


class Source(BaseModel):
    """The repository state a run used."""

    model_config = ConfigDict(frozen=True)

    commit: str = ""
    ref: str = ""
    dirty: bool = True
    origin: Literal["checkout", "working tree"] = "working tree"

    @property
    def short(self) -> str:
        return self.commit[:12] or "unknown"

    def __str__(self) -> str:
        where = f" ({self.ref})" if self.ref else ""
        if not self.commit:
            return "not a git commit (content unknown)"
        state = ", uncommitted changes" if self.dirty else ""
        return f"commit {self.short}{where}{state}"


def describe(project_dir: Path) -> Source:
    """The state of `project_dir`: the checkout the pull step made, else what git says."""
    directory = project_dir.resolve()
    checkout = _checkout_source(directory)
    return checkout if checkout is not None else _git_source(directory)


def _checkout_source(directory: Path) -> Source | None:
    raw = os.environ.get(SOURCE_VARIABLE)
    if not raw:
        return None
    try:
        said = json.loads(raw)
        if Path(str(said["directory"])).resolve() != directory:
            return None
        return Source(commit=said["commit"], ref=said.get("ref", ""), dirty=False,
                      origin="checkout")  # fmt: skip
    except (ValueError, KeyError, TypeError, ValidationError):
        return None


def _git_source(directory: Path) -> Source:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain=v2", "--branch",
             "--untracked-files=normal"],
            capture_output=True, text=True, timeout=_GIT_TIMEOUT, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return Source()
    if done.returncode != 0:
        return Source()
    commit = ref = ""
    dirty = False
    for line in done.stdout.splitlines():
        if line.startswith("# branch.oid ") and line[13:] != "(initial)":
            commit = line[13:]
        elif line.startswith("# branch.head ") and line[14:] != "(detached)":
            ref = line[14:]
        elif not line.startswith("#"):
            dirty = True
    return Source(commit=commit, ref=ref, dirty=dirty or not commit)


def content_digest(project_dir: Path, inventory_dir: Path) -> dict[str, str]:
    """sha256 of every file a playbook run reads: ansible.cfg, playbooks/, roles/,
    scripts/, galaxy/ and the inventory's directory, by path (links followed, as Ansible
    follows them)."""
    root = project_dir.resolve()
    digest: dict[str, str] = {}
    for name in _CONTENT:
        _add(digest, root / name, name)
    _add(digest, inventory_dir, _label(inventory_dir, root))
    return digest


def _label(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _add(digest: dict[str, str], top: Path, label: str) -> None:
    if top.is_file():
        digest[label] = _hash(top)
        return
    for directory, dirs, files in os.walk(top, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            path = Path(directory, name)
            if path.is_file():
                digest[f"{label}/{path.relative_to(top)}"] = _hash(path)


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def changed_paths(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """What differs between two digests, one `path (modified|added|removed)` each."""
    paths: Iterable[str] = sorted(set(before) | set(after))
    changes = []
    for path in paths:
        if path not in after:
            changes.append(f"{path} (removed)")
        elif path not in before:
            changes.append(f"{path} (added)")
        elif before[path] != after[path]:
            changes.append(f"{path} (modified)")
    return changes
