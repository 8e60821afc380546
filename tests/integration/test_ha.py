"""The scaled control plane (issue #23): two Prefect API replicas behind HAProxy, two
background-services processes, Redis and PostgreSQL, behind the access gateway.

One stack for the module. Redis is the machine's (127.0.0.1:6379), on a database number of
this test process's own, emptied before and after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from fleetflow.lab import Lab

from .faults import BEATS, beats_logged
from .stacks import BIN, RunningStack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS = f"redis://127.0.0.1:6379/{10 + os.getpid() % 6}"
CONFIG = f"""
work_pool: {{name: fleetflow, queues: [{{name: lab}}]}}
workers: [{{name: worker-ha, queues: [lab]}}]
worker_poll_seconds: 1
control_plane: {{api_replicas: 2, services: 2, redis_url: "{REDIS}"}}
"""


@pytest.fixture(scope="module")
def ha(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    store = redis.Redis.from_url(REDIS)
    store.flushdb()
    try:
        with running_stack(tmp_path_factory.mktemp("ha"), str(lab.inventory_dir), CONFIG) as stack:
            yield stack
    finally:
        store.flushdb()
        store.close()


def _process(stack: RunningStack, name: str) -> dict[str, Any]:
    state = json.loads((stack.directory / "stack.json").read_text())
    return dict(next(p for p in state["processes"] if p["name"] == name))


def _answers_through_the_gateway(stack: RunningStack) -> None:
    """The UI's page and the API answer where users reach them."""
    user, password = stack.env["FLEETFLOW_API_AUTH"].split(":", 1)
    base = stack.env["PREFECT_API_URL"].removesuffix("/api")
    with httpx.Client(auth=(user, password), timeout=30) as client:
        assert client.get(f"{base}/").status_code == 200
        assert client.get(f"{base}/api/health").json() is True
        # A POST that reached the dying replica is not resent by HAProxy (it may have
        # acted on it): the client retries, as Prefect's clients do on a 502.
        filtered = [client.post(f"{base}/api/flow_runs/filter", json={"limit": 5})]
        if filtered[0].status_code == 502:
            filtered.append(client.post(f"{base}/api/flow_runs/filter", json={"limit": 5}))
        assert filtered[-1].status_code == 200


def test_a_replica_killed_mid_run_loses_nothing_and_its_restart_rejoins(
    ha: RunningStack, lab: Lab
) -> None:
    run_id = ha.create_run("playbook/lab", playbook=BEATS, inventory=ha.inventory)
    ha.wait_log(run_id, "| ok | Beat 2")
    victim = _process(ha, "api-1")
    os.kill(victim["pid"], signal.SIGKILL)
    for _ in range(15):  # while it is down, through HAProxy's other replica
        _answers_through_the_gateway(ha)
        time.sleep(0.1)
    ha.wait_state(run_id, "COMPLETED", timeout=240)
    assert beats_logged(ha, run_id, 15 * len(lab.hosts())) == 15 * len(lab.hosts())
    ha.up()
    back = _process(ha, "api-1")
    assert back["pid"] != victim["pid"] and back["port"] == victim["port"]
    # Rejoined: with the other replica killed too, the balancer serves from this one.
    other = _process(ha, "api-2")
    os.kill(other["pid"], signal.SIGKILL)
    time.sleep(3)  # HAProxy marks api-2 down after two failed one-second checks
    for _ in range(5):
        _answers_through_the_gateway(ha)
    rerun = ha.create_run("playbook/lab", playbook="ping", inventory=ha.inventory)
    ha.wait_state(rerun, "COMPLETED", timeout=240)
    ha.up()
    status = json.loads(ha.cli(str(BIN / "fleetflow"), "stack", "status", "--json").stdout)
    replicas = {p["name"]: p for p in status["processes"] if p["role"] == "api"}
    assert all(p["alive"] for p in replicas.values()) and len(replicas) == 2, replicas


def test_two_services_processes_fire_an_automation_once(ha: RunningStack) -> None:
    deployment = ha.api("GET", "/deployments/name/playbook/lab")
    tag = uuid.uuid4().hex[:8]
    automation = ha.api("POST", "/automations/", {
        "name": f"ha-once-{tag}",
        "trigger": {"type": "event", "posture": "Reactive", "expect": ["fleetflow.test.ha"],
                    "match": {"prefect.resource.id": f"ha.{tag}"}, "threshold": 1,
                    "within": 0},
        "actions": [{"type": "run-deployment", "source": "selected",
                     "deployment_id": deployment["id"],
                     "parameters": {"playbook": "ping", "inventory": ha.inventory}}],
    })  # fmt: skip
    time.sleep(3)  # both services processes load the new automation
    emitted = ha.cli(str(BIN / "prefect"), "event", "emit", "fleetflow.test.ha",
                     "--resource-id", f"ha.{tag}")  # fmt: skip
    assert emitted.returncode == 0, emitted.stdout + emitted.stderr
    created = "SELECT id::text FROM flow_run WHERE created_by->>'id' = %s"
    deadline = time.monotonic() + 120
    while not (runs := ha.query(created, automation["id"])):
        assert time.monotonic() < deadline, "the automation never fired"
        time.sleep(1)
    ha.wait_final(runs[0][0])
    time.sleep(10)  # a second firing (the other services process) would have come by now
    assert len(ha.query(created, automation["id"])) == 1


def test_two_services_processes_schedule_each_run_once(ha: RunningStack) -> None:
    deployment = ha.api("GET", "/deployments/name/run_script/disk-usage")
    runs = "SELECT expected_start_time FROM flow_run WHERE deployment_id::text = %s"
    deadline = time.monotonic() + 120
    while len(times := [r[0] for r in ha.query(runs, deployment["id"])]) < 3:
        assert time.monotonic() < deadline, f"only {len(times)} runs scheduled"
        time.sleep(2)
    time.sleep(10)  # both schedulers had more loops to add a twin
    times = [r[0] for r in ha.query(runs, deployment["id"])]
    assert len(times) == len(set(times)), sorted(times)


def test_the_stack_file_refuses_replicas_without_redis_or_services(
    ha: RunningStack, tmp_path: Any
) -> None:
    for bad in (
        "control_plane: {api_replicas: 2, services: 1}",
        "control_plane: {api_replicas: 2, redis_url: 'redis://127.0.0.1:6379/1'}",
        "control_plane: {api_replicas: 2, services: 1, redis_url: 'redis://x y'}",
    ):
        (tmp_path / "bad.yaml").write_text(bad)
        done = subprocess.run(
            [str(BIN / "fleetflow"), "stack", "up", "--config", str(tmp_path / "bad.yaml")],
            env={**ha.env, "FLEETFLOW_STACK_DIR": str(tmp_path / "state")},
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode != 0 and "control_plane" in done.stderr, done.stderr
        assert not (tmp_path / "state" / "stack.json").exists()
