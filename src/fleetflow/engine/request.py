"""One run request: what run_playbook was asked to do, built once and handed down.

The preflight checks it, the attempts loop runs it, and the runner starts ansible-playbook
from it (ansible-runner's RunnerConfig -> Runner, one object rather than a copy per
layer). What differs per attempt travels in a copy made with `for_attempt`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fleetflow.engine._guard import GuardConfig
from fleetflow.engine._tuning import Tuning
from fleetflow.engine.retry import RetryPolicy
from fleetflow.engine.secrets import RunSecrets
from fleetflow.exceptions import ConfigurationError

__all__ = ["RunRequest"]


@dataclass(frozen=True)
class RunRequest:
    """Everything a playbook run was asked to do.

    `playbook` and `inventory` are the caller's names or paths; the runner gets a copy
    holding what the preflight resolved them to (`for_attempt`). `extra_vars` None means
    none were given, so a preflight does not look at the playbook's variables
    (resolve_hosts); a run always gives a mapping, checked against the declaration.
    """

    playbook: str | Path
    inventory: str | Path
    project_dir: Path
    limit: str | None = None
    tags: tuple[str, ...] = ()
    skip_tags: tuple[str, ...] = ()
    extra_vars: dict[str, Any] | None = None
    check: bool = False
    diff: bool = False
    forks: int | None = None
    become: bool = False
    timeout: float | None = None
    max_fail_percentage: float = 0.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    run_dir: Path | None = None
    tuning: Tuning = field(default_factory=Tuning)
    secrets: RunSecrets = field(default_factory=RunSecrets, repr=False)
    guard: GuardConfig = field(default_factory=GuardConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.max_fail_percentage <= 100:
            raise ConfigurationError("max_fail_percentage must be between 0 and 100")
        if self.forks is not None and self.forks < 1:
            raise ConfigurationError("forks must be at least 1")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigurationError("timeout must be a positive number of seconds")

    def for_attempt(
        self,
        playbook: Path,
        inventory: Path,
        *,
        limit: str | None,
        forks: int,
        timeout: float | None,
    ) -> RunRequest:
        """This request as one ansible-playbook invocation: resolved paths, the attempt's
        limit, its forks and what is left of the run's time."""
        return replace(
            self, playbook=playbook, inventory=inventory, limit=limit, forks=forks, timeout=timeout
        )
