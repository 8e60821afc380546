"""What `fleetflow stack up` builds: a work pool, its queues and the local workers."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleetflow.exceptions import StackError

__all__ = [
    "ControlPlaneSpec",
    "MonitoringSpec",
    "QueueSpec",
    "StackConfig",
    "WorkPoolSpec",
    "WorkerSpec",
    "parse_worker_option",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueSpec(_Strict):
    """A work queue: one per site/environment, so a worker can be pointed at it."""

    name: str = Field(pattern=_NAME)
    priority: int = Field(default=1, ge=1, description="1 is served first.")
    concurrency_limit: int | None = Field(default=None, ge=0, description="Runs at once.")
    description: str = ""


class WorkPoolSpec(_Strict):
    name: str = Field(default="fleetflow", pattern=_NAME)
    concurrency_limit: int | None = Field(default=None, ge=0)
    queues: tuple[QueueSpec, ...] = (QueueSpec(name="lab"),)

    @model_validator(mode="after")
    def _unique_queues(self) -> WorkPoolSpec:
        names = [queue.name for queue in self.queues]
        if len(set(names)) != len(names):
            raise ValueError(f"queue names repeat: {names}")
        return self


class WorkerSpec(_Strict):
    """A process worker this machine runs, serving some of the pool's queues."""

    name: str = Field(pattern=_NAME)
    queues: tuple[str, ...] = Field(min_length=1)


class RetentionSpec(_Strict):
    """What the server's database keeps: Prefect's db vacuum deletes finished flow runs
    (with their task runs, logs and artifacts) and events older than these."""

    # Prefect refuses less than an hour; a month of runs is what audits usually look at.
    flow_run_days: float = Field(default=30, ge=1 / 24)
    event_days: float = Field(default=7, gt=0)
    vacuum_every_seconds: float = Field(default=3600, gt=0)

    def server_env(self) -> dict[str, str]:
        day = 86400
        return {
            "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
            "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": f"{self.flow_run_days * day:.0f}",
            "PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS": f"{self.vacuum_every_seconds:g}",
            # A plain timedelta setting: from the environment only ISO 8601 parses.
            "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"PT{self.event_days * day:.0f}S",
        }


class MonitoringSpec(_Strict):
    """Prometheus, Alertmanager, a node exporter and fleetflow's exporter on this machine
    (deployments/monitoring). Off unless the stack file says `monitoring: true` (or gives
    these settings): a laptop does not need them."""

    enabled: bool = False
    scrape_interval_seconds: float = Field(default=15, ge=1, le=300)
    evaluation_interval_seconds: float = Field(default=15, ge=1, le=300)
    exporter_interval_seconds: float = Field(default=15, ge=1, le=300, description="API poll.")
    # Alertmanager waits this long to group the first alerts of an incident (its file: 30 s).
    group_wait_seconds: float | None = Field(default=None, ge=0, le=600)
    retention_days: float = Field(default=15, gt=0)
    # Node exporters of the other machines that run workers (Debian's
    # prometheus-node-exporter listens on :9100); this machine's is started by the stack.
    worker_machines: tuple[str, ...] = Field(default=(), max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, data: object) -> object:
        if isinstance(data, bool):
            return {"enabled": data}
        if isinstance(data, dict) and data and "enabled" not in data:
            return {**data, "enabled": True}
        return data

    @model_validator(mode="after")
    def _targets_are_host_ports(self) -> MonitoringSpec:
        for target in self.worker_machines:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}:[0-9]{1,5}", target):
                raise ValueError(f"worker_machines: {target!r} is not host:port")
        return self


class ControlPlaneSpec(_Strict):
    """How many Prefect API servers and background-services processes the stack runs.

    The default is Prefect's single process (API and services together). More than one
    replica, or services of their own, is the scaled setup: PostgreSQL, Redis, HAProxy.
    """

    api_replicas: int = Field(default=1, ge=1, le=8)
    services: int = Field(default=0, ge=0, le=4)
    redis_url: str | None = Field(default=None, pattern=r"^rediss?://[^\s]+$")

    @property
    def scaled(self) -> bool:
        return self.api_replicas > 1 or self.services > 0

    @model_validator(mode="after")
    def _scaled_needs_redis_and_services(self) -> ControlPlaneSpec:
        if self.scaled and not self.redis_url:
            raise ValueError("control_plane: several API replicas or services need redis_url")
        if self.api_replicas > 1 and self.services == 0:
            raise ValueError(
                "control_plane: API replicas run no background services: set services: 1 or more"
            )
        return self


class StackConfig(_Strict):
    work_pool: WorkPoolSpec = WorkPoolSpec()
    retention: RetentionSpec = RetentionSpec()
    workers: tuple[WorkerSpec, ...] = (WorkerSpec(name="worker-1", queues=("lab",)),)
    # Stock workers poll every 10 s; a one-second poll is what makes triggers feel immediate.
    worker_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    # Each worker gets a warm launcher that forks pre-imported flow-run processes.
    warm_launcher: bool = True
    monitoring: MonitoringSpec = MonitoringSpec()
    control_plane: ControlPlaneSpec = ControlPlaneSpec()

    @model_validator(mode="after")
    def _workers_serve_known_queues(self) -> StackConfig:
        known = {queue.name for queue in self.work_pool.queues}
        for worker in self.workers:
            if unknown := sorted(set(worker.queues) - known):
                raise ValueError(
                    f"worker {worker.name} serves unknown queues {unknown}; "
                    f"the pool has {sorted(known)}"
                )
        names = [worker.name for worker in self.workers]
        if len(set(names)) != len(names):
            raise ValueError(f"worker names repeat: {names}")
        return self

    @classmethod
    def load(cls, path: Path) -> StackConfig:
        """Read a stack file; a missing or malformed one is a StackError naming the file."""
        try:
            data = yaml.safe_load(path.read_text())
            return cls.model_validate(data or {})
        except OSError as exc:
            raise StackError(f"cannot read stack config {path}: {exc}") from exc
        except (yaml.YAMLError, ValidationError) as exc:
            raise StackError(f"invalid stack config {path}: {exc}") from exc

    def with_workers(self, workers: list[WorkerSpec]) -> StackConfig:
        """The same pool with these workers instead of the file's (validated again)."""
        try:
            return StackConfig.model_validate({**self.model_dump(), "workers": workers})
        except ValidationError as exc:
            raise StackError(f"invalid --worker: {exc}") from exc


def parse_worker_option(text: str) -> WorkerSpec:
    """Parse ``NAME=QUEUE[,QUEUE...]`` from the command line."""
    match = re.fullmatch(r"([^=]+)=(.+)", text)
    if not match:
        raise StackError(f"--worker {text!r}: expected NAME=QUEUE[,QUEUE...]")
    try:
        return WorkerSpec(name=match[1], queues=tuple(q for q in match[2].split(",") if q))
    except ValidationError as exc:
        raise StackError(f"--worker {text!r}: {exc}") from exc
