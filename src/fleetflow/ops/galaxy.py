"""Roles and collections from outside the repository: requirements.yml, installed into
galaxy/ by `make galaxy` (``python -m fleetflow.ops.galaxy``).

ansible.cfg reads galaxy/roles after the repository's own roles/, and galaxy/collections
only (a collection installed for the user elsewhere is not used by a run, so every
machine runs what requirements.yml lists). git ignores galaxy/, and yamllint and
ansible-lint skip it: vendored content keeps its authors' style. `fleetflow check` still
syntax-checks the playbooks that use it, and says when requirements.yml is not installed
as it reads now.

The file is validated here before ansible-galaxy sees it: ansible-galaxy drops the keys of
a role entry it does not know without a word, so a typo such as ``verison:`` would
install another version than the one asked for.

An install writes into a fresh directory and replaces galaxy/roles and galaxy/collections
only when it succeeded, so a failed download leaves the previous install usable; what
requirements.yml no longer lists is gone afterwards. galaxy/.installed.json records the
file's digest: `make galaxy` does nothing while it matches (and never runs ansible-galaxy
for empty lists), so every make target may depend on it, offline too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleetflow.engine._ansible import ansible_tool
from fleetflow.exceptions import ConfigurationError, FleetflowError

__all__ = [
    "COLLECTIONS_DIR",
    "INSTALL_HINT",
    "REQUIREMENTS_FILE",
    "ROLES_DIR",
    "CollectionRequirement",
    "InstallResult",
    "InstallStatus",
    "Requirements",
    "RoleRequirement",
    "install",
    "install_status",
    "load_requirements",
]

REQUIREMENTS_FILE = "requirements.yml"
ROLES_DIR = "galaxy/roles"
COLLECTIONS_DIR = "galaxy/collections"
INSTALL_HINT = "run `make galaxy`"
_STAMP = "galaxy/.installed.json"
# What ansible-galaxy reads; it silently drops any other key of a role entry.
_ROLE_KEYS = frozenset({"src", "name", "scm", "version", "role"})
_COLLECTION_KEYS = frozenset({"name", "version", "type", "source", "signatures"})
_COLLECTION_TYPES = frozenset({"galaxy", "git", "file", "url", "dir", "subdirs"})
_SCMS = frozenset({"git", "hg"})
_UNREACHABLE = (
    " (no Galaxy server answered: point [galaxy] server_list in ansible.cfg at the one you can "
    "reach, or use git or tarball sources; docs/how-to/roles.md)"
)
_FQCN = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class RoleRequirement:
    """A role entry: the directory it installs as (galaxy/roles/<name>) and its source."""

    name: str
    src: str


@dataclass(frozen=True)
class CollectionRequirement:
    """A collection entry. ``fqcn`` is known before the install for Galaxy entries only
    (a tarball, git or directory source names its collection inside)."""

    name: str
    type: str

    @property
    def fqcn(self) -> str | None:
        if self.type != "galaxy":
            return None
        return self.name.split(":", 1)[0].strip()


@dataclass(frozen=True)
class Requirements:
    path: Path
    digest: str
    roles: tuple[RoleRequirement, ...] = ()
    collections: tuple[CollectionRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.roles and not self.collections

    def lists(self, name: str) -> bool:
        """Whether a role name, or a module/role FQCN of a collection, is listed here."""
        fqcn = ".".join(name.split(".")[:2])
        return any(r.name == name for r in self.roles) or any(
            c.fqcn in (name, fqcn) for c in self.collections
        )


def _role_name(src: str) -> str:
    """The directory ansible-galaxy installs a role source as (its repo_url_to_role_name)."""
    if "://" not in src and "@" not in src:
        return src
    tail = src.rstrip("/").rsplit("/", 1)[-1].split(",", 1)[0]
    for suffix in (".git", ".tar.gz"):
        tail = tail.removesuffix(suffix)
    return tail


def _role(where: str, entry: Any) -> RoleRequirement:
    if isinstance(entry, str):
        parts = [part.strip() for part in entry.split(",")]
        if len(parts) > 3 or not parts[0]:
            raise ConfigurationError(f"{where}: {entry!r} is not 'source[,version[,name]]'")
        return RoleRequirement(parts[2] if len(parts) == 3 else _role_name(parts[0]), parts[0])
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where}: a role is a name or a mapping, not {entry!r}")
    _refuse_unknown_keys(where, entry, _ROLE_KEYS, "a role takes", _ROLE_KEYS - {"role"})
    src = entry.get("src") or entry.get("role") or entry.get("name")
    if not isinstance(src, str) or not src.strip():
        raise ConfigurationError(f"{where}: a role needs 'src' (or a Galaxy 'name')")
    if entry.get("scm") is not None and entry["scm"] not in _SCMS:
        raise ConfigurationError(f"{where}: scm {entry['scm']!r} is not one of git, hg")
    name = entry.get("name") or entry.get("role") or _role_name(src.partition("+")[2] or src)
    return RoleRequirement(str(name), src)


def _refuse_unknown_keys(
    where: str, entry: dict[Any, Any], known: frozenset[str], takes: str, shown: frozenset[str]
) -> None:
    unknown = sorted(set(map(str, entry)) - known)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key {', '.join(map(repr, unknown))} "
            f"({takes} {', '.join(sorted(shown))})"
        )


def _collection(where: str, entry: Any) -> CollectionRequirement:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where}: a collection is a name or a mapping, not {entry!r}")
    _refuse_unknown_keys(where, entry, _COLLECTION_KEYS, "a collection takes", _COLLECTION_KEYS)
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{where}: a collection needs a 'name'")
    kind = str(entry.get("type") or "galaxy")
    if kind not in _COLLECTION_TYPES:
        raise ConfigurationError(
            f"{where}: type {kind!r} is not one of {', '.join(sorted(_COLLECTION_TYPES))}"
        )
    found = CollectionRequirement(name.strip(), kind)
    if found.fqcn is not None and not _FQCN.match(found.fqcn):
        raise ConfigurationError(
            f"{where}: {name!r} is not namespace.collection (for a tarball, a git "
            "repository or a directory, say its type: file, git, dir)"
        )
    return found


def _entries(data: dict[str, Any], key: str, where: str) -> list[Any]:
    entries = data.get(key)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigurationError(f"{where}: '{key}' is a list, not {entries!r}")
    return entries


def load_requirements(path: Path) -> Requirements:
    """requirements.yml, validated; ConfigurationError saying what is wrong and where."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"{path} not found (it lists external roles and collections; "
            "`roles: []` and `collections: []` for none)"
        ) from exc
    where = path.name
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        one_line = " ".join(str(exc).split())
        raise ConfigurationError(f"{where} is not valid YAML: {one_line}") from exc
    if isinstance(data, list):
        data = {"roles": data}  # ansible-galaxy's older format: a list of roles
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where}: expected 'roles:' and 'collections:' lists")
    unknown = sorted(set(map(str, data)) - {"roles", "collections"})
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key {', '.join(map(repr, unknown))} (only 'roles' and 'collections')"
        )
    roles = [_role(f"{where}: roles[{i}]", e) for i, e in enumerate(_entries(data, "roles", where))]
    collections = [
        _collection(f"{where}: collections[{i}]", e)
        for i, e in enumerate(_entries(data, "collections", where))
    ]
    return Requirements(path, hashlib.sha256(raw).hexdigest(), tuple(roles), tuple(collections))


