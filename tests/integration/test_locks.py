"""Host locks on a real Prefect server for a run over more hosts than one request takes."""

from __future__ import annotations

import logging

import pytest
from prefect.client.orchestration import get_client

from fleetflow.engine._locks import LOCK_PREFIX, host_locks

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def _active() -> dict[str, int]:
    with get_client(sync_client=True) as client:
        limits, offset = [], 0
        while page := client.read_global_concurrency_limits(limit=200, offset=offset):
            limits += page
            offset += len(page)
    return {
        lim.name: lim.active_slots for lim in limits if lim.name.startswith(LOCK_PREFIX + "big-")
    }


def test_two_hundred_hosts_are_all_held_then_all_released(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hosts = [f"big-{i:03d}" for i in range(200)]
    with caplog.at_level(logging.ERROR), host_locks(hosts, 30, logging.getLogger("t")):
        held = _active()
    assert len(held) == 200 and set(held.values()) == {1}
    assert set(_active().values()) == {0}
    # Prefect refuses events relating over 100 resources; none was refused.
    assert not [r for r in caplog.records if "related resources" in r.getMessage()]
