"""ansible-vault for tests: encrypt a vars file in place."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from fleetflow.engine._ansible import ansible_environment, ansible_tool

from ..conftest import REPO


def vault_encrypt(path: Path, password: str) -> None:
    """Encrypt `path` with `password`; the password file exists only meanwhile (0600)."""
    with tempfile.NamedTemporaryFile("w", prefix="vault-pass-") as password_file:
        password_file.write(password)
        password_file.flush()
        subprocess.run(
            [ansible_tool("ansible-vault"), "encrypt", "--vault-password-file",
             password_file.name, str(path)],
            check=True, capture_output=True, env=ansible_environment(REPO),
        )  # fmt: skip
    assert path.read_text().startswith("$ANSIBLE_VAULT;")
