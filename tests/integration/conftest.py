"""A real Prefect server (SQLite) for the integration session, alert receivers per module;
always stopped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness

from .receivers import Inbox, alert_receivers


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    # A server subprocess with its own temporary database; stopped when the block exits.
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, dict[str, str]]]:
    """Alert receivers (HTTP, SMTP) for one test module, and the FLEETFLOW_ALERT_* settings."""
    with alert_receivers() as received:
        yield received
