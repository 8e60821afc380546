"""What a running stack remembers of itself (``<stack_dir>/stack.json``), read cheaply.

Commands run in a new shell must find the stack `fleetflow stack up` started without the
flags and variables it was started with. This module reads its state file without
importing Prefect (``fleetflow.stack`` does), so `fleetflow run` stays fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fleetflow.exceptions import StackError

__all__ = ["AUTH_FILE", "STATE_FILE", "StackState"]

STATE_FILE = "stack.json"
AUTH_FILE = "api-auth"


@dataclass(frozen=True)
class StackState:
    """Where a stack's server answers and what it runs on; never its credentials."""

    directory: Path
    api_url: str
    host: str
    port: int
    database: str  # a label with the password masked, as `stack status` prints it
    server_url: str | None = None  # set when the server runs elsewhere
    tls_cert: Path | None = None  # the gateway serves HTTPS with this certificate
    tls_key: Path | None = None

    def __repr__(self) -> str:
        return f"StackState(api_url={self.api_url!r}, database={self.database!r})"

    @classmethod
    def read(cls, directory: Path) -> StackState | None:
        """The state in `directory`, or None if no stack was started there (or it is down)."""
        path = directory / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StackError(f"unreadable stack state {path}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("api_url"), str):
            raise StackError(f"unreadable stack state {path}: no api_url")
        # Files written before host/port were recorded: the URL has them.
        parts = urlsplit(data["api_url"])
        port = data.get("port") or parts.port or (443 if parts.scheme == "https" else 80)
        return cls(
            directory=directory,
            api_url=data["api_url"].rstrip("/"),
            host=str(data.get("host") or parts.hostname or "127.0.0.1"),
            port=int(port),
            database=str(data.get("database", "")),
            server_url=data.get("server_url") or None,
            tls_cert=Path(data["tls_cert"]) if data.get("tls_cert") else None,
            tls_key=Path(data["tls_key"]) if data.get("tls_key") else None,
        )

    def auth(self) -> str | None:
        """The API's user:password from the stack's private file, if it has one."""
        try:
            return (self.directory / AUTH_FILE).read_text().strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StackError(f"cannot read {self.directory / AUTH_FILE}: {exc}") from exc
