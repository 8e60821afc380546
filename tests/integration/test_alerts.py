"""Alerts end to end: automations from the repository on a real stack, messages received
by a real HTTP server and a real SMTP server on loopback."""

from __future__ import annotations

import contextlib
import email
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from fleetflow.lab import Lab
from fleetflow.stack._procs import processes_marked

from .stacks import BIN, FIXTURES, RunningStack, free_port, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
log = logging.getLogger(__name__)

CONFIG = """
work_pool: {name: fleetflow, queues: [{name: lab}]}
workers: [{name: worker-alerts, queues: [lab]}]
"""


@dataclass
class Inbox:
    """Everything the receivers got: (channel, received at, text)."""

    messages: list[tuple[str, float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, channel: str, text: str) -> None:
        with self.lock:
            self.messages.append((channel, time.time(), text))

    def about(self, needle: str) -> list[tuple[str, float, str]]:
        with self.lock:
            return [m for m in self.messages if needle in m[2]]

    def wait_for(self, needle: str, channels: set[str], timeout: float) -> dict[str, float]:
        """When each channel first received a message containing `needle`."""
        deadline = time.monotonic() + timeout
        while True:
            got = {c: t for c, t, _ in reversed(self.about(needle))}
            if channels <= set(got):
                return got
            assert time.monotonic() < deadline, f"only {sorted(got)} got {needle!r}"
            time.sleep(0.2)


class _SMTPHandler:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message: Message = email.message_from_bytes(envelope.content)
        parts = [message] if not message.is_multipart() else list(message.walk())
        text = "".join(
            p.get_payload(decode=True).decode()
            for p in parts
            if p.get_content_type() == "text/plain"
        )
        self.inbox.add("email", f"To: {','.join(envelope.rcpt_tos)}\n{message['Subject']}\n{text}")
        return "250 OK"


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, dict[str, str]]]:
    box = Inbox()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            box.add(self.path.strip("/"), json.dumps(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    http = HTTPServer(("127.0.0.1", free_port()), Hook)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    smtp = Controller(_SMTPHandler(box), hostname="127.0.0.1", port=free_port())
    smtp.start()
    base = f"http://127.0.0.1:{http.server_port}"
    env = {
        "FLEETFLOW_ALERT_WEBHOOK_URL": f"{base}/webhook",
        "FLEETFLOW_ALERT_SLACK_URL": f"{base}/slack",
        "FLEETFLOW_ALERT_SMTP_HOST": "127.0.0.1",
        "FLEETFLOW_ALERT_SMTP_PORT": str(smtp.port),
        "FLEETFLOW_ALERT_SMTP_SECURITY": "none",
        "FLEETFLOW_ALERT_EMAIL_TO": "ops@example.org",
    }
    try:
        yield box, env
    finally:
        smtp.stop()
        http.shutdown()
        http.server_close()


@pytest.fixture(scope="module")
def stack(
    lab: Lab, inbox: tuple[Inbox, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    directory = tmp_path_factory.mktemp("alerts")
    with running_stack(directory, str(lab.inventory_dir), CONFIG) as running:
        running.env.update(inbox[1])
        done = running.cli(str(BIN / "fleetflow"), "automations", "apply")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "+ create fleetflow/flow-run-failed" in done.stdout
        yield running


ALL = {"webhook", "slack", "email"}


def test_reapplying_the_automations_changes_nothing(stack: RunningStack) -> None:
    done = stack.cli(str(BIN / "fleetflow"), "automations", "apply", "--dry-run")
    assert done.returncode == 0 and "dry run: 0 changes" in done.stdout, done.stdout
    assert "= unchanged fleetflow/zombie-runs" in done.stdout
    assert "= unchanged fleetflow/stuck/site/lab" in done.stdout
    again = stack.cli(str(BIN / "fleetflow"), "automations", "apply")
    assert again.returncode == 0 and "0 changes applied" in again.stdout, again.stdout


def _run_name(stack: RunningStack, run_id: str) -> str:
    return str(stack.query("SELECT name FROM flow_run WHERE id::text = %s", run_id)[0][0])


def test_failed_run_alerts_every_channel_once_with_the_failed_host(
    stack: RunningStack, lab: Lab, inbox: tuple[Inbox, dict[str, str]]
) -> None:
    box = inbox[0]
    inventory = stack.inventory
    ok_code, ok_run, _ = stack.trigger("playbook/lab", True, playbook="ping", inventory=inventory)
    assert ok_code == 0
    mixed = str(FIXTURES / "mixed.yml")
    code, run_id, _ = stack.trigger("playbook/lab", True, playbook=mixed, inventory=inventory)
    assert code != 0
    name = _run_name(stack, run_id)
    failed_at = stack.wait_final(run_id)[run_id][2].timestamp()
    received = box.wait_for(name, ALL, timeout=60)
    latency = max(received.values()) - failed_at
    log.warning("alert latency: %.1f s after the run failed", latency)
    assert latency < 60
    db_host = lab.hosts()[1].name  # the group `db`, where mixed.yml fails
    for channel, _, text in box.about(name):
        assert f"{db_host} failed at" in text, (channel, text)
        assert lab.hosts()[0].name not in text
    time.sleep(5)  # one incident, one message per channel: nothing more arrives
    assert sorted(c for c, _, _ in box.about(name)) == sorted(ALL)
    assert box.about(_run_name(stack, ok_run)) == [], "a successful run sent a message"
    assert "To: ops@example.org" in next(t for c, _, t in box.about(name) if c == "email")


def test_engine_emits_an_event_per_failed_host(stack: RunningStack, lab: Lab) -> None:
    response = httpx.post(
        stack.env["PREFECT_API_URL"] + "/events/filter",
        json={"filter": {"event": {"prefix": ["fleetflow.host."]}}, "limit": 50},
        auth=tuple(stack.env["FLEETFLOW_API_AUTH"].split(":", 1)),  # type: ignore[arg-type]
        timeout=10,
    )
    events = response.json()["events"]
    failed = [e for e in events if e["event"] == "fleetflow.host.failed"]
    assert {e["resource"]["prefect.resource.name"] for e in failed} == {lab.hosts()[1].name}
    related = {r["prefect.resource.role"] for r in failed[0]["related"]}
    assert {"flow-run", "task-run"} <= related
    assert failed[0]["payload"]["task"] == "Fail on database hosts"


def test_run_no_worker_picks_up_is_late_and_alerted(
    stack: RunningStack, inbox: tuple[Inbox, dict[str, str]]
) -> None:
    stack.deploy_playbook_flow("nobody", queue="unserved")
    run_id = stack.trigger("playbook/nobody", playbook="ping", inventory=stack.inventory)[1]
    name = _run_name(stack, run_id)
    # The server marks a run Late 15 s after its scheduled time; the alert follows.
    inbox[0].wait_for(name, ALL, timeout=90)
    assert all(t.count("LATE") >= 1 and "unserved" in t for _, _, t in inbox[0].about(name))
    stack.cli(str(BIN / "prefect"), "flow-run", "cancel", run_id)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_run_whose_worker_machine_dies_is_marked_crashed_and_alerted(
    stack: RunningStack, lab: Lab, inbox: tuple[Inbox, dict[str, str]]
) -> None:
    host = lab.hosts()[2].name
    lab.ssh(host, "rm -f /var/tmp/ff-hold.log")
    run_id = stack.trigger(
        "playbook/lab", playbook=str(FIXTURES / "hold.yml"), inventory=stack.inventory,
        limit=host, extra_vars={"tag": "Z", "seconds": 600},
    )[1]  # fmt: skip
    deadline = time.monotonic() + 120
    while "start Z" not in lab.ssh(host, "cat /var/tmp/ff-hold.log").stdout:
        assert time.monotonic() < deadline, "the run never reached the host"
        time.sleep(0.5)
    # Worker, launcher, the run and its ansible die at once, as when their machine loses
    # power: nothing is left to report, only the missing heartbeats tell.
    state = json.loads((stack.directory / "stack.json").read_text())
    server = next(p["pid"] for p in state["processes"] if p["role"] == "server")
    server_side = {server, *_descendants(server)}
    for pid in processes_marked(str(stack.directory)):
        if pid not in server_side:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    runs = stack.wait_final(run_id, timeout=300)
    assert runs[run_id][0] == "CRASHED"
    message = stack.query(
        "SELECT s.message FROM flow_run f JOIN flow_run_state s ON s.id = f.state_id "
        "WHERE f.id::text = %s",
        run_id,
    )
    assert "fleetflow/zombie-runs" in message[0][0]
    name = _run_name(stack, run_id)
    received = inbox[0].wait_for(name, ALL, timeout=60)
    log.warning("crash alert %.0f s after the kill", max(received.values()) - killed_at)
    assert all("CRASHED" in t for _, _, t in inbox[0].about(name))
