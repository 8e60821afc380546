"""Keep the fact cache to the machine it describes.

Ansible's jsonfile cache is keyed by inventory name only: a host rebuilt under the same
name (a new lab after `lab down`/`lab up`, a reinstalled server) would get the old
machine's facts until they expire. fleetflow pins every host's SSH key in known_hosts
and connects with strict host key checking, so the pinned key tells one machine from
another: before each run, the cached facts of a targeted host are kept only if the key
pinned for it now is the one pinned when they were cached. A host without a pinned key
has its facts gathered every run.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fleetflow.engine._ansible import ansible_environment, ansible_tool
from fleetflow.engine._log import Logger
from fleetflow.engine.secrets import write_private

__all__ = ["forget_hosts", "guard_fact_cache", "host_key_fingerprint", "key_record_dir"]

_KNOWN_HOSTS_OPTION = re.compile(r"UserKnownHostsFile[ =]+(\S+)", re.IGNORECASE)
_SSH_ARG_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args")
_DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2", "/etc/ssh/ssh_known_hosts")
# Ansible's jsonfile cache names a host's file `<prefix>s<schema>_<host>` (ansible-core
# 2.21: s1_), or a hash of that key when the name holds characters unsafe in a path.
_PATH_CHARS = ("/", "..", "<", ">", "|")
_SCHEMAS = range(10)


def key_record_dir(cache_dir: Path) -> Path:
    """Where the key each host's facts were cached under is recorded: beside the cache,
    not in it, since Ansible takes every file in the cache directory for a host's."""
    return cache_dir.with_name(cache_dir.name + ".hostkeys")


def guard_fact_cache(
    cache_dir: Path,
    inventory: Path,
    hosts: Iterable[str],
    project_dir: Path,
    logger: Logger,
    *,
    vault_password: str | None = None,
) -> None:
    """Drop the cached facts of every targeted host whose pinned key changed or is unknown."""
    hostvars = _hostvars(inventory, project_dir, vault_password, logger)
    records = key_record_dir(cache_dir)
    records.mkdir(mode=0o700, parents=True, exist_ok=True)
    dropped: list[str] = []
    for host in hosts:
        pinned = host_key_fingerprint(host, hostvars.get(host, {}), project_dir)
        record = records / _record_name(host)
        try:
            recorded: str | None = record.read_text().strip()
        except OSError:
            recorded = None
        if pinned is not None and pinned == recorded:
            continue
        if _remove_cached(cache_dir, host):
            dropped.append(host)
        if pinned is None:
            record.unlink(missing_ok=True)
        else:
            _write_atomic(record, pinned)
    if dropped:
        logger.info(
            "fact cache: facts of %s dropped (SSH host key changed or not pinned): gathered anew",
            ", ".join(dropped),
        )


def forget_hosts(cache_dir: Path, hosts: Iterable[str]) -> None:
    """Remove the cached facts and recorded keys of hosts that no longer exist."""
    records = key_record_dir(cache_dir)
    for host in hosts:
        _remove_cached(cache_dir, host)
        (records / _record_name(host)).unlink(missing_ok=True)


def host_key_fingerprint(host: str, hostvars: Mapping[str, Any], project_dir: Path) -> str | None:
    """A digest of the keys pinned for the host in the known_hosts ssh will check, or None
    when none is pinned or the connection settings are templates fleetflow cannot read."""
    address = hostvars.get("ansible_host", hostvars.get("ansible_ssh_host", host))
    port = hostvars.get("ansible_port", hostvars.get("ansible_ssh_port", 22))
    if not isinstance(address, str) or "{" in address or "{" in str(port):
        return None
    try:
        port = int(port)
    except (TypeError, ValueError):
        return None
    name = address if port == 22 else f"[{address}]:{port}"
    keys: set[str] = set()
    for path in _known_hosts_files(hostvars, project_dir):
        keys.update(_pinned_keys(path, name))
    if not keys:
        return None
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


def _known_hosts_files(hostvars: Mapping[str, Any], project_dir: Path) -> list[Path]:
    named: list[str] = []
    for var in _SSH_ARG_VARS:
        value = hostvars.get(var)
        if isinstance(value, str):
            named += [m.group(1).strip("'\"") for m in _KNOWN_HOSTS_OPTION.finditer(value)]
    paths = [p for n in named for p in shlex.split(n)] if named else list(_DEFAULT_KNOWN_HOSTS)
    return [project_dir / Path(p).expanduser() for p in paths if "{" not in p]


def _pinned_keys(path: Path, name: str) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith("#") or fields[0].startswith("@"):
            continue  # markers: a CA or a revoked key does not identify one machine
        if _matches(fields[0], name):
            found.append(f"{fields[1]} {fields[2]}")
    return found


def _matches(patterns: str, name: str) -> bool:
    matched = False
    for entry in patterns.split(","):
        negated = entry.startswith("!")
        pattern = entry.removeprefix("!")
        if pattern.startswith("|1|"):
            hit = _hashed_match(pattern, name)
        else:
            hit = fnmatch.fnmatchcase(name, pattern)
        if hit and negated:
            return False
        matched = matched or hit
    return matched


def _hashed_match(pattern: str, name: str) -> bool:
    """ssh's HashKnownHosts form: |1|base64(salt)|base64(HMAC-SHA1(salt, name))."""
    try:
        _, _, salt, digest = pattern.split("|")
        expected = base64.b64decode(digest)
        mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
    except ValueError:
        return False
    return hmac.compare_digest(mac, expected)


def _cache_names(host: str) -> set[str]:
    prefix = os.environ.get("ANSIBLE_CACHE_PLUGIN_PREFIX", "")
    keys = [host, *(f"s{n}_{host}" for n in _SCHEMAS)]
    names = set()
    for key in keys:
        unsafe = any(c in key for c in _PATH_CHARS)
        safe = hashlib.sha256(key.encode()).hexdigest()[: max(len(key), 12)] if unsafe else key
        names.add(prefix + safe)
    return names


def _remove_cached(cache_dir: Path, host: str) -> bool:
    removed = False
    for name in _cache_names(host):
        with contextlib.suppress(FileNotFoundError):
            (cache_dir / name).unlink()
            removed = True
    return removed


def _record_name(host: str) -> str:
    return hashlib.sha256(host.encode()).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    os.replace(tmp, path)


def _hostvars(
    inventory: Path, project_dir: Path, vault_password: str | None, logger: Logger
) -> dict[str, dict[str, Any]]:
    """Every host's variables as the inventory sets them; empty (every host's facts are
    then gathered) when Ansible cannot list them."""
    with tempfile.TemporaryDirectory(prefix=f"ff-preflight-{os.getpid()}-") as tmp:
        cmd = [ansible_tool("ansible-inventory"), "-i", str(inventory), "--list"]
        if vault_password is not None:
            vault_file = write_private(Path(tmp) / "vault", vault_password)
            cmd += ["--vault-password-file", str(vault_file)]
        try:
            proc = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=project_dir,
                env=ansible_environment(project_dir), check=False, timeout=300,
            )  # fmt: skip
            hostvars = json.loads(proc.stdout or "{}").get("_meta", {}).get("hostvars", {})
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            logger.warning("fact cache: cannot list the inventory's hosts (%s): gathering", exc)
            return {}
    if proc.returncode != 0 or not isinstance(hostvars, dict):
        logger.warning("fact cache: ansible-inventory failed: facts are gathered this run")
        return {}
    return hostvars
