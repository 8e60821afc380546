"""The stack end to end: Prefect server on the running PostgreSQL, deployments from
prefect.yaml, two process workers on different queues, runs triggered by the CLI
against the lab, host locks between runs, and `stack down` leaving nothing behind."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleetflow.lab import Lab
from fleetflow.stack._procs import processes_marked

from .stacks import BIN, RunningStack, free_port, lab_ansible, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with running_stack(tmp_path_factory.mktemp("stack"), str(lab.inventory_dir)) as running:
        yield running


def test_status_shows_server_and_both_workers_online(stack: RunningStack) -> None:
    done = stack.cli(str(BIN / "fleetflow"), "stack", "status", "--json")
    status = json.loads(done.stdout)
    assert done.returncode == 0 and status["server_healthy"] and status["up"]
    assert status["database"].endswith(f"/{stack.database}")
    assert status["workers"] == {"worker-lab": "ONLINE", "worker-staging": "ONLINE"}
    # Applied migrations: Prefect's tables exist in the stack's own database.
    assert stack.query("SELECT to_regclass('flow_run')::text") == [("flow_run",)]
    ui = httpx.get(stack.env["PREFECT_API_URL"].removesuffix("/api") + "/", timeout=10)
    assert ui.status_code == 200 and ui.headers["content-type"].startswith("text/html")


def test_the_api_wants_credentials(stack: RunningStack) -> None:
    api = stack.env["PREFECT_API_URL"]
    user, password = stack.env["FLEETFLOW_API_AUTH"].split(":", 1)
    assert httpx.post(f"{api}/flows/filter", json={}, timeout=10).status_code == 401
    wrong = httpx.post(f"{api}/flows/filter", json={}, auth=(user, "guess"), timeout=10)
    assert wrong.status_code == 401
    right = httpx.post(f"{api}/flows/filter", json={}, auth=(user, password), timeout=10)
    assert right.status_code == 200
    anonymous = {k: v for k, v in stack.env.items() if k != "PREFECT_API_AUTH_STRING"}
    refused = RunningStack(anonymous, stack.directory, "", "", stack.project).cli(
        str(BIN / "prefect"), "deployment", "ls"
    )
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr


def test_without_a_database_url_a_server_only_stack_uses_sqlite(tmp_path: Path) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text("workers: []\n")
    env = {k: v for k, v in os.environ.items() if k != "FLEETFLOW_DATABASE_URL"}
    env |= {"FLEETFLOW_STACK_DIR": str(tmp_path), "FLEETFLOW_API_PORT": str(free_port())}
    alone = RunningStack(env, tmp_path, "", "")
    fleetflow = [str(BIN / "fleetflow"), "stack"]
    try:
        up = alone.cli(*fleetflow, "up", "--config", str(config), "--json")
        assert up.returncode == 0, up.stdout + up.stderr
        status = json.loads(up.stdout)
        assert status["database"] == f"sqlite:{tmp_path / 'home' / 'prefect.db'}"
        # The server behind the access gateway, its users in a SQLite file beside it.
        assert [p["role"] for p in status["processes"]] == ["server", "gateway"]
        assert (tmp_path / "home" / "prefect.db").stat().st_size > 0
        # No FLEETFLOW_API_AUTH: credentials were generated, readable by root only.
        assert (tmp_path / "api-auth").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "access.db").stat().st_mode & 0o777 == 0o600
        # Phases are shown (stderr) without -v; a new database is migrated.
        assert "migrating the schema" in up.stderr and "server: healthy after" in up.stderr
        assert alone.cli(*fleetflow, "down").returncode == 0
        again = alone.cli(*fleetflow, "up", "--config", str(config), "--json")
        assert again.returncode == 0, again.stdout + again.stderr
        # The same database again: no migration, and the server works on it.
        assert "schema current" in again.stderr and "migrat" not in again.stderr, again.stderr
        assert json.loads(again.stdout)["server_healthy"] is True
    finally:
        assert alone.cli(*fleetflow, "down").returncode == 0
    assert processes_marked(str(tmp_path)) == []


def test_cli_run_completes_and_lands_in_postgres(stack: RunningStack, lab: Lab) -> None:
    code, run_id, output = stack.trigger("site/lab", watch=True, inventory=stack.inventory)
    assert code == 0, output
    assert stack.wait_final(run_id)[run_id][0] == "COMPLETED"
    artifacts = stack.query(
        "SELECT key, data FROM artifact WHERE flow_run_id::text = %s AND type = 'table'", run_id
    )
    table = {key: json.loads(data) for key, data in artifacts}[f"hosts-site-{stack.inventory}"]
    assert {row["host"] for row in table} == {h.name for h in lab.hosts()}
    assert all(row["status"] in {"ok", "changed"} and row["ok"] > 0 for row in table), table


def test_failing_run_exits_non_zero(stack: RunningStack) -> None:
    code, run_id, output = stack.trigger(
        "playbook/lab", watch=True, playbook="mixed", inventory=stack.inventory
    )
    assert code != 0, output
    assert stack.wait_final(run_id)[run_id][0] == "FAILED"
    # The flow logged why; Prefect's "unexpected exception" line is not said on top of
    # it. The run's process ships its last logs as it exits: wait for the flow's line.
    stack.wait_log(run_id, "hosts failed in mixed.yml")
    time.sleep(5)
    assert not [line for line in stack.logs(run_id) if "Engine execution exited" in line]


def test_history_tells_trigger_parameters_and_per_host_outcome(
    stack: RunningStack, lab: Lab
) -> None:
    fleetflow = [str(BIN / "fleetflow"), "history", "--json"]
    done = stack.cli(*fleetflow, "--deployment", "site/lab")
    assert done.returncode == 0, done.stdout + done.stderr
    (site,) = json.loads(done.stdout)
    assert (site["state"], site["trigger"]) == ("Completed", "api")
    assert site["parameters"]["inventory"] == stack.inventory
    assert set(site["hosts"]) == {h.name for h in lab.hosts()}
    db_host = lab.hosts()[1].name
    touched = json.loads(stack.cli(*fleetflow, "--host", db_host).stdout)
    failed = [r for r in touched if r["hosts"][db_host] == "failed"]
    assert failed and failed[0]["state"] == "Failed" and failed[0]["flow"] == "playbook"


# Runs someone triggered: a schedule's future runs are made whenever the scheduler loops.
_TRIGGERED = "SELECT count(*) FROM flow_run WHERE NOT auto_scheduled"


def test_bad_parameters_are_rejected_at_trigger_time(stack: RunningStack) -> None:
    before = stack.query(_TRIGGERED)
    code, run_id, output = stack.trigger("site/lab", retries=-1)
    assert code != 0 and "retries" in output and not run_id
    code, run_id, output = stack.trigger("rolling_update/lab", version="1.0; rm -rf /")
    assert code != 0 and "version" in output and not run_id
    # Typos in names are refused by the schema's choices: no run, so no failure alert.
    code, run_id, output = stack.trigger("playbook/lab", playbook="pnig")
    assert code != 0 and "pnig" in output and not run_id
    code, run_id, output = stack.trigger("playbook/lab", playbook="ping", inventory="uxx")
    assert code != 0 and "uxx" in output and not run_id
    assert stack.query(_TRIGGERED) == before


def _submitted_by(stack: RunningStack, worker: str) -> str:
    return (stack.directory / "logs" / f"worker-{worker}.log").read_text()


def test_each_worker_runs_only_its_queue_and_queue_limit_holds(
    stack: RunningStack, lab: Lab
) -> None:
    stack.deploy_playbook_flow("staging", queue="staging")
    lab_run = stack.trigger("playbook/lab", playbook="ping", inventory=stack.inventory)[1]
    # Two staging runs on different hosts: only the queue's limit of 1 keeps them apart.
    staging_runs = [
        stack.trigger(
            "playbook/staging", playbook="hold", inventory=stack.inventory, limit=host,
            extra_vars={"tag": f"q{n}", "seconds": 3},
        )[1]
        for n, host in enumerate(h.name for h in lab.hosts()[:2])
    ]  # fmt: skip
    runs = stack.wait_final(lab_run, *staging_runs)
    assert {r[0] for r in runs.values()} == {"COMPLETED"}, runs
    assert runs[lab_run][3] == "lab" and {runs[r][3] for r in staging_runs} == {"staging"}
    lab_log, staging_log = (
        _submitted_by(stack, "worker-lab"),
        _submitted_by(stack, "worker-staging"),
    )
    assert lab_run in lab_log and lab_run not in staging_log
    assert all(r in staging_log and r not in lab_log for r in staging_runs)
    (_, start1, end1, _), (_, start2, end2, _) = (runs[r] for r in staging_runs)
    assert end1 <= start2 or end2 <= start1, "the staging queue ran two flow runs at once"


def _holds(lab: Lab, host: str) -> dict[str, tuple[float, float]]:
    """Tag -> (start, end) of each hold on the host, from its own log."""
    spans: dict[str, list[float]] = {}
    for line in lab.ssh(host, "cat /var/tmp/ff-hold.log; rm -f /var/tmp/ff-hold.log").stdout.split(
        "\n"
    ):
        if line:
            _event, tag, stamp = line.split()
            spans.setdefault(tag, []).append(float(stamp))
    return {tag: (min(s), max(s)) for tag, s in spans.items()}


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_host_locks_serialize_overlapping_runs_and_not_disjoint_ones(
    stack: RunningStack, lab: Lab
) -> None:
    for host in lab.hosts():
        lab.ssh(host.name, "rm -f /var/tmp/ff-hold.log")

    def start(tag: str, limit: str) -> str:
        params = {"tag": tag, "seconds": 4}
        return stack.trigger(
            "playbook/lab", playbook="hold", inventory=stack.inventory, limit=limit,
            extra_vars=params,
        )[1]  # fmt: skip

    # The second host is in both runs: they must take turns on it.
    one, two, three = (h.name for h in lab.hosts())
    runs = stack.wait_final(start("A", f"{one}:{two}"), start("B", f"{two}:{three}"))
    assert {r[0] for r in runs.values()} == {"COMPLETED"}, runs
    shared = _holds(lab, two)
    assert set(shared) == {"A", "B"} and not _overlap(shared["A"], shared["B"])
    only_a, only_b = _holds(lab, one), _holds(lab, three)
    assert set(only_a) == {"A"} and set(only_b) == {"B"}
    # Disjoint hosts: a run on the third host starts and ends while another run holds the
    # first one (it is waiting on that host for a file only the test creates). A lock wider
    # than the run's own hosts would keep the second run waiting until the release. Asserted
    # on order, not on wall-clock overlap: a busy worker may start two runs seconds apart.
    release = "/var/tmp/ff-release"
    lab.ssh(one, f"rm -f {release}")
    holder = stack.trigger(
        "playbook/lab", playbook="wait_for_file", inventory=stack.inventory, limit=one,
        extra_vars={"fleetflow_wait_path": release, "fleetflow_wait_sleep": 1},
    )[1]  # fmt: skip
    try:
        # Logged once the task starts on the host, so after the run took its lock.
        stack.wait_log(holder, "TASK [Wait until the file is present or absent on the host]", 240)
        runs = stack.wait_final(start("D", three), timeout=300)
        assert {r[0] for r in runs.values()} == {"COMPLETED"}, runs
        assert set(_holds(lab, three)) == {"D"}
        assert stack.state(holder)[0] == "RUNNING", "the holder ended before it was released"
    finally:
        lab.ssh(one, f"touch {release}")
    assert stack.wait_final(holder)[holder][0] == "COMPLETED"
    lab.ssh(one, f"rm -f {release}")


def test_a_workers_only_stack_joins_the_server_and_leaves_it_running(
    stack: RunningStack, tmp_path: Path
) -> None:
    env = {**stack.env, "FLEETFLOW_STACK_DIR": str(tmp_path)}
    edge = RunningStack(env, tmp_path, "", "", stack.project)
    server = stack.env["PREFECT_API_URL"].removesuffix("/api")
    fleetflow = [str(BIN / "fleetflow"), "stack"]
    config = ["--config", str(stack.directory / "stack.yaml"), "--server-url", server]
    up = edge.cli(*fleetflow, "up", *config, "--worker", "edge-1=staging", "--json")
    assert up.returncode == 0, up.stdout + up.stderr
    status = json.loads(up.stdout)
    assert status["workers"]["edge-1"] == "ONLINE"
    assert {p["role"] for p in status["processes"]} == {"launcher", "worker"}
    assert edge.cli(*fleetflow, "down", *config).returncode == 0
    assert processes_marked(str(tmp_path)) == []
    main = json.loads(stack.cli(*fleetflow, "status", "--json").stdout)
    assert main["up"] and main["workers"]["worker-lab"] == "ONLINE"


def _ansible_processes(stack: RunningStack, lab: Lab) -> list[int]:
    marked = [
        pid
        for pid in processes_marked(str(stack.directory))
        if b"ansible" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return sorted({*marked, *lab_ansible(lab.inventory_dir)})


def test_cancel_through_the_warm_launcher_stops_the_run(stack: RunningStack, lab: Lab) -> None:
    host = lab.hosts()[0].name
    lab.ssh(host, "rm -f /var/tmp/ff-hold.log")
    params = {"tag": "X", "seconds": 300}
    run_id = stack.trigger(
        "playbook/lab", playbook="hold", inventory=stack.inventory,
        limit=host, extra_vars=params,
    )[1]  # fmt: skip
    deadline = time.monotonic() + 120
    while "start X" not in lab.ssh(host, "cat /var/tmp/ff-hold.log").stdout:
        assert time.monotonic() < deadline, "the run never reached the host"
        time.sleep(0.5)
    assert _ansible_processes(stack, lab), "the run's ansible processes were not found"
    cancel = stack.cli(str(BIN / "prefect"), "flow-run", "cancel", run_id)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert stack.wait_final(run_id, timeout=90)[run_id][0] == "CANCELLED"
    deadline = time.monotonic() + 30
    while _ansible_processes(stack, lab):
        assert time.monotonic() < deadline, "ansible processes outlived the cancel"
        time.sleep(0.5)
    assert "end X" not in lab.ssh(host, "cat /var/tmp/ff-hold.log").stdout


def test_stack_down_leaves_no_process(stack: RunningStack, lab: Lab) -> None:
    done = stack.cli(str(BIN / "fleetflow"), "stack", "down")
    assert done.returncode == 0, done.stdout + done.stderr
    assert processes_marked(str(stack.directory)) == []
    assert lab_ansible(lab.inventory_dir) == []
    status = stack.cli(str(BIN / "fleetflow"), "stack", "status", "--json")
    assert status.returncode == 1 and not json.loads(status.stdout)["server_healthy"]
