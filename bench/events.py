"""Benchmark 4: the event pipeline, runner -> fleetflow -> Prefect logs, and ansible's pace.

Ansible itself emits only ~100 events/s on this machine, so the pipeline's capacity is
measured by replay: the events of a real event-heavy run (5 hosts, connection local,
many debug tasks) are recorded once, then fed through the same EventCollector and
masking logger run_playbook uses, inside a flow, and timed until the Prefect server has
stored every log line they produce (none lost). Target: >= 2,000 events/s on 2 cores.

Then, back-pressure: the same playbook by plain ansible-playbook vs run_playbook in a
flow (interleaved pairs) shows whether the pipeline slows Ansible down.

Run: fleetflow bench events [--tasks 300] [--runs 3] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    ansible_env,
    count_logs,
    fleetflow_seconds,
    paired,
    plain_playbook,
    prefect_server,
    timed,
    write_section,
)
from prefect import flow, get_run_logger
from prefect.context import get_run_context

from fleetflow.engine._collector import EventCollector
from fleetflow.engine._runlog import RunLog
from fleetflow.engine._runner import run_ansible
from fleetflow.engine.request import RunRequest

HOSTS = tuple(f"bench-local-{i}" for i in range(1, 6))


def write_workload(directory: Path, tasks: int) -> tuple[Path, Path]:
    inventory = directory / "hosts.ini"
    inventory.write_text(
        "[local]\n" + "".join(f"{h}\n" for h in HOSTS) + "\n[local:vars]\n"
        f"ansible_connection=local\nansible_python_interpreter={sys.executable}\n"
    )
    playbook = directory / "many_tasks.yml"
    body = "".join(
        f"    - name: Say {n}\n      ansible.builtin.debug:\n        msg: event {n}\n"
        for n in range(tasks)
    )
    playbook.write_text(
        f"- name: Many small tasks\n  hosts: all\n  gather_facts: false\n  tasks:\n{body}"
    )
    return playbook, inventory


def record(playbook: Path, inventory: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    request = RunRequest(playbook, inventory, REPO, forks=len(HOSTS))
    outcome = run_ansible(request, events.append, threading.Event())
    if outcome.rc != 0:
        raise SystemExit(f"recording run failed: {outcome.output_tail}")
    return events


_RECORDED: list[dict[str, Any]] = []  # not a flow parameter: parameters are capped at 512 kB


@flow(name="bench-event-pipeline")
def replay(task_count: int) -> dict[str, float]:
    """Feed the recorded events as the runner thread would; wait until the server has
    every line they make."""
    events = _RECORDED
    run_id = get_run_context().flow_run.id  # type: ignore[union-attr]
    with RunLog(get_run_logger(), ["not-a-secret-but-masked"]) as logger:
        collector = EventCollector(HOSTS, task_count, logger)
        started = time.monotonic()
        for event in events:
            collector(event)
        fed = time.monotonic() - started
    stored = _wait_for_logs(run_id, logger.lines)
    return {"fed": fed, "stored": stored - started, "lines": logger.lines}


def _wait_for_logs(run_id: Any, expected: int, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = count_logs(run_id, _ours)
        if count >= expected:
            return time.monotonic()
        time.sleep(0.05)
    raise SystemExit(f"only {count_logs(run_id, _ours)} of {expected} log lines reached the server")


def _ours(line: str) -> bool:
    """The collector's lines, not Prefect's own about the flow run."""
    return line == "ansible-playbook started" or line.startswith("TASK [") or " | " in line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--repeat", type=int, default=10,
        help="replay the recorded events this many times, so the server's 2 s log flush "
        "interval does not dominate",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ff-bench-events-") as scratch, prefect_server():
        playbook, inventory = write_workload(Path(scratch), args.tasks)
        recorded, events = timed(lambda: record(playbook, inventory))
        print(f"recorded {len(events)} events in {recorded:.1f} s", flush=True)
        _RECORDED[:] = events * args.repeat
        replays = [replay(args.tasks) for _ in range(args.runs)]
        env = ansible_env()

        pace = paired(
            args.runs,
            lambda: plain_playbook(playbook, inventory, env),
            lambda: fleetflow_seconds(playbook, inventory),
        )
    text = report(len(events), recorded, replays, pace, args)
    print(text)
    if not args.no_write:
        write_section("events", text)


def report(count: int, recorded: float, replays: list[dict[str, float]], pace: Any,
           args: argparse.Namespace) -> str:  # fmt: skip
    replayed = count * args.repeat
    fed = sorted(replayed / r["fed"] for r in replays)[len(replays) // 2]
    stored = sorted(replayed / r["stored"] for r in replays)[len(replays) // 2]
    plain, ours = pace.medians()
    return "\n".join([
        "## Event pipeline (issue #9, benchmark 4)",
        "",
        f"`fleetflow bench events`: a playbook of {args.tasks} debug tasks on 5 hosts "
        f"(connection local) gives {count} runner events; Ansible produced them in "
        f"{recorded:.1f} s ({count / recorded:.0f} events/s), so the pipeline is measured by "
        f"replaying them {args.repeat} times ({replayed:,} events) through run_playbook's "
        f"EventCollector and run log inside a flow, until the Prefect server has stored all "
        f"{int(replays[0]['lines']):,} log lines they make. Median of {args.runs}.",
        "",
        "| what | result | target |",
        "|---|---|---|",
        f"| events handled by the collector (runner thread) | **{fed:,.0f} events/s** | |",
        f"| events -> log lines stored by the Prefect server (SQLite), end to end "
        f"| **{stored:,.0f} events/s** | >= 2,000/s |",
        f"| log lines lost | 0 of {int(replays[0]['lines']):,} (waited for every one) | 0 |",
        f"| same playbook: plain ansible-playbook vs run_playbook in a flow | {plain:.1f} s vs "
        f"{ours:.1f} s, **{pace.ratio:.3f}x** (median of {args.runs} pairs) | no stall |",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
