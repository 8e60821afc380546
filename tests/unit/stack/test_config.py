"""The stack file's retention section."""

from __future__ import annotations

import pytest

from fleetflow.stack import StackConfig


def test_retention_defaults_reach_the_server_as_prefect_settings() -> None:
    env = StackConfig().retention.server_env()
    assert env == {
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(30 * 86400),
        "PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS": "3600",
        "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"PT{7 * 86400}S",
    }
    # Prefect itself refuses flow-run retention under an hour: so does the stack file.
    with pytest.raises(ValueError, match="flow_run_days"):
        StackConfig.model_validate({"retention": {"flow_run_days": 0.01}})
