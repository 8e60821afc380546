"""Flow parameter types whose constraints reach the deployment's parameter schema.

Prefect turns these into JSON schema, so the server rejects a bad value when the run
is triggered (`prefect deployment run --param retries=-1` fails at once) and the UI
shows the limits; the same constraints are checked again when the flow starts (Prefect
validates a flow's parameters whether a worker or a plain Python call starts it), so a flow
need not check them again. `retry_policy` turns the `retries`/`retry_delay` pair into what
run_playbook takes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from fleetflow.engine.inventory import inventory_names, playbook_names
from fleetflow.engine.retry import RetryPolicy
from fleetflow.engine.variables import RESERVED_NAMES
from fleetflow.settings import get_settings

__all__ = [
    "DEFAULT_TIME_LIMIT",
    "PLAIN_TEXT",
    "ApprovalTimeout",
    "Approvers",
    "BatchSize",
    "HostPattern",
    "Inventory",
    "Percentage",
    "Playbook",
    "Retries",
    "RetryDelay",
    "Script",
    "SecretName",
    "Step",
    "Tags",
    "TimeLimit",
    "Variables",
    "Version",
    "retry_policy",
]

# No control characters (NUL made the server answer 503; others hide text in logs).
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"
_PLAIN = re.compile(PLAIN_TEXT)


class _Named:
    """A parameter choosing one of the repository's `names`: published as the schema's
    choices when the schema is made, at deploy time (the UI's dropdown, the server's check
    at trigger time), and checked again when the flow starts (the API lets a caller turn
    the server's check off, so the flow must not take a path on trust)."""

    def __init__(self, kind: str, names: Callable[[Path], list[str]]) -> None:
        self.kind = kind
        self.names = names

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        found = handler(schema)
        found["enum"] = self.names(get_settings().project_dir)
        return found

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def _check(self, value: str) -> str:
        known = self.names(get_settings().project_dir)
        if value not in known:
            shown = value if len(value) <= 80 else value[:80] + "..."
            raise ValueError(f"unknown {self.kind} {shown!r}; choose one of: {', '.join(known)}")
        return value


def script_names(project_dir: Path) -> list[str]:
    """The repository's maintenance scripts: the files in scripts/."""
    base = project_dir / "scripts"
    if not base.is_dir():
        return []
    found = (p.name for p in base.iterdir() if p.is_file() and not p.name.startswith("."))
    return sorted(n for n in found if re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$", n))


_NAME = Field(min_length=1, max_length=100)
Playbook = Annotated[
    str,
    _NAME,
    Field(description="A playbook of the repository (playbooks/<name>.yml), by name."),
    _Named("playbook", playbook_names),
]
Script = Annotated[
    str,
    _NAME,
    Field(description="A script of the repository's scripts/."),
    _Named("script", script_names),
]
Inventory = Annotated[
    str,
    _NAME,
    Field(description="An environment of the repository (inventory/<name>/), by name."),
    _Named("inventory", inventory_names),
]
HostPattern = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1000,
        pattern=r"^[^\x00-\x20\x7f]+$",
        description="Ansible host pattern: all, web, db-01, 'web:&eu', 'all:!db-02'.",
    ),
]


_Text = Annotated[str, Field(max_length=10_000, pattern=PLAIN_TEXT)]
_Scalar = _Text | int | float | bool
Variables = Annotated[
    # Scalars and lists of them: what a playbook can declare (fleetflow.engine.variables).
    dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], _Scalar | list[_Scalar]],
    Field(
        max_length=50,
        description=(
            "Variables the playbook declares (playbooks/params/<name>.yml); taken as values, "
            "never as templates. Anything else is refused before any host is touched."
        ),
        json_schema_extra={
            "additionalProperties": False,
            # Refused by the server too (the flow refuses them again before any host).
            "propertyNames": {
                "not": {"anyOf": [{"pattern": "^(ansible_|_)"}, {"enum": sorted(RESERVED_NAMES)}]}
            },
        },
    ),
]
Tags = Annotated[
    list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]],
    Field(max_length=50, description="Only tasks with these tags (Ansible --tags)."),
]
SecretName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,99}$",
        description="Name of a Prefect Secret block (only the name is stored with the run).",
    ),
]
DEFAULT_TIME_LIMIT = 4 * 3600
TimeLimit = Annotated[
    int,
    Field(
        ge=60,
        le=24 * 3600,
        description="Seconds the whole run may take (at most a day); then it is stopped.",
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


def retry_policy(retries: int, retry_delay: float) -> RetryPolicy:
    """The policy for a flow's `retries: Retries` (extra attempts) and `retry_delay: RetryDelay`."""
    return RetryPolicy(attempts=retries + 1, delay_seconds=retry_delay)


ApprovalTimeout = Annotated[
    int,
    Field(
        ge=5,
        le=7 * 24 * 3600,
        description="Seconds to wait for an approval; then the run ends, nothing applied.",
    ),
]
Approvers = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=100, pattern=PLAIN_TEXT)]],
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

    playbook: Playbook
    name: Annotated[
        str, Field(max_length=100, pattern=PLAIN_TEXT, description="What the step does.")
    ] = ""
    limit: HostPattern | None = None
    extra_vars: Variables = Field(default_factory=dict)

    @property
    def title(self) -> str:
        return self.name or self.playbook