@dataclass(frozen=True)
class InstallStatus:
    """How galaxy/ compares with requirements.yml. ``pending`` says why it is not what the
    file lists (empty: installed as listed, or nothing to install)."""

    requirements: Requirements | None
    pending: tuple[str, ...] = ()

    def hint(self, ansible_output: str) -> str | None:
        """For Ansible's "role not found" / "couldn't resolve module": the install to run,
        when the name is listed but not installed, or the install is not current."""
        if self.requirements is None or not self.pending:
            return None
        missing = re.search(
            r"role '([^']+)' was not found|couldn't resolve module/action '([^']+)'",
            ansible_output,
        )
        if missing is None:
            return None
        name = missing[1] or missing[2]
        if self.requirements.lists(name):
            return f"{name} is listed in {REQUIREMENTS_FILE} but not installed: {INSTALL_HINT}"
        return f"{REQUIREMENTS_FILE}: {self.pending[0]}: {INSTALL_HINT}"


def _installed(project_dir: Path) -> tuple[list[str], list[str]]:
    """Names of the roles and collections (namespace.name) under galaxy/."""
    roles = project_dir / ROLES_DIR
    collections = project_dir / COLLECTIONS_DIR / "ansible_collections"
    return (
        sorted(p.name for p in roles.iterdir() if p.is_dir()) if roles.is_dir() else [],
        sorted(f"{p.parent.name}.{p.name}" for p in collections.glob("*/*") if p.is_dir()),
    )


