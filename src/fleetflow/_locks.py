"""Host mutual exclusion: one playbook at a time per host, across every flow run.

Each host has a Prefect global concurrency limit of 1 named ``fleetflow-host:<name>``.
A run takes the slots of all its hosts in one request; the server grants all of them
or none in one transaction, so two runs never hold half each (no deadlock), and the
names are sorted so the request is the same whatever order the hosts came in. Slots are
leased: a run killed without releasing them frees its hosts when the lease expires.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

from fleetflow._engine import Logger
from fleetflow.exceptions import HostLockTimeout

__all__ = ["LOCK_PREFIX", "host_locks", "lock_names"]

LOCK_PREFIX = "fleetflow-host:"
# The server's minimum; renewed in the background while the run lives.
_LEASE_SECONDS = 60.0
_PAGE = 200


def lock_names(hosts: Iterable[str]) -> list[str]:
    return sorted({f"{LOCK_PREFIX}{host}" for host in hosts})


def _ensure_limits(names: list[str]) -> None:
    """Create the per-host limits that do not exist yet (one listing, then only the new)."""
    with get_client(sync_client=True) as client:
        existing: set[str] = set()
        offset = 0
        while page := client.read_global_concurrency_limits(limit=_PAGE, offset=offset):
            existing.update(limit.name for limit in page)
            offset += len(page)
        for name in names:
            if name in existing:
                continue
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
            except ObjectAlreadyExists:
                continue  # another run created it first


@contextmanager
def host_locks(
    hosts: Iterable[str],
    timeout: float | None,
    logger: Logger,
) -> Iterator[None]:
    """Hold every host's lock for the block; HostLockTimeout if not granted in `timeout`."""
    names = lock_names(hosts)
    _ensure_limits(names)
    started = time.monotonic()
    held = ExitStack()
    try:
        held.enter_context(
            concurrency(
                names,
                occupy=1,
                timeout_seconds=timeout,
                lease_duration=_LEASE_SECONDS,
                strict=True,
            )
        )
    except TimeoutError as exc:
        raise HostLockTimeout(
            f"hosts still locked by other runs after {timeout} s; nothing was run"
        ) from exc
    if (waited := time.monotonic() - started) >= 1:
        logger.info("waited %.1f s for %d host locks held by other runs", waited, len(names))
    with held:
        yield
