"""Remote guarding (issue #26): the fence's report, the collector's handling of the fence
task, the payload and metrics, and the host script itself on real processes (in a PID
namespace of their own, so a fence here can only ever see this test's processes)."""

from __future__ import annotations

import ast
import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fleetflow.engine import _guard
from fleetflow.engine._collector import EventCollector
from fleetflow.engine._guard import TASK_NAME, FenceReport, GuardConfig, new_token
from fleetflow.engine.publish import PlaybookFinished
from fleetflow.results import HostStatus, Leftover, PlaybookResult, RunStatus

PLUGIN = Path(_guard.__file__).parent / "ansible_plugins/callback/fleetflow_guard.py"
GHOST = {"pid": 41, "run": "dead-run.0a0b0c0d", "user": "root", "started": "2026-12-01T10:00:00Z",
         "command": "sh -c ./settle-payments.sh"}  # fmt: skip


def test_the_callback_plugin_names_the_task_as_the_engine_does() -> None:
    """The plugin imports nothing of ours (ansible-playbook loads it by path)."""
    tree = ast.parse(PLUGIN.read_text())
    names = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert ast.literal_eval(names["TASK_NAME"]) == TASK_NAME


def test_tokens_carry_the_flow_run_id_and_differ_per_attempt() -> None:
    run = "0b1c2d3e-0000-4000-8000-000000000001"
    first, second = new_token(run), new_token(run)
    assert first.startswith(run + ".") and first != second
    # Anything but a run id's characters stays out of the hosts' environment.
    assert new_token("x; rm -rf /").startswith("local.")
    assert GuardConfig().policy == "stop"


def _res(**data: Any) -> dict[str, Any]:
    return {"stdout": json.dumps(data), "stderr": "", "rc": 0}


def test_the_fence_report_reads_what_was_stopped_found_and_recorded() -> None:
    record = dict(GHOST, pid=7, why="the run's connection to the host ended")
    report = FenceReport.of(_res(stopped=[GHOST], found=[], records=[record, {"pid": "x"}]))
    assert [(g.pid, g.stopped_by) for g in report.leftovers] == [(7, "guard"), (41, "fence")]
    assert report.reason == "" and report.running == []
    assert "guard had stopped PID 7" in _guard.describe(report.leftovers[0])
    assert "stopped PID 41 (root, started 2026-12-01T10:00:00Z)" in _guard.describe(
        report.leftovers[1]
    )


def test_the_report_is_the_last_json_line_of_a_raw_tasks_output() -> None:
    """The fence is a raw task: under become its output comes through a pty (CRLF, and
    whatever su printed first)."""
    stdout = "Password: \r\n" + json.dumps({"stopped": [GHOST]}) + "\r\n"
    assert [g.pid for g in FenceReport.of({"stdout": stdout}).leftovers] == [41]


def test_a_failed_fence_names_each_ghost_and_why() -> None:
    report = FenceReport.of(_res(found=[GHOST], reason="ghost_policy is fail"))
    assert report.message() == (
        "ghost of run dead-run.0a0b0c0d still running: PID 41 (root, started "
        "2026-12-01T10:00:00Z): sh -c ./settle-payments.sh; ghost_policy is fail"
    )
    # No JSON (python3 missing on the host): its error is the reason.
    broken = FenceReport.of({"stdout": "", "stderr": "python3: not found", "rc": 127})
    assert broken.message() == "python3: not found"


def _event(kind: str, host: str, task: str, res: dict[str, Any]) -> dict[str, Any]:
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res}}


def _stats(**counts: dict[str, int]) -> dict[str, Any]:
    return {"event": "playbook_on_stats", "event_data": counts}


def test_the_fence_task_is_not_counted_and_its_leftovers_reach_the_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = EventCollector(("web-1", "web-2"), 1, logging.getLogger("t"))
    with caplog.at_level(logging.INFO):
        collector(_event("runner_on_ok", "web-1", TASK_NAME, _res(stopped=[GHOST])))
        collector(_event("runner_on_ok", "web-2", TASK_NAME, _res()))
        assert collector.progress() == 0.0  # the playbook's own tasks are what progress counts
        collector(_event("runner_on_ok", "web-1", "Deploy", {"changed": True}))
        collector(_event("runner_on_ok", "web-2", "Deploy", {}))
        collector(_stats(ok={"web-1": 2, "web-2": 2}, changed={"web-1": 1}, processed={
            "web-1": 1, "web-2": 1}))  # fmt: skip
    hosts = collector.host_results()
    assert (hosts["web-1"].ok, hosts["web-1"].changed, hosts["web-1"].status) == (1, 1, "changed")
    assert (hosts["web-2"].ok, hosts["web-2"].status) == (1, HostStatus.OK)
    assert [g.pid for g in hosts["web-1"].leftovers] == [41] and hosts["web-2"].leftovers == []
    assert "web-1 | stopped PID 41" in caplog.text


