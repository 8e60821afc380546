"""fleetflow: run Ansible playbooks from Prefect flows with per-host truth.

``from fleetflow import run_playbook`` imports Prefect (about 2 s); the lab and the CLI do
not, so names that need Prefect are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fleetflow.engine.retry import RetryPolicy
from fleetflow.exceptions import (
    ConfigurationError,
    FleetflowError,
    InBlackout,
    InventoryError,
    LabError,
    NoHostsMatched,
    PlaybookCanceled,
    PlaybookError,
    PlaybookFailed,
    PlaybookRunError,
    PlaybookTimedOut,
    PrerequisiteMissing,
    SensorTimeout,
)
from fleetflow.results import HostFailure, HostResult, HostStatus, PlaybookResult, RunStatus

if TYPE_CHECKING:
    from fleetflow.engine.run import resolve_hosts, run_playbook

__all__ = [
    "ConfigurationError",
    "FleetflowError",
    "HostFailure",
    "HostResult",
    "HostStatus",
    "InBlackout",
    "InventoryError",
    "LabError",
    "NoHostsMatched",
    "PlaybookCanceled",
    "PlaybookError",
    "PlaybookFailed",
    "PlaybookResult",
    "PlaybookRunError",
    "PlaybookTimedOut",
    "PrerequisiteMissing",
    "RetryPolicy",
    "RunStatus",
    "SensorTimeout",
    "resolve_hosts",
    "run_playbook",
]

_LAZY = {"run_playbook", "resolve_hosts"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from fleetflow.engine import run

        return getattr(run, name)
    raise AttributeError(f"module 'fleetflow' has no attribute {name!r}")
