"""What the benchmarks share: a lab, a Prefect server, the two sides' settings, medians,
and writing a section of bench/RESULTS.md.

The machine is shared and noisy, and the lab's "remote" hosts run on it too: every
benchmark runs both sides in one process session, interleaved, and reports medians and
the median of the paired ratios, never a single absolute time.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow

from fleetflow import PlaybookResult, RunStatus, run_playbook
from fleetflow.engine._ansible import ansible_environment, ansible_tool
from fleetflow.lab import Lab

# Telemetry writes from a second process lock the harness's SQLite database now and then.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS.md"
PLAYBOOKS = REPO / "bench" / "playbooks"
BIN = Path(sys.executable).parent


@contextmanager
def lab(name: str, hosts: int) -> Iterator[Lab]:
    """A lab of `hosts` hosts with its inventory in a temporary directory; always removed."""
    with tempfile.TemporaryDirectory(prefix="ff-bench-inv-") as inventory:
        fleet = Lab(name, inventory_dir=Path(inventory))
        try:
            fleet.up(hosts)
            yield fleet
        finally:
            fleet.down()


def repository(root: Path, inventory: Path) -> Path:
    """A repository at `root`: this one's content (links) with `inventory` as its
    environment `lab`. Deployed flows take inventories by name from the repository
    (FLEETFLOW_PROJECT_DIR), never a path."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("ansible.cfg", "playbooks", "roles", "scripts", "flows", "deployments"):
        (root / name).symlink_to(REPO / name)
    (root / "prefect.yaml").symlink_to(REPO / "deployments" / "prefect.yaml")
    (root / "inventory").mkdir()
    (root / "inventory" / "lab").symlink_to(inventory.resolve())
    return root


@contextmanager
def prefect_server() -> Iterator[None]:
    """A temporary Prefect server (SQLite) for this process's flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block (fleetflow reads its settings per run)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ansible_env(extra: dict[str, str] | None = None, config: Path | None = None) -> dict[str, str]:
    """The environment fleetflow gives ansible-playbook: the repository's ansible.cfg (or
    `config`), strict inventory parsing, host key checking; plus `extra`."""
    env = ansible_environment(REPO)  # already the process's environment, keys checked
    if config is not None:
        env["ANSIBLE_CONFIG"] = str(config)
    env.update(extra or {})
    return env


def plain_playbook(playbook: Path, inventory: Path, env: dict[str, str], *args: str) -> float:
    """Wall seconds of one plain ansible-playbook run; it must succeed.

    Each run gets fresh SSH ControlPersist masters, killed afterwards, as fleetflow's
    runs do: reusing the previous run's connections would time a different thing.
    """
    control_dir = tempfile.mkdtemp(prefix="ff-bench-cp-", dir="/tmp")
    started = time.monotonic()
    done = subprocess.run(
        [ansible_tool("ansible-playbook"), "-i", str(inventory), str(playbook), *args],
        env={**env, "ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir},
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    subprocess.run(["pkill", "-KILL", "-f", control_dir], check=False)
    shutil.rmtree(control_dir, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"ansible-playbook failed ({done.returncode}):\n{done.stdout[-3000:]}")
    return elapsed


@flow(name="bench-run-playbook")
def through_fleetflow(playbook: str, inventory: str, limit: str | None = None) -> PlaybookResult:
    """The fleetflow side of a benchmark: run_playbook inside a flow."""
    return run_playbook(playbook, inventory=inventory, limit=limit)


def fleetflow_seconds(playbook: Path, inventory: Path) -> float:
    """Wall seconds of one run_playbook in a flow (flow run included); it must succeed."""
    elapsed, result = timed(lambda: through_fleetflow(str(playbook), str(inventory)))
    if result.status != RunStatus.SUCCESSFUL:
        raise SystemExit(f"run_playbook ended {result.status}: {result.message}")
    return elapsed


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    value = call()
    return time.monotonic() - started, value


@dataclass
class Paired:
    """Interleaved runs of two sides; `ratio` is the median of per-pair ratios b/a."""

    a: list[float]
    b: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(y / x for x, y in zip(self.a, self.b, strict=True))

    def medians(self) -> tuple[float, float]:
        return statistics.median(self.a), statistics.median(self.b)


def paired(runs: int, side_a: Callable[[], float], side_b: Callable[[], float]) -> Paired:
    """Run the sides alternately (a,b then b,a ...) so drift hits both alike."""
    times = round_robin(runs, {"a": side_a, "b": side_b})
    return Paired(times["a"], times["b"])


def round_robin(runs: int, sides: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each round runs every side once, starting one further along each round."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for index in range(runs):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            times[name].append(sides[name]())
        print(f"  round {index + 1}: " + ", ".join(f"{n} {times[n][-1]:.1f} s" for n in names),
              flush=True)  # fmt: skip
    return times


class PeakMemory:
    """Samples the memory of this process and the descendants it starts while sampling
    (not those already running at entry: the Prefect server, lab hosts). Counts PSS
    (proportional set size): Ansible's forks share most pages with their parent, and
    RSS would count those once per fork."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak = 0
        self._exclude: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._exclude = descendants(os.getpid())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            pids = {os.getpid()} | (descendants(os.getpid()) - self._exclude)
            self.peak = max(self.peak, sum(_pss(pid) for pid in pids))


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass  # gone meanwhile
    return 0


