"""Benchmark 5: scale. One run over 200 lab hosts; then 20 concurrent flow runs.

1. bench/playbooks/three_tasks.yml on 200 hosts through run_playbook in a flow: wall
   time, the controller's peak memory (PSS of this process and everything it starts: the flow
   run, ansible-playbook and its forks, SSH; not the Prefect server or the lab hosts),
   and lost events: every host x task must reach the server as a log line and every
   host's recap must show its 3 tasks.
2. 20 flow runs at once, each on its own 10 of those hosts: all must complete; their
   wall time, each run's time and the throughput.
Targets: peak memory <= 1 GiB; no lost events; none stuck.

Run: fleetflow bench scale [--hosts 200] [--concurrent 20] [--no-write]   (root; starts a
server on the local PostgreSQL, or uses the one PREFECT_API_URL names)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _common import (
    PLAYBOOKS,
    PeakMemory,
    count_logs,
    lab,
    postgres_server,
    through_fleetflow,
    write_section,
)

from fleetflow import PlaybookResult
from fleetflow.lab import Lab

PLAYBOOK = PLAYBOOKS / "three_tasks.yml"
TASKS = 3


def _host_line(line: str) -> bool:
    return re.match(r"^\S+ \| (ok|changed) \| ", line) is not None


def one_big_run(fleet: Lab) -> dict[str, Any]:
    with PeakMemory() as memory:
        started = time.monotonic()
        state = through_fleetflow(str(PLAYBOOK), str(fleet.inventory_dir), return_state=True)
        wall = time.monotonic() - started
    result: PlaybookResult = state.result()
    hosts = [h.name for h in fleet.hosts()]
    short = [h for h in hosts if result.hosts[h].ok != TASKS]
    host_lines = count_logs(state.state_details.flow_run_id, _host_line)
    return {"wall": wall, "memory": memory.peak, "hosts": len(hosts), "short": short,
            "lines": host_lines, "expected": len(hosts) * TASKS}  # fmt: skip


def concurrent_runs(fleet: Lab, runs: int) -> dict[str, Any]:
    names = [h.name for h in fleet.hosts()]
    size = len(names) // runs
    limits = [",".join(names[i * size : (i + 1) * size]) for i in range(runs)]

    def one(limit: str) -> tuple[float, str]:
        started = time.monotonic()
        state = through_fleetflow(str(PLAYBOOK), str(fleet.inventory_dir), limit, return_state=True)
        return time.monotonic() - started, state.type.value

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=runs) as pool:
        outcomes = list(pool.map(one, limits, timeout=1800))
    wall = time.monotonic() - started
    return {"wall": wall, "each": [t for t, _ in outcomes], "states": [s for _, s in outcomes],
            "hosts": size * runs, "size": size}  # fmt: skip


def report(big: dict[str, Any], many: dict[str, Any], runs: int) -> str:
    completed = many["states"].count("COMPLETED")
    host_tasks = many["hosts"] * TASKS
    return "\n".join([
        "## Scale (issue #9, benchmark 5)",
        "",
        "`fleetflow bench scale`: bench/playbooks/three_tasks.yml through run_playbook in a "
        "flow, Prefect server on PostgreSQL (SQLite answered 503 to 20 concurrent runs), "
        "fleetflow's defaults (forks = hosts, max 50).",
        "",
        "| what | result | target |",
        "|---|---|---|",
        f"| one run over {big['hosts']} hosts: wall | {big['wall']:.1f} s "
        f"({big['hosts'] * TASKS / big['wall']:.1f} host-tasks/s) | reported |",
        f"| controller peak memory, PSS (flow run + ansible-playbook + its forks + ssh) "
        f"| **{big['memory'] / 2**20:.0f} MiB** | <= 1 GiB |",
        f"| lost events: host x task lines stored by the server | {big['lines']} of "
        f"{big['expected']}; hosts whose recap lacks a task: {len(big['short'])} | none lost |",
        f"| {runs} concurrent flow runs, {many['size']} hosts each (disjoint) "
        f"| {completed} of {runs} Completed, wall {many['wall']:.1f} s; per run median "
        f"{statistics.median(many['each']):.1f} s, max {max(many['each']):.1f} s | all "
        "complete, none stuck |",
        f"| throughput of the concurrent runs | {host_tasks / many['wall']:.1f} host-tasks/s, "
        f"{runs / many['wall'] * 60:.1f} runs/min | reported |",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if "PREFECT_API_URL" not in os.environ:  # run again as a client of a PostgreSQL server
        with postgres_server("scale") as env:
            rerun = subprocess.run([sys.executable, __file__, *sys.argv[1:]], env=env, check=False)
        raise SystemExit(rerun.returncode)
    with lab("bench-scale", args.hosts) as fleet:
        big = one_big_run(fleet)
        print(f"one run: {big}", flush=True)
        many = concurrent_runs(fleet, args.concurrent)
        print(f"concurrent: {many}", flush=True)
    text = report(big, many, args.concurrent)
    print(text)
    if not args.no_write:
        write_section("scale", text)
    if big["short"] or big["lines"] != big["expected"] or set(many["states"]) != {"COMPLETED"}:
        raise SystemExit("scale benchmark failed its checks (see above)")


if __name__ == "__main__":
    main()
