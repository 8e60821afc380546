"""Flow parameter types: what they enforce is enforced when a flow is called, so flows
need not check it again; `retry_policy` maps a flow's retries to run_playbook's policy."""

from __future__ import annotations

from typing import Any

import pytest
from flows.rolling_update import rolling_update
from flows.run_script import run_script
from prefect import Flow
from prefect.exceptions import ParameterTypeError

from fleetflow import RetryPolicy
from fleetflow.flowkit.params import retry_policy


def test_retry_policy_counts_the_first_attempt() -> None:
    assert retry_policy(0, 5) == RetryPolicy(attempts=1, delay_seconds=5)
    assert retry_policy(2, 0.5) == RetryPolicy(attempts=3, delay_seconds=0.5)


@pytest.mark.parametrize(
    ("flow", "parameters"),
    [
        (rolling_update, {"version": "1.0.0", "batch_size": 0}),
        (rolling_update, {"version": "   "}),
        (rolling_update, {"version": ""}),
        (run_script, {"script": "disk_usage.sh", "batch_size": 0}),
    ],
)
def test_the_checks_flows_dropped_are_made_by_their_parameter_types(
    flow: Flow[Any, Any], parameters: dict[str, Any]
) -> None:
    """The flows checked these themselves until #19; Prefect validates a flow's parameters
    (the engine calls validate_parameters) whether a worker or a Python call starts it."""
    assert flow.should_validate_parameters
    with pytest.raises(ParameterTypeError):
        flow.validate_parameters(parameters)


def test_valid_parameters_pass() -> None:
    checked = run_script.validate_parameters({"script": "disk_usage.sh", "batch_size": 1})
    assert checked["batch_size"] == 1
