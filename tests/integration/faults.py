"""Helpers of the failure-scenario tests (test_faults*.py): their stack, and reading what
runs left on the server and on the hosts."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleetflow.lab import Lab

from .stacks import BIN, RunningStack, running_stack

log = logging.getLogger(__name__)

CONFIG = """
work_pool: {name: fleetflow, queues: [{name: lab}]}
workers: [{name: worker-faults, queues: [lab]}]
worker_poll_seconds: 1
"""
# Test playbooks, by name in the stack's repository (tests/project.py).
HOLD, TICKS, BEATS = "hold", "ticks", "beats"
HOLD_LOG, TICKS_LOG = "/var/tmp/ff-hold.log", "/var/tmp/ff-ticks.log"
# One long remote command writing "line <tag> <n> <user>" a second (issue #26).
LONG, LONG_LOG = "long", "/var/tmp/ff-long.log"
CURRENT = "readlink /opt/payments-api/current"


def new_tag() -> str:
    return uuid.uuid4().hex[:8]


def host_lines(lab: Lab, host: str, path: str) -> list[str]:
    return lab.ssh(host, f"cat {path} 2>/dev/null || true").stdout.splitlines()


def wait_on_host(lab: Lab, host: str, path: str, needle: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(needle in line for line in host_lines(lab, host, path)):
        assert time.monotonic() < deadline, f"{needle!r} never reached {host}:{path}"
        time.sleep(0.3)


def long_lines(lab: Lab, host: str, tag: str) -> int:
    """Lines the `long` playbook of run `tag` wrote on the host so far."""
    out = lab.ssh(host, f"grep -c 'line {tag} ' {LONG_LOG} || true").stdout.strip()
    return int(out or 0)


def disk_lines(lab: Lab, host: str, tag: str) -> int:
    """long_lines read from the host's disk on this machine: works while it is cut off."""
    path = lab.settings.lab_dir / lab.name / "hosts" / host / "upper" / LONG_LOG.lstrip("/")
    try:
        return sum(f"line {tag} " in line for line in path.read_text().splitlines())
    except OSError:
        return 0


def quiet_after(
    lab: Lab, host: str, tag: str, since: float, settle: float = 3.0, on_disk: bool = False
) -> float:
    """Seconds from `since` (monotonic) to the last new line of run `tag` on the host,
    once none came for `settle` s; fails if lines still come a minute later."""
    read = disk_lines if on_disk else long_lines
    count, changed = read(lab, host, tag), time.monotonic()
    while time.monotonic() - changed < settle:
        time.sleep(0.5)
        now = read(lab, host, tag)
        if now != count:
            count, changed = now, time.monotonic()
        assert time.monotonic() - since < 60, f"the command of {tag} on {host} never stopped"
    return changed - since


def host_pids(lab: Lab, host: str, text: str) -> list[str]:
    """PIDs on the host whose command line contains `text` (not counting the search)."""
    pattern = f"[{text[0]}]{text[1:]}"
    found = lab.ssh(host, f"pgrep -f -- '{pattern}' || true").stdout.split()
    return [p for p in found if p.isdigit()]


def kill_on_host(lab: Lab, host: str, *texts: str) -> None:
    for text in texts:
        lab.ssh(host, f"pkill -f -- '[{text[0]}]{text[1:]}' || true")


def host_rows(stack: RunningStack, run_id: str) -> dict[str, dict[str, Any]]:
    """Per-host rows of the run's latest hosts table (the run_playbook artifact)."""
    rows = stack.query(
        "SELECT data FROM artifact WHERE flow_run_id::text = %s AND key LIKE 'hosts-%%' "
        "ORDER BY created DESC LIMIT 1",
        run_id,
    )
    assert rows, "the run published no hosts table"
    return {row["host"]: row for row in as_json(rows[0][0])}


def as_json(data: Any) -> Any:
    return json.loads(data) if isinstance(data, str) else data


def wait_state(stack: RunningStack, run_id: str, expected: str, timeout: float = 240) -> float:
    """Wait for the run's end; assert its state type; return when it ended (epoch s)."""
    state, _, end, _ = stack.wait_final(run_id, timeout=timeout)[run_id]
    assert state == expected, (stack.state(run_id), stack.logs(run_id)[-15:])
    return float(end.timestamp())


def run_name(stack: RunningStack, run_id: str) -> str:
    return str(stack.query("SELECT name FROM flow_run WHERE id::text = %s", run_id)[0][0])


def report(scenario: str, **seconds: float) -> None:
    log.warning("%s: %s", scenario, ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))


def all_host_rows(stack: RunningStack, run_id: str) -> list[dict[str, Any]]:
    """Every host row of every hosts table the flow run published."""
    rows = stack.query(
        "SELECT data FROM artifact WHERE flow_run_id::text = %s AND key LIKE 'hosts-%%'", run_id
    )
    return [row for (data,) in rows for row in as_json(data)]


@contextmanager
def faults_stack(lab: Lab, directory: Path, alert_env: dict[str, str]) -> Iterator[RunningStack]:
    """A stack on PostgreSQL with fleetflow's automations applied, alerting to `alert_env`."""
    with running_stack(directory, str(lab.inventory_dir), CONFIG) as running:
        running.env.update(alert_env)
        done = running.cli(str(BIN / "fleetflow"), "automations", "apply")
        assert done.returncode == 0, done.stdout + done.stderr
        yield running


def beats_logged(stack: RunningStack, run_id: str, expected: int) -> int:
    """Host lines "| ok | Beat N" stored; the last ones may land just after the run ends."""
    deadline = time.monotonic() + 20
    while True:
        # A log record may hold several lines (the run log batches them).
        count = sum(record.count("| ok | Beat ") for record in stack.logs(run_id))
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.5)