def _processes() -> dict[int, int]:
    """pid -> parent pid, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        found[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return found


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in _processes().items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@contextmanager
def postgres_server(name: str) -> Iterator[dict[str, str]]:
    """A Prefect server on the machine's PostgreSQL (`fleetflow stack up`, no workers):
    SQLite answers 503 to many concurrent runs. Yields the environment of a process
    that uses it (Prefect reads its API settings at import, and its log and event
    workers run on threads of their own, so a child process gets them). The database
    (FLEETFLOW_BENCH_POSTGRES, default the local server) is dropped afterwards."""
    base = os.environ.get("FLEETFLOW_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
    database = f"fleetflow_bench_{name}_{os.getpid()}"
    auth = f"bench:{secrets.token_urlsafe(16)}"
    with tempfile.TemporaryDirectory(prefix="ff-bench-stack-") as directory:
        port = free_port()
        env = {
            **os.environ,
            "FLEETFLOW_STACK_DIR": directory,
            "FLEETFLOW_API_AUTH": auth,
            "FLEETFLOW_DATABASE_URL": f"{base}/{database}",
            "FLEETFLOW_API_PORT": str(port),
        }
        config = Path(directory) / "stack.yaml"
        config.write_text("work_pool: {name: bench, queues: [{name: bench}]}\nworkers: []\n")
        fleetflow = [str(BIN / "fleetflow"), "stack"]
        try:
            subprocess.run([*fleetflow, "up", "--config", str(config)], env=env, check=True)
            yield {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
                   "PREFECT_API_AUTH_STRING": auth}  # fmt: skip
        finally:
            subprocess.run([*fleetflow, "down", "--config", str(config)], env=env, check=False)
            drop_database(f"{base}/{database}")


def drop_database(url: str) -> None:
    import psycopg2
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conn = psycopg2.connect(host=parsed.host, port=parsed.port, user=parsed.username,
                            password=parsed.password, dbname="postgres")  # fmt: skip
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def count_logs(flow_run_id: Any, wanted: Callable[[str], bool]) -> int:
    """Log lines of a flow run stored by the server that are `wanted` (a record may hold
    several lines: fleetflow ships a run's lines in batches)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    total, offset = 0, 0
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                limit=200, offset=offset,
            )  # fmt: skip
            total += sum(1 for log in page for line in log.message.splitlines() if wanted(line))
            if len(page) < 200:
                return total
            offset += 200


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between this benchmark's markers in RESULTS.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n\n_Measured {date.today().isoformat()}._\n{end}"
    text = RESULTS.read_text()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    RESULTS.write_text(text)
    print(f"wrote section {name!r} of {RESULTS}")
