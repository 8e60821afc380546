"""wait_then_run: wait for conditions (a file on the hosts, a port, a URL, an event), then
run a playbook.

The conditions are checked in order, each for its own timeout; the first one not met fails
the run (SensorTimeout) and the playbook is not run. Conditions are typed parameters: the
server refuses a bad one (a port out of range, an unknown kind) when the run is created,
and the flow refuses the rest (a poll interval longer than the timeout) before waiting.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

from fleetflow import PlaybookResult, run_playbook
from fleetflow.engine.run import time_limit as limited
from fleetflow.flowkit.outcome import reports_outcome
from fleetflow.flowkit.params import (
    DEFAULT_TIME_LIMIT,
    HostPattern,
    Inventory,
    Playbook,
    TimeLimit,
    Variables,
)
from fleetflow.flowkit.sensors import Condition, FileCondition, wait_for_condition
from fleetflow.flowkit.summary import print_result

Conditions = Annotated[list[Condition], Field(max_length=20)]


@flow(name="wait_then_run", log_prints=True)
@reports_outcome
def wait_then_run(
    playbook: Playbook,
    inventory: Inventory = "lab",
    limit: HostPattern | None = None,
    extra_vars: Variables | None = None,
    conditions: Conditions | None = None,
    time_limit: TimeLimit = DEFAULT_TIME_LIMIT,
) -> PlaybookResult:
    """Wait for every one of `conditions` in order, then run `playbook` on `inventory`.

    A file condition without its own `limit` watches the hosts the playbook will run on.
    (The parameter is not called `wait_for`: Prefect reserves that name.)

    Args:
        playbook: The playbook to run once every condition is met (playbooks/<name>.yml), by name.
        inventory: The environment to run on (inventory/<name>/), by name.
        limit: Only the hosts this Ansible host pattern matches; default: every host.
        extra_vars: Variables the playbook declares (playbooks/params/<name>.yml), taken as values.
        conditions: What to wait for, in order (at most 20): a file on the hosts, a port, a URL or
            an event.
        time_limit: Seconds the whole run may take (at most a day); then it is stopped.
    """
    for condition in conditions or []:
        seen = wait_for_condition(condition, inventory=inventory, limit=limit)
        print(f"{condition.kind} condition met after {seen.waited_seconds:.1f} s")
    with limited(time_limit):
        result = run_playbook(playbook, inventory=inventory, limit=limit, extra_vars=extra_vars)
    print_result(result)
    return result


if __name__ == "__main__":
    wait_then_run("ping", conditions=[FileCondition(path="/etc/hostname", timeout=30)])
