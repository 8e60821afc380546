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


def _job_template(warm: bool) -> dict[str, Any]:
    """The process worker's template; with `warm`, runs start through fleetflow-engine."""
    template = ProcessWorker.get_default_base_job_template()
    if warm:
        # A worker without a launcher (or without fleetflow) still works: fleetflow-engine
        # falls back to `python -m prefect.engine`.
        template["variables"]["properties"]["command"]["default"] = LAUNCH_COMMAND
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
