"""The orchestrator's services on this machine: Prefect server, work pool, process workers."""

from fleetflow.stack._config import (
    QueueSpec,
    StackConfig,
    WorkerSpec,
    WorkPoolSpec,
    parse_worker_option,
)
from fleetflow.stack._gateway import Tls
from fleetflow.stack._stack import Stack, StackStatus

__all__ = [
    "QueueSpec",
    "Stack",
    "StackConfig",
    "StackStatus",
    "Tls",
    "WorkPoolSpec",
    "WorkerSpec",
    "parse_worker_option",
]
