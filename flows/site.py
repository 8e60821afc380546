"""site: apply the roles (baseline, app) to an inventory - the fleet's whole desired state."""

from __future__ import annotations

from prefect import flow

from fleetflow import PlaybookResult, run_playbook
from fleetflow.engine.run import time_limit as limited
from fleetflow.flowkit.outcome import reports_outcome
from fleetflow.flowkit.params import (
    DEFAULT_TIME_LIMIT,
    HostPattern,
    Inventory,
    Retries,
    RetryDelay,
    Tags,
    TimeLimit,
    retry_policy,
)
from fleetflow.flowkit.summary import print_result


@flow(name="site", log_prints=True)
@reports_outcome
def site(
    inventory: Inventory = "lab",
    limit: HostPattern | None = None,
    check: bool = False,
    diff: bool = False,
    tags: Tags | None = None,
    retries: Retries = 1,
    retry_delay: RetryDelay = 5,
    time_limit: TimeLimit = DEFAULT_TIME_LIMIT,
) -> PlaybookResult:
    """Converge every host (or `limit`) to the roles in playbooks/site.yml.

    `check` shows what would change without changing anything; failed or unreachable
    hosts are retried alone up to `retries` times.

    Args:
        inventory: The environment to run on (inventory/<name>/), by name.
        limit: Only the hosts this Ansible host pattern matches; default: every host.
        check: Report what would change and change nothing (Ansible's --check).
        diff: Show the changes made to files and templates (Ansible's --diff).
        tags: Only the tasks with these tags (Ansible's --tags).
        retries: Extra attempts for the failed or unreachable hosts only (0-5).
        retry_delay: Seconds before the first retry; doubled for each next one.
        time_limit: Seconds the whole run may take (at most a day); then it is stopped.
    """
    with limited(time_limit):
        result = run_playbook(
            "site",
            inventory=inventory,
            limit=limit,
            check=check,
            diff=diff,
            tags=tags,
            retry=retry_policy(retries, retry_delay),
        )
    print_result(result)
    return result


if __name__ == "__main__":
    site()
