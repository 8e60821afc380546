"""playbook: run any playbook of the repository against an inventory (the ad-hoc job)."""

from __future__ import annotations

from typing import Annotated

from prefect import State, flow
from pydantic import Field

from fleetflow import ConfigurationError, PlaybookResult, run_playbook
from fleetflow.engine.run import time_limit as limited
from fleetflow.flowkit.change import plan_and_apply
from fleetflow.flowkit.outcome import reports_outcome
from fleetflow.flowkit.params import (
    DEFAULT_TIME_LIMIT,
    ApprovalTimeout,
    Approvers,
    HostPattern,
    Inventory,
    Percentage,
    Playbook,
    Retries,
    RetryDelay,
    SecretName,
    Tags,
    TimeLimit,
    Variables,
    retry_policy,
)
from fleetflow.flowkit.summary import print_result


@flow(name="playbook", log_prints=True)
@reports_outcome
def playbook(
    playbook: Playbook,
    inventory: Inventory = "lab",
    limit: HostPattern | None = None,
    extra_vars: Variables | None = None,
    tags: Tags | None = None,
    check: bool = False,
    diff: bool = False,
    forks: Annotated[int, Field(ge=1, le=500)] | None = None,
    max_fail_percentage: Percentage = 0.0,
    retries: Retries = 0,
    retry_delay: RetryDelay = 5,
    ssh_key_secret: SecretName | None = None,
    become_password_secret: SecretName | None = None,
    vault_password_secret: SecretName | None = None,
    approval: bool = False,
    approval_timeout: ApprovalTimeout = 3600,
    approvers: Approvers | None = None,
    time_limit: TimeLimit = DEFAULT_TIME_LIMIT,
) -> PlaybookResult | State:
    """Run `playbook` on `inventory` (narrowed by `limit`); fail if any host fails.

    With `approval`, first plan (check + diff, published as the `plan` artifact), pause
    until someone approves in the UI (Resume) or the API, and apply only then; a rejection
    or `approval_timeout` seconds without a decision end the run Cancelled, nothing applied.

    `extra_vars` may set only what the playbook declares (playbooks/params/<name>.yml),
    taken as values. Do not pass secrets in them: flow parameters are stored by the server.
    Name Prefect Secret blocks instead (`*_secret`): only the names are stored. Playbooks
    run within `time_limit` seconds (a wait for approval does not count).

    Args:
        playbook: The playbook to run (playbooks/<name>.yml), by name.
        inventory: The environment to run on (inventory/<name>/), by name.
        limit: Only the hosts this Ansible host pattern matches; default: every host.
        extra_vars: Variables the playbook declares (playbooks/params/<name>.yml), taken as values.
        tags: Only the tasks with these tags (Ansible's --tags).
        check: Report what would change and change nothing (Ansible's --check).
        diff: Show the changes made to files and templates (Ansible's --diff).
        forks: Hosts worked on at once; default: every targeted host, at most 50.
        max_fail_percentage: Share of hosts (0-100) that may fail or be unreachable without failing
            the run.
        retries: Extra attempts for the failed or unreachable hosts only (0-5).
        retry_delay: Seconds before the first retry; doubled for each next one.
        ssh_key_secret: Prefect Secret block holding the SSH private key (its name only is stored).
        become_password_secret: Prefect Secret block holding the become (sudo) password.
        vault_password_secret: Prefect Secret block holding the ansible-vault password.
        approval: Plan first (check and diff), then wait for someone to approve before applying.
        approval_timeout: Seconds to wait for an approval; then the run ends, nothing applied.
        approvers: Only these names may approve or reject; default: anyone.
        time_limit: Seconds the playbook runs may take (at most a day; a wait for approval does not
            count).
    """
    if approval and check:
        raise ConfigurationError("approval plans in check mode and then applies: drop check")

    def run(check_mode: bool) -> PlaybookResult:
        return run_playbook(
            playbook,
            inventory=inventory,
            limit=limit,
            extra_vars=extra_vars,
            tags=tags,
            check=check_mode,
            diff=diff or (check_mode and approval),
            forks=forks,
            max_fail_percentage=max_fail_percentage,
            retry=retry_policy(retries, retry_delay),
            raise_on_failure=not (check_mode and approval),
            ssh_key_secret=ssh_key_secret,
            become_password_secret=become_password_secret,
            vault_password_secret=vault_password_secret,
        )

    def bounded(check_mode: bool) -> PlaybookResult:
        with limited(time_limit):
            return run(check_mode)

    if approval:
        outcome = plan_and_apply(
            bounded, timeout=approval_timeout, approvers=approvers or (), inventory=inventory
        )
    else:
        outcome = bounded(check)
    if isinstance(outcome, PlaybookResult):  # not the Cancelled state of a refused change
        print_result(outcome)
    return outcome


if __name__ == "__main__":
    playbook("ping")
