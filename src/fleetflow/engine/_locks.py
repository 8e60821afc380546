"""Host mutual exclusion: one playbook at a time per host, across every flow run.

Each host has a Prefect global concurrency limit of 1 named ``fleetflow-host:<name>``.
A run takes the slots of its hosts in requests of up to 90 names, in sorted name order;
the server grants each request whole or not at all. Prefect relates every
acquisition's event to all the limits in it and refuses events with over 100 related
resources, hence the chunks; taking them in one global order means a run only ever waits
for names after those it holds, so two runs never deadlock. Slots are leased: a run
killed without releasing them frees its hosts when the lease expires.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

from fleetflow.engine._log import Logger
from fleetflow.exceptions import HostLockTimeout

__all__ = ["CHUNK", "LOCK_PREFIX", "chunks", "host_locks", "lock_names"]

LOCK_PREFIX = "fleetflow-host:"
# Renewed in the background while the run lives. 60 s (the server's minimum) let leases
# lapse under load (20 concurrent runs on 2 cores: the server answered too late, Prefect
# then stops the run); a killed run's hosts stay locked this long at most.
_LEASE_SECONDS = 120.0
_PAGE = 200
# Prefect's events allow 100 related resources; an acquisition's relates to each limit.
CHUNK = 90


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
    with ExitStack() as held:
        for chunk in chunks(names):
            remaining = None if timeout is None else max(timeout - time.monotonic() + started, 0)
            try:
                held.enter_context(
                    concurrency(
                        chunk,
                        occupy=1,
                        timeout_seconds=remaining,
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
        yield


def chunks(names: list[str]) -> list[list[str]]:
    """Sorted names in acquisition requests of at most CHUNK."""
    return [list(chunk) for chunk in itertools.batched(names, CHUNK)]
