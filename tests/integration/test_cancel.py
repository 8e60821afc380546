"""Cancellation from Prefect kills ansible-playbook, its SSH connections and the remote work."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from fleetflow.lab import Lab
from tests.conftest import REPO

from .runs import stop
from .stacks import commands_naming

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
SLEEP = REPO / "tests/fixtures/playbooks/sleep.yml"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - started


def ansible_processes(lab: Lab) -> list[str]:
    """This run's ansible processes: on this test's lab (another test process may be
    running playbooks of its own on another lab at the same time)."""
    found = commands_naming(str(lab.inventory_dir)).values()
    return [cmd for cmd in found if str(SLEEP) in cmd or "ff-run-" in cmd]


def deployment_exists() -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name("sleepy/cancel-test")
        except ObjectNotFound:
            return False
    return True


def test_cancel_kills_the_run_and_leaves_no_process(lab: Lab, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    host = lab.hosts()[0].name
    script = tmp_path / "sleepy.py"
    script.write_text(
        textwrap.dedent(f"""
        from prefect import flow
        from fleetflow import run_playbook

        @flow
        def sleepy(tag: str) -> None:
            run_playbook({str(SLEEP)!r}, inventory={str(lab.inventory_dir)!r}, limit={host!r},
                         extra_vars={{"tag": tag, "seconds": 600}})

        if __name__ == "__main__":
            sleepy.serve(name="cancel-test")
    """)
    )
    env = dict(os.environ, PREFECT_API_URL=str(PREFECT_API_URL.value()),
               PREFECT_RUNNER_POLL_FREQUENCY="1", PYTHONPATH=str(REPO))  # fmt: skip
    server = subprocess.Popen([sys.executable, str(script)], env=env, cwd=REPO,
                              start_new_session=True)  # fmt: skip
    try:
        wait_for(deployment_exists, 90, "serve to register the deployment")
        run = run_deployment("sleepy/cancel-test", parameters={"tag": tag}, timeout=0)
        wait_for(lambda: lab.ssh(host, f"test -e /root/ff-sleep-started-{tag}").returncode == 0,
                 90, "the playbook to start on the host")  # fmt: skip
        assert ansible_processes(lab)
        subprocess.run([str(Path(sys.executable).parent / "prefect"), "flow-run", "cancel",
                        str(run.id)], env=env, check=True, capture_output=True)  # fmt: skip

        def cancelled() -> bool:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run.id).state
            return state is not None and state.type == StateType.CANCELLED

        seconds = wait_for(cancelled, 60, "the flow run to be Cancelled")
        wait_for(lambda: not ansible_processes(lab), 10, "ansible processes to go")
        print(f"cancel -> Cancelled in {seconds:.1f} s")  # noqa: T201
        # The in-flight remote command gets no hangup (no tty under pipelining): the run's
        # guard on the host stops it (#26), and no later task starts.
        wait_for(lambda: "sleep 600" not in lab.ssh(host, "ps -eo args").stdout, 10,
                 "the remote sleep to stop")  # fmt: skip
        time.sleep(3)
        assert lab.ssh(host, f"test -e /root/ff-sleep-ended-{tag}").returncode == 1
    finally:
        stop(server)
