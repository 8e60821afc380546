"""Benchmark 1: fleetflow's overhead over plain ansible-playbook with the same settings.

The same playbook (bench/playbooks/three_tasks.yml) on the same lab hosts, run by
`run_playbook` inside a flow (flow and task runs on a Prefect server, preflight, host
locks, events, per-host logs, artifacts) and by plain ansible-playbook with the same
ansible.cfg, forks and environment. Interleaved pairs; the median of the pair ratios.
Target: <= 1.05x.

Run: fleetflow bench overhead [--hosts 20,50] [--runs 5] [--no-write]   (root)
"""

from __future__ import annotations

import argparse
import statistics

from _common import (
    PLAYBOOKS,
    Paired,
    ansible_env,
    fleetflow_seconds,
    lab,
    plain_playbook,
    prefect_server,
    round_robin,
    timed,
    write_section,
)
from prefect import flow

PLAYBOOK = PLAYBOOKS / "three_tasks.yml"


@flow(name="bench-empty")
def empty_flow() -> None:
    """Prefect's own cost of a flow run (create, run, finish), to attribute the overhead."""


def measure(hosts: int, runs: int) -> tuple[Paired, float]:
    with lab(f"bench-ovh{hosts}", hosts) as fleet:
        inventory = fleet.inventory_dir
        env = ansible_env()

        def plain() -> float:
            # fleetflow sizes forks to the targeted hosts (up to 50): the same here.
            return plain_playbook(PLAYBOOK, inventory, env, "--forks", str(min(hosts, 50)))

        def ours() -> float:
            return fleetflow_seconds(PLAYBOOK, inventory)

        def empty() -> float:
            return timed(empty_flow)[0]

        plain()  # warm-up: first SSH connections, page cache
        ours()
        times = round_robin(runs, {"plain": plain, "fleetflow": ours, "empty flow": empty})
        return Paired(times["plain"], times["fleetflow"]), statistics.median(times["empty flow"])


def report(results: dict[int, tuple[Paired, float]], runs: int) -> str:
    lines = [
        "## Overhead: `run_playbook` in a flow vs plain ansible-playbook (issue #9, benchmark 1)",
        "",
        f"`fleetflow bench overhead`: bench/playbooks/three_tasks.yml (3 tasks, no facts) on N "
        f"lab hosts, both sides with the repository's ansible.cfg (pipelining, ControlPersist), "
        f"forks = N (max 50), host key checking on. The flow side includes flow and task runs "
        f"on a Prefect server (SQLite), preflight, host locks, per-host logs, artifacts and "
        f"events. {runs} interleaved pairs after a warm-up pair; medians.",
        "",
        "| hosts | plain ansible-playbook | run_playbook in a flow | ratio (median of pairs) "
        "| of the difference: Prefect's own flow run (an empty flow) | target |",
        "|---|---|---|---|---|---|",
    ]
    for hosts, (result, empty) in sorted(results.items()):
        plain, ours = result.medians()
        lines.append(
            f"| {hosts} | {plain:.2f} s | {ours:.2f} s | **{result.ratio:.3f}x** | "
            f"{empty:.2f} s of {ours - plain:.2f} s | <= 1.05x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="20,50", help="comma-separated host counts")
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
        write_section("overhead", text)


if __name__ == "__main__":
    main()