def test_a_host_that_cannot_be_fenced_fails_with_the_ghost_named() -> None:
    collector = EventCollector(("db-1",), 3, logging.getLogger("t"))
    failed = _res(found=[GHOST], reason="ghost_policy is fail") | {"rc": 3, "failed": True}
    collector(_event("runner_on_failed", "db-1", TASK_NAME, failed))
    collector(_stats(failures={"db-1": 1}, processed={"db-1": 1}))
    host = collector.host_results()["db-1"]
    assert host.status == HostStatus.FAILED and host.failure is not None
    assert host.failure.message.startswith("ghost of run dead-run.0a0b0c0d still running: PID 41")
    assert [g.stopped_by for g in host.leftovers] == [""]


def test_the_payload_counts_leftovers_by_action_and_keeps_its_shape_without() -> None:
    from datetime import UTC, datetime

    from fleetflow.results import HostResult

    ghost = Leftover.model_validate(GHOST | {"stopped_by": "fence"})
    now = datetime.now(UTC)
    result = PlaybookResult(
        playbook="site", inventory="lab", status=RunStatus.SUCCESSFUL, rc=0, started_at=now,
        finished_at=now, hosts={
            "a": HostResult(host="a", status=HostStatus.OK, leftovers=[ghost, ghost]),
            "b": HostResult(host="b", status=HostStatus.OK),
        },
    )  # fmt: skip
    payload = PlaybookFinished.of(result, {}, 0, 0).model_dump(mode="json")
    assert payload["hosts"]["a"]["leftovers"] == {"fence": 2}
    assert "leftovers" not in payload["hosts"]["b"]
    assert [row["leftovers"] for row in result.table()] == [2, 0]


def test_the_exporter_counts_leftovers_and_maps_unknown_actions() -> None:
    from datetime import UTC, datetime

    from prefect.events.schemas.events import ReceivedEvent, Resource

    from fleetflow.engine.publish import PLAYBOOK_EVENT
    from fleetflow.metrics import new_families
    from fleetflow.metrics._exporter import Exporter

    families = new_families()
    payload = {"playbook": "site", "hosts": {"a": {"leftovers": {"fence": 2, "guard": 1}},
                                             "b": {"leftovers": {"<script>": 5}}}}  # fmt: skip
    event = ReceivedEvent(
        occurred=datetime.now(UTC), received=datetime.now(UTC), event=PLAYBOOK_EVENT,
        resource=Resource({"prefect.resource.id": "fleetflow.playbook.site"}), payload=payload,
    )  # fmt: skip
    Exporter(families)._count_event(event)
    value = families.registry.get_sample_value
    assert value("fleetflow_host_leftovers_total", {"playbook": "site", "action": "fence"}) == 2
    assert value("fleetflow_host_leftovers_total", {"playbook": "site", "action": "guard"}) == 1
    assert value("fleetflow_host_leftovers_total", {"playbook": "site", "action": "other"}) == 5


# -- the host script, on real processes ------------------------------------------------

