"""The work pool's job template: a flow run's creator cannot choose what the worker runs."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from fastapi import HTTPException
from prefect.workers.process import ProcessJobConfiguration

from fleetflow._prefect import (
    DeploymentFlowRunCreate,
    validate_base_job_template,
    validate_job_variables_for_deployment_flow_run,
)
from fleetflow.stack._pool import LAUNCH_COMMAND, _job_template

# What `POST /deployments/{id}/create_flow_run {"job_variables": ...}` could carry.
HOSTILE: list[dict[str, Any]] = [
    {"command": "touch /tmp/pwned"},
    {"env": {"LD_PRELOAD": "/tmp/evil.so"}},
    {"env.PYTHONPATH": "/tmp"},
    {"working_dir": "/tmp"},
    {"surprise": 1},
]


@pytest.mark.parametrize("warm", [True, False])
def test_template_fixes_command_env_and_working_dir(warm: bool) -> None:
    template = _job_template(warm)
    validate_base_job_template(template)  # what the server checks on create/update
    config = template["job_configuration"]
    assert "{{" not in str({k: config.get(k) for k in ("command", "env", "working_dir")})
    assert config.get("command") == (LAUNCH_COMMAND if warm else None)
    assert "env" not in config and "working_dir" not in config
    variables = template["variables"]
    assert set(variables["properties"]) == {"name", "labels", "stream_output"}
    assert variables["additionalProperties"] is False


def _validate_flow_run(template: dict[str, Any], job_variables: dict[str, Any]) -> None:
    pool = SimpleNamespace(name="fleetflow", base_job_template=template)
    deployment = SimpleNamespace(
        id="d", job_variables={}, work_queue=SimpleNamespace(work_pool=pool)
    )
    run = DeploymentFlowRunCreate(job_variables=job_variables)
    # No session is needed: no default of the template references a block.
    check = validate_job_variables_for_deployment_flow_run
    asyncio.run(check(cast(Any, None), cast(Any, deployment), run))


@pytest.mark.parametrize("job_variables", HOSTILE)
def test_the_server_refuses_hostile_job_variables(job_variables: dict[str, Any]) -> None:
    """Regression: {"command": ...} at trigger time ran any command on the worker."""
    with pytest.raises(HTTPException) as refused:
        _validate_flow_run(_job_template(warm=True), job_variables)
    assert refused.value.status_code == 422


def test_the_server_accepts_what_callers_may_set() -> None:
    _validate_flow_run(_job_template(warm=True), {"name": "nightly", "stream_output": False})


@pytest.mark.parametrize("warm", [True, False])
@pytest.mark.parametrize("job_variables", HOSTILE)
def test_the_worker_ignores_hostile_job_variables(
    warm: bool, job_variables: dict[str, Any]
) -> None:
    """Runs made with POST /flow_runs/ skip the server's check: the worker must not obey them.

    An `env: {}` in job_configuration was not enough: the worker merges a run's env into it.
    """
    # No client is needed: the template references no blocks or variables.
    resolve = ProcessJobConfiguration.from_template_and_values
    config: ProcessJobConfiguration = asyncio.run(
        resolve(_job_template(warm), job_variables, client=cast(Any, object()))
    )
    assert config.command == (LAUNCH_COMMAND if warm else None)
    assert config.env == {} and config.working_dir is None
