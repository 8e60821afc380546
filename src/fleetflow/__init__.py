"""fleetflow: run Ansible playbooks from Prefect flows with per-host truth.

``from fleetflow import run_playbook`` imports Prefect (about 2 s); the lab and the CLI do
not, so names that need Prefect are loaded on first use. Every public error is exported
here (tests/unit/test_exported_members.py checks that ``__all__`` is complete), and the
module's namespace holds nothing else public: no ``from __future__`` or ``typing`` names.
"""

import typing as _typing

from fleetflow.engine.retry import RetryPolicy
from fleetflow.exceptions import (
    AccessError,
    AlertError,
    ApprovalError,
    CheckoutError,
    ConfigurationError,
    ContentChanged,
    FleetflowError,
    HostLockTimeout,
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
    RolloutStopped,
    SensorTimeout,
    StackError,
    TimeLimitReached,
)
from fleetflow.results import HostFailure, HostResult, HostStatus, PlaybookResult, RunStatus

if _typing.TYPE_CHECKING:
    from fleetflow.engine.run import resolve_hosts, run_playbook

__all__ = [
    "AccessError",
    "AlertError",
    "ApprovalError",
    "CheckoutError",
    "ConfigurationError",
    "ContentChanged",
    "FleetflowError",
    "HostFailure",
    "HostLockTimeout",
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
    "RolloutStopped",
    "RunStatus",
    "SensorTimeout",
    "StackError",
    "TimeLimitReached",
    "resolve_hosts",
    "run_playbook",
]

_LAZY = {"run_playbook", "resolve_hosts"}


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        from fleetflow.engine import run

        return getattr(run, name)
    raise AttributeError(f"module 'fleetflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too, before their first use loads them.
    return sorted(set(globals()) | _LAZY)
