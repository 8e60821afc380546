"""Flow parameter types whose constraints reach the deployment's parameter schema.

Prefect turns these into JSON schema, so the server rejects a bad value when the run
is triggered (`prefect deployment run --param retries=-1` fails at once) and the UI
shows the limits; the same constraints are checked again when the flow starts.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ApprovalTimeout",
    "Approvers",
    "BatchSize",
    "HostPattern",
    "Inventory",
    "Percentage",
    "Retries",
    "RetryDelay",
    "Step",
    "Version",
]

Inventory = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=r"^[^\s]+$",
        description="Environment under inventory/ (lab, staging, prod) or a path to one.",
    ),
]
HostPattern = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1000,
        description="Ansible host pattern: all, web, db-01, 'web:&eu', 'all:!db-02'.",
    ),
]
Retries = Annotated[
    int, Field(ge=0, le=5, description="Extra attempts for failed/unreachable hosts only.")
]
RetryDelay = Annotated[
    float,
    Field(
        ge=0,
        le=3600,
        description="Seconds before the first retry of failed hosts; doubled for each next one.",
    ),
]
ApprovalTimeout = Annotated[
    int,
    Field(
        ge=5,
        le=7 * 24 * 3600,
        description="Seconds to wait for an approval; then the run ends, nothing applied.",
    ),
]
Approvers = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=100)]],
    Field(max_length=100, description="Only these names may approve or reject (default: anyone)."),
]
BatchSize = Annotated[int, Field(ge=1, le=1000, description="Hosts changed at once.")]
Percentage = Annotated[
    float, Field(ge=0, le=100, description="Share of hosts allowed to fail (0-100).")
]
Version = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$",
        description="Version to deploy (letters, digits, . _ + -).",
    ),
]


class Step(BaseModel):
    """One step of a runbook: a playbook with its own host pattern and variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    playbook: Annotated[str, Field(min_length=1, description="Name under playbooks/ or a path.")]
    name: Annotated[str, Field(max_length=100, description="What the step does.")] = ""
    limit: HostPattern | None = None
    extra_vars: dict[str, Any] = Field(default_factory=dict)

    @property
    def title(self) -> str:
        return self.name or self.playbook
