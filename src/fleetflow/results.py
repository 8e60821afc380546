"""What a playbook run did, per host, as Ansible's PLAY RECAP reports it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from fleetflow.engine.source import Source

__all__ = [
    "HostFailure",
    "HostResult",
    "HostStatus",
    "Leftover",
    "PlaybookResult",
    "RunStatus",
    "TaskChange",
]


class HostStatus(StrEnum):
    """One host's outcome, worst first: unreachable > failed > changed > ok > skipped."""

    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    SKIPPED = "skipped"


class RunStatus(StrEnum):
    """The outcome of the whole run (after retries and max_fail_percentage)."""

    SUCCESSFUL = "successful"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"


class HostFailure(BaseModel):
    """The task that failed (or found the host unreachable) and Ansible's message."""

    task: str = Field(description="Name of the failing task.")
    message: str = Field(description="Ansible's message, censored by no_log where set.")


class TaskChange(BaseModel):
    """A task that changed (or in check mode would change) a host, with Ansible's diff."""

    task: str
    diff: str = Field(default="", description="Unified diff text, secrets censored; may be empty.")


class Leftover(BaseModel):
    """A process an earlier run started on a host and left running (docs: remote work)."""

    pid: int
    run: str = Field(description="Its run's marker: <flow run id>.<attempt id>.")
    user: str = Field(description="The user it runs as.")
    started: str = Field(description="When it started, UTC (ISO 8601).")
    command: str = Field(description="Its command line (first 160 characters).")
    stopped_by: Literal["fence", "guard", ""] = Field(
        description="fence: this run stopped it before working on the host; guard: its own "
        "run's guard stopped it when that run ended (reported by the next run); '': still "
        "running, so this run failed the host without touching it."
    )
    why: str = Field(default="", description="Why a guard stopped it.")


class HostResult(BaseModel):
    """One host's PLAY RECAP line plus what fleetflow learned from the events."""

    host: str
    status: HostStatus
    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0
    duration_seconds: float = Field(default=0.0, description="First to last event of the host.")
    failure: HostFailure | None = None
    outputs: dict[str, Any] = Field(
        default_factory=dict,
        description="Values the playbook published with set_fact: fleetflow_output: {...}.",
    )
    attempts: int = Field(default=1, description="How many attempts ran on this host.")
    changes: list[TaskChange] = Field(
        default_factory=list,
        description="Changed tasks and their diffs; recorded in check and diff mode only.",
    )
    leftovers: list[Leftover] = Field(
        default_factory=list,
        description="Processes of earlier runs found on the host before this run worked on it.",
    )

    @classmethod
    def status_from_counts(
        cls, *, ok: int, changed: int, unreachable: int, failed: int, skipped: int
    ) -> HostStatus:
        if unreachable:
            return HostStatus.UNREACHABLE
        if failed:
            return HostStatus.FAILED
        if changed:
            return HostStatus.CHANGED
        if ok:
            return HostStatus.OK
        del skipped  # a host with only skipped tasks (or none) counts as skipped
        return HostStatus.SKIPPED

    @property
    def succeeded(self) -> bool:
        return self.status not in (HostStatus.FAILED, HostStatus.UNREACHABLE)


class PlaybookResult(BaseModel):
    """The merged outcome of a playbook run and its host retries."""

    playbook: str
    inventory: str
    limit: str | None = None
    status: RunStatus
    hosts: dict[str, HostResult] = Field(default_factory=dict)
    attempts: int = 1
    rc: int = Field(description="ansible-playbook's exit code on the last attempt.")
    started_at: datetime
    finished_at: datetime
    check: bool = False
    message: str = Field(default="", description="Why the run did not succeed, if it did not.")
    source: Source | None = Field(
        default=None, description="The repository commit the run used and whether it was dirty."
    )

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def hosts_with(self, *statuses: HostStatus) -> list[str]:
        return sorted(h for h, r in self.hosts.items() if r.status in statuses)

    @property
    def failed_hosts(self) -> list[str]:
        """Hosts that failed or were unreachable."""
        return self.hosts_with(HostStatus.FAILED, HostStatus.UNREACHABLE)

    @property
    def changed_hosts(self) -> list[str]:
        return self.hosts_with(HostStatus.CHANGED)

    def table(self) -> list[dict[str, Any]]:
        """One row per host, for Prefect table artifacts and terminal summaries."""
        return [
            {
                "host": r.host,
                "status": r.status.value,
                "ok": r.ok,
                "changed": r.changed,
                "unreachable": r.unreachable,
                "failed": r.failed,
                "skipped": r.skipped,
                "rescued": r.rescued,
                "ignored": r.ignored,
                "attempts": r.attempts,
                "seconds": round(r.duration_seconds, 1),
                "failure": f"{r.failure.task}: {r.failure.message}" if r.failure else "",
                "leftovers": len(r.leftovers),
            }
            for r in sorted(self.hosts.values(), key=lambda r: r.host)
        ]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for r in self.hosts.values():
            counts[r.status.value] = counts.get(r.status.value, 0) + 1
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        text = f"{self.playbook} on {self.inventory}: {self.status.value} ({parts or 'no hosts'})"
        if self.status == RunStatus.SUCCESSFUL and self.hosts and not self.changed_hosts:
            # The idempotency check an operator looks for: a rerun that should be a no-op.
            text += "; nothing would change" if self.check else "; nothing changed"
        return text
