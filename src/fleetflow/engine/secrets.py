"""Run secrets: SSH key, become password, vault password - by name, never by value.

Flows pass the *names* of Prefect Secret blocks; the values are loaded inside the task,
written only into the run's private directory (mode 0600, removed when the run ends,
whatever the ending) or answered to Ansible's prompt, and masked wherever fleetflow
writes text: logs, results, artifacts.

Masking is the second line, behind no_log: a playbook may still print a secret, and
filters (`b64encode`, `lower`, `urlencode`, `to_json`) change it on the way. So
`mask` finds each secret as it is and, for one of 6+ characters, in any case
and as base64 (padded, unpadded, URL-safe), URL-encoded, hex and JSON-escaped; each
12+ character line of a multi-line secret (key) likewise (`masked_forms`). Shorter
secrets are masked only as they are: their encodings would turn up in innocent text.
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from fleetflow.exceptions import ConfigurationError

__all__ = [
    "MASK",
    "Masker",
    "RunSecrets",
    "load_secret",
    "mask",
    "mask_parameters",
    "masked_forms",
    "secret_variable",
    "write_private",
]

MASK = "********"
# Parameter names whose values are secrets (a `*_secret` names a secret, holds none).
_SECRET_NAME = re.compile(r"pass(word)?|secret|token|credential|private|api_?key", re.I)
# Fragments shorter than this are not masked on their own (they would mask common words).
_MIN_FRAGMENT = 12
# Secrets at least this long are also masked in their transformed forms.
_MIN_TRANSFORMED = 6


def secret_variable(name: str) -> str:
    """The environment variable that may stand in for the Secret block `name` (CI)."""
    return "FLEETFLOW_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def load_secret(name: str) -> SecretStr:
    """The Secret block `name`, else FLEETFLOW_SECRET_<NAME>; ConfigurationError if neither."""
    from prefect.blocks.system import Secret

    try:
        block: Any = Secret.load(name)
        value: Any = block.get()
    except ValueError:
        value = os.environ.get(secret_variable(name))
    if value is None or value == "":
        raise ConfigurationError(
            f"secret {name!r} not found: create a Prefect Secret block named {name!r} "
            f"(or, in CI, set {secret_variable(name)})"
        )
    return SecretStr(value if isinstance(value, str) else str(value))


@dataclass(frozen=True)
class RunSecrets:
    ssh_key: SecretStr | None = None
    become_password: SecretStr | None = None
    vault_password: SecretStr | None = None

    @classmethod
    def load(
        cls, ssh_key: str | None, become_password: str | None, vault_password: str | None
    ) -> RunSecrets:
        def get(name: str | None) -> SecretStr | None:
            return load_secret(name) if name else None

        return cls(get(ssh_key), get(become_password), get(vault_password))

    def values(self) -> list[str]:
        """Every string to mask: each secret, and each long line of a multi-line one (keys)."""
        found: set[str] = set()
        for secret in (self.ssh_key, self.become_password, self.vault_password):
            if secret is None:
                continue
            text = secret.get_secret_value()
            found.add(text.strip())
            found.update(
                line.strip() for line in text.splitlines() if len(line.strip()) >= _MIN_FRAGMENT
            )
        return sorted((v for v in found if v), key=len, reverse=True)


def write_private(path: Path, text: str) -> Path:
    """Write `text` to a new file that is 0600 from its creation (never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


def masked_forms(values: list[str]) -> list[str]:
    """Every string to mask for `values`, de-duplicated, longest first.

    Each value as it is; for one of 6+ characters also its lower and upper case, base64
    (padded, unpadded, URL-safe), URL-encoded (quote, quote_plus), hex (both cases) and
    JSON-escaped forms; for a multi-line one also each line of 12+ characters (key lines)
    with its forms. Longest first: a longer form is masked whole before a shorter one in it.
    """
    forms: set[str] = set()
    for value in values:
        if not value.strip():
            continue  # masking blanks would mask every space
        forms.add(value)
        lines = [line.strip() for line in value.splitlines()]
        for text in {value, *(line for line in lines if len(line) >= _MIN_FRAGMENT)}:
            if len(text) >= _MIN_TRANSFORMED:
                forms.update(_transformed(text))
    return sorted(forms, key=len, reverse=True)


def _transformed(value: str) -> set[str]:
    raw = value.encode()
    padded = base64.b64encode(raw).decode()
    return {
        value,
        value.lower(),
        value.upper(),
        padded,
        padded.rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        raw.hex(),
        raw.hex().upper(),
        json.dumps(value)[1:-1],
    }


# A form, and its casefold when it is also matched in any case (a plain value: an SSH error
# repeated a vaulted one in lower case); encoded forms are matched exactly.
_Form = tuple[str, str | None]


@lru_cache(maxsize=64)
def _forms(values: tuple[str, ...]) -> tuple[_Form, ...]:
    plain = {v for v in values if len(v) >= _MIN_TRANSFORMED}
    # Lower and upper case stay exact forms as well: casing can change a length (ß, SS),
    # which a case-insensitive match does not follow.
    return tuple((f, f.casefold() if f in plain else None) for f in masked_forms(list(values)))


@lru_cache(maxsize=256)
def _pattern(forms: tuple[_Form, ...]) -> re.Pattern[str]:
    return re.compile(
        "|".join(f"(?i:{re.escape(f)})" if folded else re.escape(f) for f, folded in forms)
    )


class Masker:
    """`mask` for one set of values, their forms worked out once (a run log masks each line).

    One regex alternative per form ran at 0.7 s per MB with 50 secrets (600 forms) and
    6 s with 300: each is tried at every position. Most text holds none of them, so a
    substring search per form (in C, 0.2 s per MB for 300 secrets) picks the few present,
    and only those are compiled into the pattern.
    """

    def __init__(self, values: list[str]) -> None:
        self._forms = _forms(tuple(values))
        self._anycase = any(folded for _, folded in self._forms)

    def __call__(self, text: str) -> str:
        lowered = text.casefold() if self._anycase else text
        present = tuple(
            (form, folded)
            for form, folded in self._forms
            if (folded in lowered if folded else form in text)
        )
        return _pattern(present).sub(MASK, text) if present else text

    def __repr__(self) -> str:
        return f"Masker({len(self._forms)} forms)"  # never the values


def mask(text: str, values: list[str]) -> str:
    """`text` with every secret of `values`, in every form of `masked_forms`, masked."""
    return Masker(values)(text)


def mask_parameters(value: Any, key: str = "") -> Any:
    """Parameters with the values of secret-looking names (at any depth) masked."""
    if isinstance(value, dict):
        return {k: mask_parameters(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_parameters(v, key) for v in value]
    if key and _SECRET_NAME.search(key) and not key.endswith("_secret") and value is not None:
        return MASK
    return value
