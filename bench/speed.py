"""Benchmark 2: fleetflow's defaults vs stock ansible-playbook, and what each default buys.

A typical playbook (bench/playbooks/facts.yml: fact gathering + 3 tasks) on 20 lab hosts.
Sides, each adding one thing to the one before, then fleetflow itself:
  stock             ansible-playbook with no ansible.cfg (forks 5, no pipelining)
  forks             + forks = number of hosts
  ansible.cfg       + the repository's ansible.cfg (pipelining, SSH without compression;
                      stock Ansible already keeps one ControlPersist connection per host)
  fact cache        + a warm jsonfile fact cache (gathering = smart skips gathering)
  fleetflow         run_playbook in a flow with fleetflow's defaults (all of the above)
  fleetflow+mitogen the same with FLEETFLOW_STRATEGY=mitogen
Round robin, medians; ratio = stock / side. Target for fleetflow: >= 4x.

Run: fleetflow bench speed [--hosts 20] [--runs 3] [--no-write]   (root)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import (
    PLAYBOOKS,
    ansible_env,
    environment,
    fleetflow_seconds,
    lab,
    plain_playbook,
    prefect_server,
    round_robin,
    write_section,
)

PLAYBOOK = PLAYBOOKS / "facts.yml"


def _fleetflow_side(inventory: Path, cache: str, strategy: str) -> Callable[[], float]:
    def run() -> float:
        with environment(FLEETFLOW_FACT_CACHE_DIR=cache, FLEETFLOW_STRATEGY=strategy):
            return fleetflow_seconds(PLAYBOOK, inventory)

    return run


def sides(inventory: Path, hosts: int, scratch: Path) -> dict[str, Callable[[], float]]:
    empty = scratch / "stock.cfg"
    empty.write_text("[defaults]\n")
    stock = ansible_env(config=empty)
    repo = ansible_env()
    cache = {
        "ANSIBLE_CACHE_PLUGIN": "jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(scratch / "facts-plain"),
        "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "7200",
    }
    cached = ansible_env(extra=cache)
    forks = ("--forks", str(hosts))
    return {
        "stock": lambda: plain_playbook(PLAYBOOK, inventory, stock),
        "forks": lambda: plain_playbook(PLAYBOOK, inventory, stock, *forks),
        "ansible.cfg": lambda: plain_playbook(PLAYBOOK, inventory, repo, *forks),
        "fact cache": lambda: plain_playbook(PLAYBOOK, inventory, cached, *forks),
        "fleetflow": _fleetflow_side(inventory, str(scratch / "facts-ff"), "linear"),
        "fleetflow+mitogen": _fleetflow_side(inventory, str(scratch / "facts-ff"), "mitogen"),
    }


def report(times: dict[str, list[float]], hosts: int, runs: int) -> str:
    stock = statistics.median(times["stock"])
    lines = [
        "## Speed: fleetflow's defaults vs stock ansible-playbook (issue #9, benchmark 2)",
        "",
        f"`fleetflow bench speed`: bench/playbooks/facts.yml (fact gathering + 3 tasks) on "
        f"{hosts} lab hosts, host key checking on everywhere, {runs} rounds (round robin) "
        "after a warm-up round that also fills the fact caches; medians. Each row adds one "
        "thing to the row above; the fleetflow rows are `run_playbook` in a flow.",
        "",
        "| side | what it adds | median | speed-up vs stock |",
        "|---|---|---|---|",
    ]
    what = {
        "stock": "ansible-playbook, no ansible.cfg: forks 5, no pipelining",
        "forks": "`--forks` = hosts (fleetflow sizes forks to the targeted hosts, max 50)",
        "ansible.cfg": "the repository's ansible.cfg: pipelining, SSH without compression "
        "(ControlPersist is on in stock Ansible too)",
        "fact cache": "jsonfile fact cache, warm (gathering = smart)",
        "fleetflow": "run_playbook in a flow, fleetflow's defaults (= the rows above)",
        "fleetflow+mitogen": "`FLEETFLOW_STRATEGY=mitogen` (mitogen_linear)",
    }
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {what[name]} | {median:.1f} s | **{stock / median:.2f}x** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="ff-bench-speed-") as scratch,
        prefect_server(),
        lab("bench-speed", args.hosts) as fleet,
    ):
        runs = sides(fleet.inventory_dir, args.hosts, Path(scratch))
        print("warm-up round", flush=True)
        round_robin(1, runs)
        times = round_robin(args.runs, runs)
    text = report(times, args.hosts, args.runs)
    print(text)
    if not args.no_write:
        write_section("speed", text)


if __name__ == "__main__":
    main()
