"""`fleetflow run` against a real Prefect server: a served deployment with a parameter
schema, real ansible-playbook on the lab; exit codes, host lines, the per-host table, and
refusals that leave no flow run behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import httpx
import pytest
from prefect.settings import PREFECT_API_URL

from fleetflow.lab import Lab
from fleetflow.ops.deploy import strict_schema
from tests.conftest import REPO

from .runs import stop

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
MIXED = REPO / "tests/fixtures/playbooks/mixed.yml"
DEPLOYMENT = "triage/run-cli-test"


@pytest.fixture(scope="module")
def served(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A deployment served by a subprocess (a worker-like runner): its parameter schema is
    the real one (repository playbooks as choices, Variables), enforced by the server.
    `failing` runs a playbook that fails on the db hosts."""
    script = tmp_path_factory.mktemp("run-cli") / "triage.py"
    script.write_text(
        textwrap.dedent(f"""
        from prefect import flow
        from fleetflow import PlaybookResult, run_playbook
        from fleetflow.flowkit.params import Playbook, Variables

        @flow(name="triage")
        def triage(playbook: Playbook, extra_vars: Variables | None = None,
                   failing: bool = False) -> PlaybookResult:
            return run_playbook({str(MIXED)!r} if failing else playbook,
                                inventory={str(lab.inventory_dir)!r}, extra_vars=extra_vars)

        if __name__ == "__main__":
            triage.serve(name="run-cli-test")
    """)
    )
    api = str(PREFECT_API_URL.value())
    env = dict(os.environ, PREFECT_API_URL=api, PREFECT_RUNNER_POLL_FREQUENCY="1",
               PYTHONPATH=str(REPO))  # fmt: skip
    server = subprocess.Popen([sys.executable, str(script)], env=env, cwd=REPO,
                              start_new_session=True)  # fmt: skip
    try:
        started = time.monotonic()
        while _deployment_id(api) is None:
            assert time.monotonic() - started < 120, "serve did not register the deployment"
            assert server.poll() is None, "the served flow exited"
            time.sleep(1)
        _make_strict(api)
        yield api
    finally:
        stop(server)


def _make_strict(api: str) -> None:
    """What `fleetflow deploy` does to every deployment of a stack: unknown parameters and
    undeclared playbook variables refused by the server's schema check."""
    deployment_id = _deployment_id(api)
    schema = httpx.get(f"{api}/deployments/{deployment_id}", timeout=30).json()[
        "parameter_openapi_schema"
    ]
    body = {"parameter_openapi_schema": strict_schema(schema, None, REPO),
            "enforce_parameter_schema": True}  # fmt: skip
    httpx.patch(f"{api}/deployments/{deployment_id}", json=body, timeout=30).raise_for_status()


def _deployment_id(api: str) -> str | None:
    response = httpx.get(f"{api}/deployments/name/{DEPLOYMENT}", timeout=30)
    return str(response.json()["id"]) if response.status_code == 200 else None


def _flow_runs(api: str) -> int:
    """Every flow run on the server (this module's server is this test process's own)."""
    response = httpx.post(f"{api}/flow_runs/count", json={}, timeout=30)
    response.raise_for_status()
    return int(response.json())


def fleetflow_run(api: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PREFECT_API_URL=api, PYTHONPATH=str(REPO))
    env.pop("PREFECT_UI_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "fleetflow.ops.cli", "run", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_a_run_where_one_host_fails_shows_it_and_exits_1(served: str, lab: Lab) -> None:
    db = next(h.name for h in lab.hosts() if h.group == "db")
    others = [h.name for h in lab.hosts() if h.name != db]
    done = fleetflow_run(served, DEPLOYMENT, "--param", "playbook=ping", "--param",
                         "failing=true", "--watch")  # fmt: skip
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    run_id = out.splitlines()[0].split("(")[1].split(")")[0]
    missing = [line for line in _host_and_task_lines(served, run_id) if line not in out]
    assert not missing, f"lines the server has but the watch did not show: {missing}"
    assert f"{served.removesuffix('/api')}/runs/flow-run/" in out
    assert "TASK [Fail on database hosts]" in out
    assert f"{db} | failed | Fail on database hosts: db hosts refuse this change" in out
    table = out[out.index("\nhosts-mixed-") + 1 :].splitlines()
    assert table[1].split() == ["host", "status", "failure"]
    rows = {line.split()[0]: line for line in table[2:] if line.startswith("  ")}
    assert "failed" in rows[db] and "db hosts refuse this change" in rows[db]
    assert all("failed" not in rows[h] for h in others)
    assert out.rstrip().splitlines()[-1].startswith("final state: Failed")
    assert "Traceback" not in out


def _host_and_task_lines(api: str, run_id: str) -> list[str]:
    """The run's host and TASK lines as the server has them (a record may hold several)."""
    body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
    logs = httpx.post(f"{api}/logs/filter", json=body, timeout=30).json()
    found = [line for log in logs for line in str(log["message"]).splitlines()]
    return [m for m in found if re.match(r"^(TASK \[|\S+ \| [a-z() ]+ \| )", m)]


def test_a_successful_run_exits_0(served: str, lab: Lab) -> None:
    done = fleetflow_run(served, DEPLOYMENT, "--params", '{"playbook": "ping"}', "--watch")
    assert done.returncode == 0, done.stdout + done.stderr
    for host in lab.hosts():
        assert f"{host.name} | ok | " in done.stdout
    assert done.stdout.rstrip().splitlines()[-1] == "final state: Completed"


def test_without_watch_it_prints_the_run_and_returns_once_created(served: str) -> None:
    before = _flow_runs(served)
    done = fleetflow_run(served, DEPLOYMENT, "--param", "playbook=ping")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("flow run ") and lines[0].endswith(" created")
    run_id = lines[0].split("(")[1].split(")")[0]
    assert lines[1].strip() == f"{served.removesuffix('/api')}/runs/flow-run/{run_id}"
    assert _flow_runs(served) == before + 1


REFUSED = "refused by the server: Error creating flow run: Validation failed for field "
ATTACKS = {
    "playbook path": (
        ["--param", "playbook=../../../tmp/x"],
        REFUSED + "'playbook'. Failure reason: '../../../tmp/x' is not one of ['deploy_app',",
    ),
    "jinja in extra_vars": (
        ["--param", "playbook=health_check", "--params",
         '{"extra_vars": {"expected_version": "{{ lookup(\'pipe\',\'id\') }}"}}'],
        REFUSED + "'extra_vars.expected_version'. Failure reason: \"{{ lookup('pipe','id') }}\"",
    ),
    "ansible_connection": (
        ["--param", "playbook=ping", "--param", 'extra_vars={"ansible_connection": "local"}'],
        REFUSED + "'extra_vars'. Failure reason: {'ansible_connection': 'local'} is not valid",
    ),
    "unknown deployment": (["--param", "playbook=ping"], "deployment 'triage/nope' not found"),
    "param without =": (["--param", "playbook"], "--param 'playbook': expected NAME=VALUE"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ATTACKS))
def test_refused_with_one_line_exit_2_and_no_flow_run(served: str, case: str) -> None:
    args, reason = ATTACKS[case]
    before = _flow_runs(served)
    name = "triage/nope" if case == "unknown deployment" else DEPLOYMENT
    done = fleetflow_run(served, name, *args, "--watch")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    err = done.stderr.splitlines()
    assert len(err) == 1, done.stderr
    assert err[0].startswith(f"fleetflow: error: {reason}")
    assert _flow_runs(served) == before
