"""Sensors against the lab and a real Prefect server: a file appearing on a lab host, a
web server starting on one, an event emitted by another process with the prefect CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL

from fleetflow import SensorTimeout
from fleetflow.flowkit.sensors import wait_for_event, wait_for_file, wait_for_http, wait_for_port
from fleetflow.lab import Lab

from .stacks import BIN, free_port

pytestmark = [pytest.mark.integration]

SENSORS: dict[str, Any] = {
    "file": wait_for_file, "port": wait_for_port, "http": wait_for_http, "event": wait_for_event
}  # fmt: skip


@flow(name="sense")
def sense(sensor: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """One sensor as a task of a flow run, as flows call them."""
    return SENSORS[sensor](*args, **kwargs)


@contextmanager
def later(seconds: float, action: Callable[[], object]) -> Iterator[dict[str, float]]:
    """Run `action` after `seconds` on a thread; yields {"at": when it ran (epoch s)}."""
    done: dict[str, float] = {}

    def run() -> None:
        time.sleep(seconds)
        action()
        done["at"] = time.time()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield done
    finally:
        thread.join()


def _python_running(lab: Lab, host: str) -> bool:
    """Is a Python process (Ansible's module: wait_for) running on the host? procps is not
    in the image, so read /proc."""
    listing = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done 2>/dev/null"
    return "python3" in lab.ssh(host, listing).stdout


def test_file_sensor_waits_for_the_file_to_appear_on_a_host(lab: Lab, prefect_server: None) -> None:
    path = f"/var/tmp/ff-sensor-{uuid.uuid4().hex[:8]}"
    hosts = [h.name for h in lab.hosts()]
    late = hosts[1]
    for host in hosts:
        if host != late:
            assert lab.ssh(host, f"touch {path}").returncode == 0

    def touch_once_waiting() -> None:
        deadline = time.monotonic() + 120
        while not _python_running(lab, late) and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(2)  # the host has checked, and will check again
        lab.ssh(late, f"touch {path}")

    try:
        with later(0, touch_once_waiting) as touched:
            seen = sense(
                "file", [path],
                {"inventory": str(lab.inventory_dir), "timeout": 120, "poll_interval": 1},
            )  # fmt: skip
            returned = time.time()
        assert seen.hosts == dict.fromkeys(hosts, True) and seen.present
        assert touched["at"] <= returned
        assert seen.waited_seconds >= 2
    finally:
        for host in hosts:
            lab.ssh(host, f"rm -f {path}")


def test_file_sensor_times_out_naming_the_host_without_the_file(
    lab: Lab, prefect_server: None
) -> None:
    path = f"/var/tmp/ff-sensor-{uuid.uuid4().hex[:8]}"
    hosts = [h.name for h in lab.hosts()]
    missing = hosts[2]
    try:
        for host in hosts[:2]:
            assert lab.ssh(host, f"touch {path}").returncode == 0
        with pytest.raises(SensorTimeout) as caught:
            sense("file", [path], {"inventory": str(lab.inventory_dir), "timeout": 4,
                                   "poll_interval": 1})  # fmt: skip
    finally:
        for host in hosts:
            lab.ssh(host, f"rm -f {path}")
    message = str(caught.value)
    assert message.startswith(f"file {path} present on {missing}: not seen within 4 s"), message
    assert f"{missing}: {path} not present after 4 s" in message
    assert not any(h in message for h in hosts[:2])


def test_port_then_http_sensors_see_a_web_server_start_on_a_lab_host(
    lab: Lab, prefect_server: None
) -> None:
    host = lab.hosts()[0]
    port = free_port()
    url = f"http://{host.address}:{port}/"
    pidfile = f"/var/tmp/ff-http-{port}.pid"
    start = (
        f"nohup sh -c 'echo $$ > {pidfile}; sleep 4; exec python3 -m http.server {port} "
        f"--bind {host.address}' >/dev/null 2>&1 &"
    )
    assert lab.ssh(host.name, start).returncode == 0
    try:
        port_seen = sense("port", [host.address, port], {"timeout": 60, "poll_interval": 0.5})
        http_seen = sense("http", [url], {"timeout": 60, "poll_interval": 0.5})
    finally:
        lab.ssh(host.name, f"kill $(cat {pidfile}); rm -f {pidfile}")
    assert (port_seen.host, port_seen.port) == (host.address, port)
    assert port_seen.waited_seconds >= 1  # started before the server listened
    assert (http_seen.url, http_seen.status) == (url, 200)
    with pytest.raises(SensorTimeout, match=rf"TCP port {host.address}:{port}: .*refused"):
        sense("port", [host.address, port], {"timeout": 2, "poll_interval": 0.5})


def _emit(event: str, resource_id: str, payload: dict[str, Any]) -> str:
    """`prefect events emit` from another process; the event's id."""
    done = subprocess.run(
        [str(BIN / "prefect"), "events", "emit", event, "--resource-id", resource_id,
         "--payload", json.dumps(payload)],
        env={**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"with ID\s+([0-9a-f-]{36})", done.stdout)  # rich may wrap it
    assert match, done.stdout
    return match[1]


def test_event_sensor_returns_the_event_another_process_emits(prefect_server: None) -> None:
    tag = uuid.uuid4().hex[:8]
    payload = {"release": tag, "app": "payments-api", "build": 7}
    emitted: list[str] = []

    def emit() -> None:
        emitted.append(_emit("fleetflow.test.ready", f"release.{tag}.x", payload))

    with later(2, emit):
        seen = sense("event", ["fleetflow.test.ready"], {
            "resource_id": f"release.{tag}.*", "payload": {"release": tag},
            "timeout": 90, "poll_interval": 1,
        })  # fmt: skip
    assert str(seen.id) == emitted[0]
    assert seen.event == "fleetflow.test.ready"
    assert seen.payload == payload
    assert seen.resource["prefect.resource.id"] == f"release.{tag}.x"
    assert seen.waited_seconds >= 1


def test_event_sensor_ignores_events_with_another_payload(prefect_server: None) -> None:
    tag = uuid.uuid4().hex[:8]
    since = datetime.now(UTC)
    other = _emit("fleetflow.test.ready", f"release.{tag}", {"release": "other"})
    with pytest.raises(SensorTimeout) as caught:
        sense("event", ["fleetflow.test.ready"], {
            "payload": {"release": tag}, "since": since, "timeout": 15, "poll_interval": 1,
        })  # fmt: skip
    assert str(caught.value) == (
        "event fleetflow.test.ready: not seen within 15 s "
        f"(last seen: event {other} with another release)"
    )
