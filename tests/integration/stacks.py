"""A real stack for integration tests: server on the machine's PostgreSQL, workers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg2

from fleetflow.stack._procs import processes_marked

from ..conftest import REPO
from ..project import make_project

BIN = Path(sys.executable).parent
FIXTURES = REPO / "tests" / "fixtures" / "playbooks"
PG = "postgresql://postgres@127.0.0.1:5432"
AUTH = f"fleetflow:{secrets.token_urlsafe(16)}"
CONFIG = """
work_pool:
  name: fleetflow
  queues:
    - {name: lab, priority: 1, concurrency_limit: 4}
    - {name: staging, priority: 2, concurrency_limit: 1}
workers:
  - {name: worker-lab, queues: [lab]}
  - {name: worker-staging, queues: [staging]}
worker_poll_seconds: 1
"""


@dataclass
class RunningStack:
    env: dict[str, str]
    directory: Path
    database: str
    inventory: str
    project: Path = REPO  # the repository its commands run in (FLEETFLOW_PROJECT_DIR)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            # stdin: the prefect CLI makes its stdin non-blocking, which would leak to us.
            [*args], cwd=self.project, env=self.env, stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    def trigger(self, deployment: str, watch: bool = False, **params: Any) -> tuple[int, str, str]:
        """`prefect deployment run`: exit code, flow run id ('' if none), output."""
        argv = [
            str(BIN / "prefect"),
            "deployment",
            "run",
            deployment,
            "--params",
            json.dumps(params),
        ]
        done = self.cli(*argv, *(["--watch"] if watch else []))
        output = done.stdout + done.stderr
        match = re.search(r"UUID: ([0-9a-f-]{36})", output)
        return done.returncode, match[1] if match else "", output

    def deploy_playbook_flow(self, name: str, queue: str) -> None:
        """One more deployment of the `playbook` flow, `playbook/<name>` on `queue`."""
        script = (
            "from prefect import flow\n"
            "flow.from_source(source='.', entrypoint='flows/playbook.py:playbook').deploy(\n"
            f"    name={name!r}, work_pool_name='fleetflow', work_queue_name={queue!r},\n"
            "    build=False, push=False, print_next_steps=False)\n"
        )
        done = self.cli(sys.executable, "-c", script)
        assert done.returncode == 0, done.stdout + done.stderr
        tighten = self.cli(str(BIN / "fleetflow"), "deploy", "--tighten-only")
        assert tighten.returncode == 0, tighten.stdout + tighten.stderr

    def up(self) -> subprocess.CompletedProcess[str]:
        """`fleetflow stack up` again: starts what is not running (a killed worker, server)."""
        up = self.cli(
            str(BIN / "fleetflow"), "stack", "up", "--config", str(self.directory / "stack.yaml")
        )
        assert up.returncode == 0, up.stdout + up.stderr
        return up

    def api(self, method: str, path: str, body: Any = None) -> Any:
        user, password = self.env["FLEETFLOW_API_AUTH"].split(":", 1)
        response = httpx.request(
            method, self.env["PREFECT_API_URL"] + path, json=body, auth=(user, password),
            timeout=30,
        )  # fmt: skip
        response.raise_for_status()
        return response.json() if response.content else None

    def create_run(self, deployment: str, **params: Any) -> str:
        """A flow run of `deployment` straight through the API (the CLI takes ~1 s each)."""
        flow_name, name = deployment.split("/")
        found = self.api("GET", f"/deployments/name/{flow_name}/{name}")
        run = self.api(
            "POST", f"/deployments/{found['id']}/create_flow_run", {"parameters": params}
        )
        return str(run["id"])

    def logs(self, run_id: str) -> list[str]:
        """Every log message the server stored for a flow run (its task runs' included)."""
        rows = self.query(
            "SELECT message FROM log WHERE flow_run_id::text = %s ORDER BY timestamp", run_id
        )
        return [str(row[0]) for row in rows]

    def wait_log(self, run_id: str, needle: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(needle in line for line in self.logs(run_id)):
            assert time.monotonic() < deadline, f"no log line with {needle!r} in {timeout} s"
            time.sleep(0.5)

    def state(self, run_id: str) -> tuple[str, str, str]:
        """The flow run's (state type, state name, state message) now."""
        rows = self.query(
            "SELECT s.type, s.name, coalesce(s.message, '') FROM flow_run f "
            "JOIN flow_run_state s ON s.id = f.state_id WHERE f.id::text = %s",
            run_id,
        )
        return (str(rows[0][0]), str(rows[0][1]), str(rows[0][2]))

    def wait_state(self, run_id: str, state: str, timeout: float = 180) -> tuple[str, str, str]:
        """Wait until the run is in `state` (a type: PAUSED, COMPLETED...); an end in another
        final state fails at once with the run's last log lines."""
        deadline = time.monotonic() + timeout
        while (now := self.state(run_id))[0] != state:
            assert now[0] not in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, (
                now, self.logs(run_id)[-15:],
            )  # fmt: skip
            assert time.monotonic() < deadline, f"{run_id} still {now} after {timeout} s"
            time.sleep(0.5)
        return now

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with psycopg2.connect(f"{PG}/{self.database}") as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def wait_final(self, *run_ids: str, timeout: float = 240) -> dict[str, tuple[Any, ...]]:
        """Each run's (state_type, start_time, end_time, work_queue_name) once all ended."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.query(
                "SELECT id::text, state_type, start_time, end_time, work_queue_name "
                "FROM flow_run WHERE id::text = ANY(%s)",
                list(run_ids),
            )
            runs = {row[0]: row[1:] for row in rows}
            final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
            if len(runs) == len(run_ids) and all(r[0] in final for r in runs.values()):
                return runs
            assert time.monotonic() < deadline, f"runs not finished: {runs}"
            time.sleep(1)


def commands_naming(text: str) -> dict[int, str]:
    """Each live process whose command line names `text`: its command line, spaced."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if entry.name.isdigit() and text in cmdline:
            found[int(entry.name)] = cmdline
    return found


def lab_ansible(inventory: Path, needle: str = "ansible") -> list[int]:
    """Processes running Ansible on the lab whose inventory is `inventory`, with `needle` in
    their command line (found by command line: another test process may run Ansible on a
    lab of its own under another stack's mark)."""
    return [pid for pid, cmd in commands_naming(str(inventory)).items() if needle in cmd]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _drop_database(name: str) -> None:
    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@contextmanager
def running_stack(
    directory: Path,
    inventory: str,
    config: str = CONFIG,
    more: dict[str, Path] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[RunningStack]:
    """`fleetflow stack up` in `directory` on a fresh database, deployed; always stopped.

    Its repository (tests.project) has the test playbooks and `inventory` (a lab's
    inventory directory) as the environment `lab` (`stack.inventory`), and `more`
    environments if given. `extra_env` is added to the environment `stack up` runs in (and so
    to its services').
    """
    (directory / "stack.yaml").write_text(config)
    project = make_project(directory / "project", {"lab": Path(inventory), **(more or {})})
    database = f"fleetflow_test_{os.getpid()}_{directory.name}".replace("-", "_")[:60]
    port = free_port()
    env = {
        **os.environ,
        "FLEETFLOW_STACK_DIR": str(directory),
        "FLEETFLOW_DATABASE_URL": f"{PG}/{database}",
        "FLEETFLOW_API_PORT": str(port),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "FLEETFLOW_API_AUTH": AUTH,
        "PREFECT_API_AUTH_STRING": AUTH,
        "FLEETFLOW_PROJECT_DIR": str(project),
        **(extra_env or {}),
    }
    running = RunningStack(env, directory, database, "lab", project)
    try:
        running.up()
        deploy = running.cli(str(BIN / "fleetflow"), "deploy", "--working-tree")
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        yield running
    finally:
        try:
            running.cli(str(BIN / "fleetflow"), "stack", "down")
        finally:
            # Also when `stack down` failed or a timeout interrupted it: nothing of this
            # stack may outlive the test (a server left running kept its port and database).
            _kill_marked(str(directory.resolve()))
            _drop_database(database)


def _kill_marked(mark: str) -> None:
    for pid in processes_marked(mark):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
