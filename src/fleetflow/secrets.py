"""Run secrets: SSH key, become password, vault password - by name, never by value.

Flows pass the *names* of Prefect Secret blocks; the values are loaded inside the task,
written only into the run's private directory (mode 0600, removed when the run ends,
whatever the ending) or answered to Ansible's prompt, and masked wherever fleetflow
writes text: logs, results, artifacts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from fleetflow.exceptions import ConfigurationError

__all__ = ["MASK", "RunSecrets", "load_secret", "mask", "secret_variable", "write_private"]

MASK = "********"
# Fragments shorter than this are not masked on their own (they would mask common words).
_MIN_FRAGMENT = 12


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


def mask(text: str, values: list[str]) -> str:
    for value in values:
        text = text.replace(value, MASK)
    return text