def install_status(project_dir: Path) -> InstallStatus:
    """Compare galaxy/ with requirements.yml (no file: nothing to install)."""
    path = project_dir / REQUIREMENTS_FILE
    if not path.exists():
        return InstallStatus(None)
    requirements = load_requirements(path)
    try:
        stamp = json.loads((project_dir / _STAMP).read_text())
    except (OSError, ValueError):
        stamp = None
    if not isinstance(stamp, dict):
        return InstallStatus(requirements, () if requirements.empty else ("not installed yet",))
    if stamp.get("digest") != requirements.digest:
        return InstallStatus(requirements, ("changed since the last install",))
    roles, collections = _installed(project_dir)
    wanted = [(f"role {r.name}", r.name in roles) for r in requirements.roles]
    wanted += [(f"role {name}", name in roles) for name in stamp.get("roles", [])]
    wanted += [(f"collection {c}", c in collections) for c in stamp.get("collections", [])]
    wanted += [
        (f"collection {c.fqcn}", c.fqcn in collections)
        for c in requirements.collections
        if c.fqcn is not None
    ]
    gone = dict.fromkeys(f"{what} is missing from galaxy/" for what, there in wanted if not there)
    return InstallStatus(requirements, tuple(gone))


@dataclass(frozen=True)
class InstallResult:
    """What galaxy/ holds after `install`; ``changed`` is False when it was current."""

    roles: tuple[str, ...]
    collections: tuple[str, ...]
    changed: bool


def _galaxy(project_dir: Path, kind: str, requirements: Path, into: Path) -> None:
    # The user's environment (proxies, CA bundle, Galaxy tokens) and the project's
    # ansible.cfg, whose [galaxy] server_list says where to download from. A collection
    # found installed anywhere Ansible looks is not installed again: only the new
    # directory counts, or a reinstall would leave galaxy/collections empty.
    env = dict(os.environ, ANSIBLE_CONFIG=str(project_dir / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env |= {"ANSIBLE_COLLECTIONS_PATH": str(into), "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False"}
    argv = [
        ansible_tool("ansible-galaxy"),
        kind,
        "install",
        "-r",
        str(requirements),
        "-p",
        str(into),
    ]
    done = subprocess.run(
        argv, cwd=project_dir, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        output = done.stdout + done.stderr
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        unreachable = "when attempting to call Galaxy" in output or "urlopen error" in output
        raise FleetflowError(
            f"ansible-galaxy {kind} install -r {requirements.name} failed: "
            + " | ".join(lines[-6:])
            + (_UNREACHABLE if unreachable else "")
        )


def install(project_dir: Path, force: bool = False) -> InstallResult:
    """Install requirements.yml into galaxy/ unless it is installed as listed (or force)."""
    status = install_status(project_dir)
    requirements = status.requirements or load_requirements(project_dir / REQUIREMENTS_FILE)
    if not status.pending and not force:
        roles, collections = _installed(project_dir)
        return InstallResult(tuple(roles), tuple(collections), changed=False)
    galaxy = (project_dir / ROLES_DIR).parent
    galaxy.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=galaxy))
    try:
        if requirements.roles:
            _galaxy(project_dir, "role", requirements.path, staging / "roles")
        if requirements.collections:
            _galaxy(project_dir, "collection", requirements.path, staging / "collections")
        (project_dir / _STAMP).unlink(missing_ok=True)  # until the swap is complete
        for target in (project_dir / ROLES_DIR, project_dir / COLLECTIONS_DIR):
            shutil.rmtree(target, ignore_errors=True)
            if (staging / target.name).exists():
                (staging / target.name).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    roles, collections = _installed(project_dir)
    stamp = {"digest": requirements.digest, "roles": roles, "collections": collections}
    (project_dir / _STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
    return InstallResult(tuple(roles), tuple(collections), changed=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fleetflow.ops.galaxy",
        description=f"Install {REQUIREMENTS_FILE} into {ROLES_DIR} and {COLLECTIONS_DIR}.",
    )
    parser.add_argument("--project-dir", type=Path, default=Path.cwd(), help="repository root")
    parser.add_argument("--force", action="store_true", help="reinstall even when current")
    args = parser.parse_args(argv)
    try:
        result = install(args.project_dir.resolve(), force=args.force)
    except FleetflowError as exc:
        print(f"galaxy: error: {exc}", file=sys.stderr)  # noqa: T201 (make's command)
        return 1
    verb = "installed" if result.changed else "up to date:"
    print(  # noqa: T201 (make's command)
        f"galaxy: {verb} {len(result.roles)} roles ({', '.join(result.roles) or '-'}), "
        f"{len(result.collections)} collections ({', '.join(result.collections) or '-'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
