"""Which Prefect API a command reads: PREFECT_API_URL, else the stack running here.

Never Prefect's own fallback: without an API URL its client starts an ephemeral server on
~/.prefect and shows that database's runs as if they were the stack's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleetflow.ops._api import ApiConfig

__all__ = ["api_config", "prefect_api"]


def api_config(stack_dir: Path) -> ApiConfig:
    """PREFECT_API_URL, else the stack whose state is in `stack_dir`; neither: a one-line
    ConfigurationError saying how to point the command at one."""
    return ApiConfig.discover(stack_dir)


@contextmanager
def prefect_api(stack_dir: Path) -> Iterator[None]:
    """Prefect's client settings pointed at the API `api_config` finds, for this block."""
    config = api_config(stack_dir)  # before importing Prefect: a refusal costs no import
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_SSL_CERT_FILE,
        PREFECT_API_URL,
        temporary_settings,
    )

    # Settings, not os.environ: Prefect reads the environment once, when it is imported.
    updates: dict[Any, Any] = {PREFECT_API_URL: config.url}
    if config.auth:
        updates[PREFECT_API_AUTH_STRING] = config.auth
    if config.cert_file:
        updates[PREFECT_API_SSL_CERT_FILE] = config.cert_file
    with temporary_settings(updates=updates):
        yield
