"""A real Prefect server (SQLite) for the integration session, always stopped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    # A server subprocess with its own temporary database; stopped when the block exits.
    with prefect_test_harness(server_startup_timeout=180):
        yield