HARNESS = textwrap.dedent("""
    import json, os, subprocess, sys, time
    code, beacon_code, state = sys.argv[1], sys.argv[2], sys.argv[3]
    loop = ["sh", "-c", "while :; do sleep 0.2; done"]

    def start(marker):
        env = dict(os.environ, FLEETFLOW_RUN=marker) if marker else dict(os.environ)
        return subprocess.Popen(loop, env=env, start_new_session=True)

    def fence(token, policy, guard):
        env = dict(os.environ, FLEETFLOW_RUN=token, FLEETFLOW_GUARD_DIR=state)
        out = subprocess.run([sys.executable, "-c", code, "fence", token, policy, guard],
                             env=env, capture_output=True, text=True)
        return out.returncode, json.loads(out.stdout)

    def alive(proc):
        return proc.poll() is None

    ghost, bystander = start("dead.00000001"), start("")
    time.sleep(0.5)
    report = {"fail": fence("new.00000002", "fail", "0")}
    report["ghost_after_fail"] = alive(ghost)
    report["stop"] = fence("new.00000002", "stop", "0")
    time.sleep(0.2)
    report["ghost_after_stop"], report["bystander"] = alive(ghost), alive(bystander)
    # A guarded run: its beacon lives, then ends; the guard stops the run's work.
    beacon = subprocess.Popen([sys.executable, "-c", beacon_code, "fleetflow-beacon",
                               "run.00000003"], stdin=subprocess.PIPE)
    rc, guarded = fence("run.00000003", "stop", "1")
    work = start("run.00000003")
    time.sleep(1.5)
    report["fence_while_guarded"] = fence("late.00000004", "stop", "0")[1]
    report["work_while_beacon"] = alive(work)
    beacon.stdin.close()
    beacon.wait()
    deadline = time.monotonic() + 10
    while alive(work) and time.monotonic() < deadline:
        time.sleep(0.1)
    report["work_after_beacon"] = alive(work)
    time.sleep(0.5)
    report["next"] = fence("next.00000005", "stop", "0")[1]
    report["bystander_at_end"] = alive(bystander)
    print(json.dumps(report))
""")


@pytest.fixture(scope="module")
def host_script_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    unshare = shutil.which("unshare")
    if (
        unshare is None
        or subprocess.run(
            [unshare, "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("needs a PID namespace of its own (root, unshare)")
    state = tmp_path_factory.mktemp("guard-state")
    state.chmod(0o700)
    code = (Path(_guard.__file__).with_name("_remote_guard.py")).read_text()
    done = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-c", HARNESS, code,
         _guard.BEACON_CODE, str(state)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def test_the_fence_fails_by_policy_and_leaves_the_ghost_alone(
    host_script_run: dict[str, Any],
) -> None:
    rc, report = host_script_run["fail"]
    assert rc == 3 and "fail" in report["reason"]
    assert {g["run"] for g in report["found"]} == {"dead.00000001"}  # sh and its sleep
    assert host_script_run["ghost_after_fail"]


def test_the_fence_stops_only_marked_leftovers(host_script_run: dict[str, Any]) -> None:
    """A process of the same user with the same command line, unmarked, survives."""
    rc, report = host_script_run["stop"]
    assert rc == 0 and {g["run"] for g in report["stopped"]} == {"dead.00000001"}
    assert not host_script_run["ghost_after_stop"]
    assert host_script_run["bystander"] and host_script_run["bystander_at_end"]


def test_the_guard_stops_its_runs_work_when_the_beacon_ends(
    host_script_run: dict[str, Any],
) -> None:
    # While the run's beacon lives, its work is the run's business: no fence touches it.
    assert host_script_run["fence_while_guarded"]["stopped"] == []
    assert host_script_run["work_while_beacon"] and not host_script_run["work_after_beacon"]
    # The next run reports what the guard stopped, and why.
    records = host_script_run["next"]["records"]
    assert {r["run"] for r in records} == {"run.00000003"}
    assert {r["why"] for r in records} == {"the run's connection to the host ended"}


def test_caller_written_leftovers_never_break_a_reader() -> None:
    """Anyone with the API credential can write events and artifacts: a count that is no
    count is left out (the exporter, `fleetflow history`), the rest still reads."""
    from fleetflow.engine.publish import table_hosts, table_leftovers

    odd = {"fence": "9; DROP", "guard": True, "running": -3, "other": 2, "x": [1]}
    payload = PlaybookFinished.model_validate({"hosts": {"a": {"leftovers": odd}, "b": {
        "leftovers": "lots"}}})  # fmt: skip
    assert payload.hosts["a"].leftovers == {"other": 2} and payload.hosts["b"].leftovers == {}
    rows = [{"host": "a", "status": "ok", "leftovers": "many"},
            {"host": "b", "status": "failed", "leftovers": 3},
            {"host": "c", "status": "ok", "leftovers": True}]  # fmt: skip
    assert table_hosts(json.dumps(rows)) == {"a": "ok", "b": "failed", "c": "ok"}
    assert table_leftovers(rows) == {"b": 3}
