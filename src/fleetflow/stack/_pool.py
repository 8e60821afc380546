"""Make the server's work pool and queues match the stack config (idempotent)."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from fleetflow.stack._config import WorkPoolSpec

__all__ = ["LAUNCH_COMMAND", "apply_work_pool", "worker_states"]

LAUNCH_COMMAND = "fleetflow-engine"


# Job variables a flow run's creator may set (at trigger time, through the API): none of
# them chooses what runs or with which environment.
CALLER_VARIABLES = ("name", "labels", "stream_output")


def _job_template(warm: bool) -> dict[str, Any]:
    """The process worker's template, minus what would let a trigger run its own code.

    Prefect's template fills command, env and working_dir from job variables, which anyone
    creating a flow run may override (`{"job_variables": {"command": "touch /tmp/pwned"}}`
    ran that on the worker). Here they are fixed: fleetflow-engine when `warm` (it falls back
    to `python -m prefect.engine` without a launcher), else no command, which the worker
    turns into its own engine command, exactly as the stock default (null) does. env is
    left out rather than set to {}: the worker merges a run's "env" into a dict it finds
    there even when no placeholder asks for it, and runs created with POST /flow_runs/ are
    not validated against this schema. Other keys are refused by the server (422).
    """
    template = ProcessWorker.get_default_base_job_template()
    config = template["job_configuration"]
    for key in ("command", "env", "working_dir"):
        del config[key]
    if warm:
        config["command"] = LAUNCH_COMMAND
    variables = template["variables"]
    variables["properties"] = {
        key: spec for key, spec in variables["properties"].items() if key in CALLER_VARIABLES
    }
    variables["additionalProperties"] = False
    return template


def apply_work_pool(api_url: str, auth: str, spec: WorkPoolSpec, warm: bool) -> None:
    """Create or update the process pool and each queue's priority and concurrency limit."""
    template = _job_template(warm)
    with SyncPrefectClient(api_url, auth_string=auth) as client:
        try:
            client.read_work_pool(spec.name)
            client.update_work_pool(
                spec.name,
                WorkPoolUpdate(
                    concurrency_limit=spec.concurrency_limit, base_job_template=template
                ),
            )
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=spec.name,
                    type=ProcessWorker.type,
                    base_job_template=template,
                    concurrency_limit=spec.concurrency_limit,
                )
            )
        for queue in spec.queues:
            try:
                existing = client.read_work_queue_by_name(queue.name, work_pool_name=spec.name)
            except ObjectNotFound:
                client.create_work_queue(
                    name=queue.name,
                    work_pool_name=spec.name,
                    priority=queue.priority,
                    concurrency_limit=queue.concurrency_limit,
                    description=queue.description,
                )
                continue
            client.update_work_queue(
                existing.id,
                priority=queue.priority,
                concurrency_limit=queue.concurrency_limit,
                description=queue.description,
            )


def worker_states(api_url: str, auth: str, pool: str) -> dict[str, str]:
    """Each worker's name and Prefect's view of it (ONLINE/OFFLINE from heartbeats)."""
    with SyncPrefectClient(api_url, auth_string=auth) as client:
        try:
            workers = client.read_workers_for_work_pool(pool)
        except ObjectNotFound:
            return {}
    return {
        worker.name: str(worker.status.value if worker.status else "UNKNOWN") for worker in workers
    }
