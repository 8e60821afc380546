"""What remote guarding (issue #26) adds to a run: the fence task, guards and beacons.

The same playbook (bench/playbooks/three_tasks.yml) on the same lab hosts, guarding off
and on: through run_playbook in a flow (FLEETFLOW_REMOTE_GUARD; a flow run's wall time
comes in whole seconds here), and through the engine's runner alone (one ansible-playbook
invocation, to the millisecond). Interleaved pairs after a warm-up pair; medians, and
the median of the pair ratios.

Run: fleetflow bench guard [--hosts 5,20] [--runs 5] [--no-write]   (root)
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from _common import (
    PLAYBOOKS,
    REPO,
    Paired,
    environment,
    fleetflow_seconds,
    lab,
    prefect_server,
    round_robin,
    write_section,
)

from fleetflow.engine._guard import GuardConfig
from fleetflow.engine._runner import run_ansible
from fleetflow.engine.request import RunRequest

PLAYBOOK = PLAYBOOKS / "three_tasks.yml"


def engine_seconds(inventory: Path, hosts: int, guard: bool) -> float:
    """One ansible-playbook invocation through the engine's runner (no Prefect)."""
    config = GuardConfig(enabled=guard, run_id="bench")
    request = RunRequest(PLAYBOOK, inventory, REPO, forks=hosts, guard=config)
    started = time.monotonic()
    outcome = run_ansible(request, lambda _event: None, threading.Event())
    if outcome.status != "successful":
        raise SystemExit(f"ansible-playbook ended {outcome.status}:\n{outcome.output_tail}")
    return time.monotonic() - started


def measure(hosts: int, runs: int) -> tuple[Paired, Paired]:
    with lab(f"bench-guard{hosts}", hosts) as fleet:
        inventory = fleet.inventory_dir

        def flow_side(guard: str) -> float:
            with environment(FLEETFLOW_REMOTE_GUARD=guard):
                return fleetflow_seconds(PLAYBOOK, inventory)

        flow_side("false")  # warm-up: first SSH connections, page cache
        flow_side("true")
        times = round_robin(runs, {
            "flow off": lambda: flow_side("false"), "flow on": lambda: flow_side("true"),
            "engine off": lambda: engine_seconds(inventory, hosts, guard=False),
            "engine on": lambda: engine_seconds(inventory, hosts, guard=True),
        })  # fmt: skip
        return (
            Paired(times["flow off"], times["flow on"]),
            Paired(times["engine off"], times["engine on"]),
        )


def report(results: dict[int, tuple[Paired, Paired]], runs: int) -> str:
    lines = [
        "## Remote guarding: what marking, guarding and fencing add to a run (issue #26)",
        "",
        "`fleetflow bench guard`: bench/playbooks/three_tasks.yml (3 tasks, no facts) through "
        "run_playbook in a flow (FLEETFLOW_REMOTE_GUARD; its wall time comes in whole seconds "
        "here) and through the engine's runner alone, guarding off and on: on adds one fence task "
        "per play and host, a guard and a beacon per host and a heartbeat a second. "
        f"{runs} interleaved pairs after a warm-up pair; medians.",
        "",
        "| hosts | through | guard off | guard on | added | ratio (median of pairs) |",
        "|---|---|---|---|---|---|",
    ]
    for hosts, pairs in sorted(results.items()):
        for through, result in zip(("run_playbook in a flow", "engine runner"), pairs, strict=True):
            off, on = result.medians()
            lines.append(
                f"| {hosts} | {through} | {off:.2f} s | {on:.2f} s | {on - off:+.2f} s "
                f"| {result.ratio:.3f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", default="5,20", help="comma-separated host counts")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    args = parser.parse_args()
    results = {}
    with prefect_server():
        for hosts in (int(h) for h in args.hosts.split(",")):
            print(f"{hosts} hosts:", flush=True)
            results[hosts] = measure(hosts, args.runs)
    text = report(results, args.runs)
    print(text)
    if not args.no_write:
        write_section("guard", text)


if __name__ == "__main__":
    main()
