"""The event-triggered deployment on the real stack: another system emits
fleetflow.release.ready with `prefect events emit`; the server's triggers service starts
wait_then_run/on-release-ready with parameters from the event's payload; the worker runs it
on the lab. An event with another name starts nothing."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fleetflow.lab import Lab

from .faults import as_json, host_rows, wait_state
from .stacks import BIN, RunningStack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = """
work_pool: {name: fleetflow, queues: [{name: lab}]}
workers: [{name: worker-triggers, queues: [lab]}]
worker_poll_seconds: 1
"""
DEPLOYMENT = "on-release-ready"


@pytest.fixture(scope="module")
def stack(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with running_stack(tmp_path_factory.mktemp("triggers"), str(lab.inventory_dir), CONFIG) as s:
        yield s


def _emit(stack: RunningStack, event: str, resource_id: str, payload: dict[str, Any]) -> None:
    done = stack.cli(
        str(BIN / "prefect"), "events", "emit", event,
        "--resource-id", resource_id, "--payload", json.dumps(payload),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _runs(stack: RunningStack, tag: str) -> list[tuple[str, dict[str, Any]]]:
    """Flow runs of the triggered deployment whose parameters carry `tag`."""
    rows = stack.query(
        "SELECT f.id::text, f.parameters FROM flow_run f JOIN deployment d "
        "ON d.id = f.deployment_id WHERE d.name = %s",
        DEPLOYMENT,
    )
    runs = [(run_id, as_json(params)) for run_id, params in rows]
    return [(r, p) for r, p in runs if tag in json.dumps(p)]


def _wait_run(stack: RunningStack, tag: str, timeout: float = 90) -> tuple[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while not (runs := _runs(stack, tag)):
        assert time.monotonic() < deadline, f"no {DEPLOYMENT} run in {timeout} s"
        time.sleep(1)
    assert len(runs) == 1, runs
    return runs[0]


def test_release_event_starts_the_deployment_with_its_payload_on_the_lab(
    stack: RunningStack, lab: Lab
) -> None:
    tag, host = uuid.uuid4().hex[:8], lab.hosts()[1].name
    path = f"/var/tmp/ff-release-{tag}"
    payload = {
        "playbook": "write_file",
        "inventory": stack.inventory,
        "limit": host,
        "extra_vars": {"path": path, "content": f"release {tag}"},
        "conditions": [{"kind": "file", "path": "/etc/hostname", "timeout": 60}],
    }
    emitted = time.monotonic()
    _emit(stack, "fleetflow.release.ready", f"release.payments-api.{tag}", payload)
    run_id, params = _wait_run(stack, tag)
    created = time.monotonic() - emitted
    assert params["playbook"] == payload["playbook"] and params["limit"] == host
    assert params["extra_vars"] == payload["extra_vars"]  # a mapping, not its text
    assert params["inventory"] == stack.inventory
    assert params["conditions"] == payload["conditions"]
    wait_state(stack, run_id, "COMPLETED")
    assert {h: r["status"] for h, r in host_rows(stack, run_id).items()} == {host: "changed"}
    assert lab.ssh(host, f"cat {path}").stdout == f"release {tag}\n"
    for other in (h.name for h in lab.hosts() if h.name != host):
        assert lab.ssh(other, f"test -e {path}").returncode == 1, other
    assert any("file condition met" in line for line in stack.logs(run_id))
    lab.ssh(host, f"rm -f {path}")
    print(f"run created {created:.1f} s after the event")  # noqa: T201 - test report


def test_other_events_start_nothing(stack: RunningStack, lab: Lab) -> None:
    tag, seen = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    host = lab.hosts()[0].name
    # Parameters the deployment accepts (write_file declares path and content): a run not
    # started is not a run the server refused.
    path = "/var/tmp/ff-release-marker"
    payload = {"playbook": "write_file", "inventory": stack.inventory, "limit": host}
    _emit(stack, "fleetflow.release.built", f"release.payments-api.{tag}",
          {**payload, "extra_vars": {"path": path, "content": tag}})  # fmt: skip
    _emit(stack, "fleetflow.release.ready", f"build.payments-api.{tag}",  # not release.*
          {**payload, "extra_vars": {"path": path, "content": tag}})  # fmt: skip
    # A matching event after them: once its run exists, the others were looked at too.
    _emit(stack, "fleetflow.release.ready", f"release.payments-api.{seen}",
          {**payload, "extra_vars": {"path": path, "content": seen}})  # fmt: skip
    run_id, _ = _wait_run(stack, seen)
    wait_state(stack, run_id, "COMPLETED")
    assert _runs(stack, tag) == []
    assert lab.ssh(host, f"cat {path}; rm -f {path}").stdout == f"{seen}\n"
