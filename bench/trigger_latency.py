"""Benchmark: time from `prefect deployment run` to the first playbook event.

Starts its own lab (2 hosts, the environment `lab` of a repository linking this one's
content), its own stack (server + one worker) on a free port and deploys prefect.yaml
(`fleetflow deploy`), then for each worker mode triggers `playbook/lab` (ping) N times,
one at a time, and reads from the API when the run logged "ansible-playbook started".

Run: .venv/bin/python bench/trigger_latency.py [--runs 10] [--modes stock,tuned]
(root; FLEETFLOW_DATABASE_URL for PostgreSQL, else SQLite; removes what it starts)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from uuid import UUID

from _common import drop_database, free_port, repository
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from fleetflow.lab import Lab

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
FIRST_EVENT = "ansible-playbook started"
# Worker settings per mode: the stock 10 s poll, fleetflow's 1 s poll, the warm launcher.
MODES: dict[str, dict[str, str]] = {
    "stock": {"poll": "10", "warm": "false"},
    "tuned": {"poll": "1", "warm": "false"},
    "warm": {"poll": "1", "warm": "true"},
}


def _config(mode: dict[str, str]) -> str:
    return (
        "work_pool: {name: fleetflow, queues: [{name: lab}]}\n"
        "workers: [{name: bench, queues: [lab]}]\n"
        f"worker_poll_seconds: {mode['poll']}\n"
        f"warm_launcher: {mode['warm']}\n"
    )


def _run(env: dict[str, str], *argv: str) -> str:
    cwd = env.get("FLEETFLOW_PROJECT_DIR", str(REPO))
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def _first_event(client: SyncPrefectClient, run_id: UUID, timeout: float = 120) -> datetime:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        for entry in logs:
            if FIRST_EVENT in entry.message.splitlines():
                return entry.timestamp
        time.sleep(0.2)
    raise SystemExit(f"run {run_id}: no '{FIRST_EVENT}' in {timeout} s")


def _wait_done(client: SyncPrefectClient, run_id: UUID) -> None:
    while not (state := client.read_flow_run(run_id).state) or not state.is_final():
        time.sleep(0.3)
    if not state.is_completed():
        raise SystemExit(f"run {run_id} ended {state.type.value}")


def measure(env: dict[str, str], inventory: str, runs: int) -> list[dict[str, float]]:
    rows = []
    with SyncPrefectClient(
        env["PREFECT_API_URL"], auth_string=env["PREFECT_API_AUTH_STRING"]
    ) as client:
        for _ in range(runs):
            params = json.dumps({"playbook": "ping", "inventory": inventory})
            clicked = time.time()
            out = _run(env, str(BIN / "prefect"), "deployment", "run", "playbook/lab",
                       "--params", params)  # fmt: skip
            match = re.search(r"UUID: ([0-9a-f-]{36})", out)
            assert match, out
            run_id = UUID(match[1])
            first = _first_event(client, run_id).timestamp()
            _wait_done(client, run_id)
            run = client.read_flow_run(run_id)
            assert run.created and run.start_time
            rows.append({
                "total": first - clicked,
                "cli": run.created.timestamp() - clicked,
                "pickup": run.start_time.timestamp() - run.created.timestamp(),
                "in_run": first - run.start_time.timestamp(),
                "from_created": first - run.created.timestamp(),
            })  # fmt: skip
    return rows


def _summary(rows: list[dict[str, float]]) -> str:
    def p(key: str, q: float) -> float:
        values = sorted(r[key] for r in rows)
        return values[min(len(values) - 1, int(q * len(values)))]

    return "  ".join(
        f"{key} p50 {statistics.median(r[key] for r in rows):.2f} s (p90 {p(key, 0.9):.2f})"
        for key in ("total", "from_created", "cli", "pickup", "in_run")
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    auth = f"bench:{secrets.token_urlsafe(16)}"
    lab = Lab("bench-trigger", inventory_dir=Path(tempfile.mkdtemp(prefix="ff-bench-inv-")))
    lab.up(2)
    try:
        for mode in args.modes.split(","):
            with tempfile.TemporaryDirectory(prefix="ff-bench-stack-") as directory:
                port = free_port()
                project = repository(Path(directory) / "project", lab.inventory_dir)
                env = {**os.environ, "FLEETFLOW_STACK_DIR": directory,
                       "FLEETFLOW_PROJECT_DIR": str(project),
                       "FLEETFLOW_API_PORT": str(port),
                       "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
                       "FLEETFLOW_API_AUTH": auth, "PREFECT_API_AUTH_STRING": auth}  # fmt: skip
                if "FLEETFLOW_DATABASE_URL" in env:
                    env["FLEETFLOW_DATABASE_URL"] += f"_bench_{mode}"
                config = Path(directory) / "stack.yaml"
                config.write_text(_config(MODES[mode]))
                _run(env, str(BIN / "fleetflow"), "stack", "up", "--config", str(config))
                try:
                    # The lab inventory is written by `lab up`, not committed: run the tree.
                    _run(env, str(BIN / "fleetflow"), "deploy", "--working-tree")
                    measure(env, "lab", 1)  # warm-up, not counted
                    rows = measure(env, "lab", args.runs)
                    print(f"{mode:<6} ({args.runs} runs): {_summary(rows)}", flush=True)
                finally:
                    _run(env, str(BIN / "fleetflow"), "stack", "down")
                    if "FLEETFLOW_DATABASE_URL" in env:
                        drop_database(env["FLEETFLOW_DATABASE_URL"])
    finally:
        lab.down()


if __name__ == "__main__":
    main()
