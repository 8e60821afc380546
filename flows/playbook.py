"""playbook: run any playbook of the repository against an inventory (the ad-hoc job)."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from pydantic import Field

from fleetflow import PlaybookResult, RetryPolicy, run_playbook
from fleetflow.params import HostPattern, Inventory, Percentage, Retries, RetryDelay
from fleetflow.report import print_result


@flow(name="playbook", log_prints=True)
def playbook(
    playbook: Annotated[str, Field(min_length=1, description="Name under playbooks/ or a path.")],
    inventory: Inventory = "lab",
    limit: HostPattern | None = None,
    extra_vars: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    check: bool = False,
    diff: bool = False,
    forks: Annotated[int, Field(ge=1, le=500)] | None = None,
    max_fail_percentage: Percentage = 0.0,
    retries: Retries = 0,
    retry_delay: RetryDelay = 5,
    ssh_key_secret: str | None = None,
    become_password_secret: str | None = None,
    vault_password_secret: str | None = None,
) -> PlaybookResult:
    """Run `playbook` on `inventory` (narrowed by `limit`); fail if any host fails.

    Do not pass secrets in `extra_vars`: flow parameters are stored by the server. Name
    Prefect Secret blocks instead (`*_secret`): only the names are stored.
    """
    result = run_playbook(
        playbook,
        inventory=inventory,
        limit=limit,
        extra_vars=extra_vars,
        tags=tags,
        check=check,
        diff=diff,
        forks=forks,
        max_fail_percentage=max_fail_percentage,
        retry=RetryPolicy(attempts=retries + 1, delay_seconds=retry_delay),
        ssh_key_secret=ssh_key_secret,
        become_password_secret=become_password_secret,
        vault_password_secret=vault_password_secret,
    )
    print_result(result)
    return result


if __name__ == "__main__":
    playbook("ping")
