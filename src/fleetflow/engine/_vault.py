"""The plain values of the project's vault-encrypted variables, so runs can mask them.

A template or a debug task can put a vaulted variable's value into a diff, a log line or a
result. With the vault password in hand, fleetflow decrypts the project's vaulted files
and inline `!vault` values once per run and masks every value it finds, like the run's
own secrets. Short values (under MIN_LENGTH characters) are not masked: they would mask
common words ("true", port numbers) everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from ansible.parsing.vault import VaultLib, VaultSecret, is_encrypted

from fleetflow.engine.inventory import files_below

__all__ = ["MIN_LENGTH", "vaulted_values"]

MIN_LENGTH = 6
_MAX_FILE_BYTES = 1 << 20
_SUFFIXES = {"", ".yml", ".yaml", ".json"}


def _files(roots: Iterable[Path]) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            # Through symlinked directories too: Ansible reads a linked group_vars.
            yield from (p for p in files_below(root) if p.suffix in _SUFFIXES)


class _Vaulted(str):
    """A value that was an inline `!vault` in its file (the file's other values are not)."""

    __slots__ = ()


def _leaves(data: Any) -> Iterator[Any]:
    if isinstance(data, dict):
        for value in data.values():
            yield from _leaves(value)
    elif isinstance(data, list):
        for value in data:
            yield from _leaves(value)
    elif isinstance(data, str | int | float) and not isinstance(data, bool):
        yield data


def _loader(vault: VaultLib) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        """YAML with inline `!vault` values decrypted (other tags as plain values)."""

    def vaulted(loader: yaml.SafeLoader, node: yaml.Node) -> str:
        text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
        return _Vaulted(vault.decrypt(text.encode()).decode())

    def other(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        del suffix
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        return None

    Loader.add_constructor("!vault", vaulted)
    Loader.add_multi_constructor("!", other)
    return Loader


def _values_in(path: Path, vault: VaultLib) -> list[str]:
    raw = path.read_bytes()[:_MAX_FILE_BYTES]
    if is_encrypted(raw):  # a whole vaulted file: every value in it is secret
        return [str(leaf) for leaf in _yaml_leaves(vault.decrypt(raw).decode(), yaml.SafeLoader)]
    text = raw.decode(errors="replace")
    if "!vault" not in text:
        return []
    return [leaf for leaf in _yaml_leaves(text, _loader(vault)) if isinstance(leaf, _Vaulted)]


def _yaml_leaves(text: str, loader: type[yaml.SafeLoader]) -> list[Any]:
    try:
        documents = list(yaml.load_all(text, Loader=loader))  # a SafeLoader subclass
    except yaml.YAMLError:
        return []
    return [leaf for doc in documents for leaf in _leaves(doc)]


def vaulted_values(roots: Iterable[Path], password: str) -> list[str]:
    """Every decryptable vaulted value under `roots`, longest first (for masking).

    Files the password does not open are left alone: Ansible reports them when it runs.
    """
    vault = VaultLib([("default", VaultSecret(password.encode()))])
    found: set[str] = set()
    for path in _files(roots):
        try:
            found.update(_values_in(path, vault))
        except Exception:  # another password's vault, an unreadable file
            continue
    return sorted((v for v in found if len(v) >= MIN_LENGTH), key=len, reverse=True)
