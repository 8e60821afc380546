"""run_script: run one of the repository's maintenance scripts on a host pattern, in batches."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.artifacts import create_table_artifact
from pydantic import Field

from fleetflow import PlaybookFailed, run_playbook
from fleetflow.engine.run import time_limit as limited
from fleetflow.flowkit.outcome import reports_outcome
from fleetflow.flowkit.params import (
    DEFAULT_TIME_LIMIT,
    PLAIN_TEXT,
    BatchSize,
    HostPattern,
    Inventory,
    Percentage,
    Retries,
    RetryDelay,
    Script,
    TimeLimit,
    retry_policy,
)
from fleetflow.flowkit.summary import print_result

ScriptArgs = Annotated[
    list[Annotated[str, Field(max_length=1000, pattern=PLAIN_TEXT)]],
    Field(max_length=50, description="Arguments given to the script as they are (no shell)."),
]


@flow(name="run_script", log_prints=True)
@reports_outcome
def run_script(
    script: Script,
    hosts: HostPattern = "all",
    inventory: Inventory = "lab",
    args: ScriptArgs | None = None,
    batch_size: BatchSize | None = None,
    max_fail_percentage: Percentage = 0.0,
    retries: Retries = 0,
    retry_delay: RetryDelay = 5,
    time_limit: TimeLimit = DEFAULT_TIME_LIMIT,
) -> dict[str, dict[str, str]]:
    """Run scripts/<script> with `args` on the hosts matching `hosts`, `batch_size` at a time.

    Returns each host's exit code, stdout and stderr. A script never runs twice at once on
    one host (it holds a lock there); its output is also logged on the host.

    Args:
        script: The script to run: a file of the repository's scripts/, by name.
        hosts: The hosts to run it on, an Ansible host pattern (all, web, db-01).
        inventory: The environment to run on (inventory/<name>/), by name.
        args: Arguments given to the script as they are (no shell).
        batch_size: Hosts run at once, batch after batch; default: all in one batch.
        max_fail_percentage: Share of hosts (0-100) that may fail or be unreachable without failing
            the run.
        retries: Extra attempts for the failed or unreachable hosts only (0-5).
        retry_delay: Seconds before the first retry; doubled for each next one.
        time_limit: Seconds the whole run may take (at most a day); then it is stopped.
    """
    failure: PlaybookFailed | None = None
    with limited(time_limit):
        try:
            result = run_playbook(
                "run_script",
                inventory=inventory,
                limit=hosts,
                extra_vars={
                    "script_name": script,
                    "script_args": list(args or []),
                    "script_batch_size": str(batch_size) if batch_size else "100%",
                },
                max_fail_percentage=max_fail_percentage,
                retry=retry_policy(retries, retry_delay),
            )
        except PlaybookFailed as exc:  # the task ends Failed too; the outputs still count
            failure, result = exc, exc.result
    outputs = {
        host: {k: str(v) for k, v in r.outputs.items()} | {"status": r.status.value}
        for host, r in sorted(result.hosts.items())
    }
    create_table_artifact(
        table=[{"host": h, **o} for h, o in outputs.items()],
        key=f"script-output-{script.replace('_', '-').replace('.', '-')}",
        description=f"Output of {script} on {hosts} ({inventory})",
    )
    print_result(result)
    if failure is not None:
        raise failure
    return outputs


if __name__ == "__main__":
    run_script("disk_usage.sh")
