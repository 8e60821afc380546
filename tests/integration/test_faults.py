"""The seed's failure scenarios on the real stack: server on PostgreSQL, a worker, the lab,
alerts received by real HTTP and SMTP servers. Each asserts final states, per-host results,
the alert where one is due, and a safe rerun, and logs how long recovery took.
Scenarios 6 and 7 (load, idempotency) are in test_faults_load.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetflow.lab import Lab
from fleetflow.stack._procs import processes_marked

from .faults import (
    BEATS,
    HOLD,
    HOLD_LOG,
    LONG,
    LONG_LOG,
    TICKS,
    TICKS_LOG,
    beats_logged,
    faults_stack,
    host_lines,
    host_pids,
    host_rows,
    kill_on_host,
    long_lines,
    new_tag,
    quiet_after,
    report,
    run_name,
    wait_on_host,
    wait_state,
)
from .receivers import ALL, Inbox
from .stacks import BIN, RunningStack, lab_ansible

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(
    lab: Lab, inbox: tuple[Inbox, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    with faults_stack(lab, tmp_path_factory.mktemp("faults"), inbox[1]) as running:
        yield running


# -- 1 -------------------------------------------------------------------------------


def test_1_network_cut_fails_only_that_host_and_its_retry_succeeds(
    stack: RunningStack, lab: Lab, inbox: tuple[Inbox, dict[str, str]]
) -> None:
    tag, victim = new_tag(), lab.hosts()[2].name
    run_id = stack.create_run(
        "playbook/lab", playbook=HOLD, inventory=stack.inventory, retries=1, retry_delay=10,
        extra_vars={"tag": tag, "seconds": 6},
    )  # fmt: skip
    wait_on_host(lab, victim, HOLD_LOG, f"start {tag}")
    lab.cut(victim)
    cut_at = time.time()
    try:
        stack.wait_log(run_id, f"retrying only {victim}", timeout=120)
        declared = time.time() - cut_at
    finally:
        lab.restore(victim)
    restored_at = time.time()
    ended = wait_state(stack, run_id, "COMPLETED")
    hosts = host_rows(stack, run_id)
    assert hosts[victim]["attempts"] == 2 and hosts[victim]["status"] == "changed"
    for host in lab.hosts():
        lines = [x.split()[0] for x in host_lines(lab, host.name, HOLD_LOG) if f" {tag} " in x]
        expected = ["start", "start", "end"] if host.name == victim else ["start", "end"]
        assert lines == expected, (host.name, lines)  # the others ran once, not again
        if host.name != victim:
            assert hosts[host.name]["attempts"] == 1
    time.sleep(3)
    assert inbox[0].about(run_name(stack, run_id)) == [], "a run that recovered was alerted"
    report("1 network cut", unreachable_after_cut=declared, restore_to_done=ended - restored_at)


# -- 2 -------------------------------------------------------------------------------


def test_2a_script_failing_on_one_host_fails_it_alone_alerts_and_reruns_clean(
    stack: RunningStack, lab: Lab, inbox: tuple[Inbox, dict[str, str]]
) -> None:
    broken = lab.hosts()[1].name
    mark = "mkdir -p /etc/fleetflow && echo bad-disk > /etc/fleetflow/unhealthy"
    assert lab.ssh(broken, mark).returncode == 0
    try:
        run_id = stack.create_run(
            "run_script/lab", script="service_check.sh", inventory=stack.inventory
        )
        failed_at = wait_state(stack, run_id, "FAILED")
    finally:
        lab.ssh(broken, "rm -f /etc/fleetflow/unhealthy")
    hosts = host_rows(stack, run_id)
    assert hosts[broken]["status"] == "failed"
    assert "service_check.sh exited 3: unhealthy: bad-disk" in hosts[broken]["failure"]
    assert all(r["status"] != "failed" for h, r in hosts.items() if h != broken)
    received = inbox[0].wait_for(run_name(stack, run_id), ALL, timeout=60)
    messages = inbox[0].about(run_name(stack, run_id))
    assert all(
        f"{broken} (failed at 'Fail the host when the script failed'" in t for _, _, t in messages
    ), messages
    rerun = stack.create_run("run_script/lab", script="service_check.sh", inventory=stack.inventory)
    wait_state(stack, rerun, "COMPLETED")
    assert all(r["status"] in ("ok", "changed") for r in host_rows(stack, rerun).values())
    report("2a script exits non-zero", alert_after_failure=max(received.values()) - failed_at)


def test_2b_missing_file_fails_every_host_with_its_path_and_reruns_once_added(
    stack: RunningStack, lab: Lab, inbox: tuple[Inbox, dict[str, str]], tmp_path: Path
) -> None:
    source = tmp_path / "app.conf"
    params = {"playbook": "needs_file", "inventory": stack.inventory,
              "extra_vars": {"source": str(source)}}  # fmt: skip
    run_id = stack.create_run("playbook/lab", **params)
    failed_at = wait_state(stack, run_id, "FAILED")
    for host, row in host_rows(stack, run_id).items():
        assert row["status"] == "failed", host
        assert "Copy the file to the hosts" in row["failure"] and str(source) in row["failure"]
    received = inbox[0].wait_for(run_name(stack, run_id), ALL, timeout=60)
    source.write_text(f"setting = {new_tag()}\n")
    rerun = stack.create_run("playbook/lab", **params)
    wait_state(stack, rerun, "COMPLETED")
    for host in lab.hosts():
        assert lab.ssh(host.name, "cat /var/tmp/ff-needed.conf").stdout == source.read_text()
    again = stack.create_run("playbook/lab", **params)
    wait_state(stack, again, "COMPLETED")
    assert all(r["changed"] == 0 for r in host_rows(stack, again).values())
    report("2b missing file", alert_after_failure=max(received.values()) - failed_at)


# -- 3 -------------------------------------------------------------------------------


def _kill_worker_side(stack: RunningStack, spare: str) -> list[int]:
    """SIGKILL the worker, its launcher and flow-run processes, sparing processes whose
    command line contains `spare` (so the test can see what becomes of them)."""
    state = json.loads((stack.directory / "stack.json").read_text())
    server = next(p["pid"] for p in state["processes"] if p["role"] == "server")
    spared = []
    for pid in processes_marked(str(stack.directory)):
        cmdline = _cmdline(pid)
        if pid == server or "prefect server" in cmdline or "uvicorn" in cmdline:
            continue
        if spare in cmdline or cmdline.startswith("ssh"):
            spared.append(pid)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return spared


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_3_killed_worker_run_is_crashed_alerted_unlocked_and_rerun(
    stack: RunningStack, lab: Lab, inbox: tuple[Inbox, dict[str, str]]
) -> None:
    tag, host = new_tag(), lab.hosts()[0].name
    run_id = stack.create_run(
        "playbook/lab", playbook=TICKS, inventory=stack.inventory, limit=host,
        extra_vars={"tag": tag, "count": 600},
    )  # fmt: skip
    wait_on_host(lab, host, TICKS_LOG, f"tick {tag} 3")
    running = lab_ansible(lab.inventory_dir, "ticks.yml")
    orphans = sorted({*_kill_worker_side(stack, spare="ticks.yml"), *running})
    killed_at = time.time()
    try:
        assert orphans, "ansible-playbook was not running"
        deadline = time.monotonic() + 10  # its run gone, ansible and its workers must die
        while alive := [f"{p}: {_cmdline(p)[:150]}" for p in orphans if "ticks.yml" in _cmdline(p)]:
            assert time.monotonic() < deadline, f"orphaned ansible lives on: {alive}"
            time.sleep(0.2)
        ticks = len([x for x in host_lines(lab, host, TICKS_LOG) if tag in x])
        time.sleep(5)
        assert len([x for x in host_lines(lab, host, TICKS_LOG) if tag in x]) == ticks

        crashed_at = wait_state(stack, run_id, "CRASHED", timeout=300)
        assert "fleetflow/zombie-runs" in stack.state(run_id)[2]
        received = inbox[0].wait_for(run_name(stack, run_id), ALL, timeout=60)
        assert all("CRASHED" in t for _, _, t in inbox[0].about(run_name(stack, run_id)))
    finally:
        stack.up()  # the worker and its launcher come back, whatever happened above
    # The host's lock lease runs out (no later than 120 s after the kill); then it runs.
    rerun = stack.create_run(
        "playbook/lab", playbook=TICKS, inventory=stack.inventory, limit=host,
        extra_vars={"tag": f"{tag}-rerun", "count": 2},
    )  # fmt: skip
    done_at = wait_state(stack, rerun, "COMPLETED", timeout=300)
    assert host_rows(stack, rerun)[host]["status"] == "changed"
    alerted_at = max(received.values())
    report(
        "3 worker SIGKILL", crashed_after_kill=crashed_at - killed_at,
        alert_after_kill=alerted_at - killed_at, rerun_done_after_kill=done_at - killed_at,
    )  # fmt: skip


# -- 4, 5 ----------------------------------------------------------------------------


def _restart_server(stack: RunningStack) -> float:
    """SIGTERM the server's process group, then `fleetflow stack up`; the seconds it was down."""
    state = json.loads((stack.directory / "stack.json").read_text())
    server = next(p["pid"] for p in state["processes"] if p["role"] == "server")
    down_at = time.monotonic()
    os.killpg(server, signal.SIGTERM)
    while Path(f"/proc/{server}").exists() and "Z" not in _proc_state(server):
        time.sleep(0.1)
    up = stack.up()
    # The database outlived the server: its schema is current, so no migration ran.
    assert "schema current" in up.stderr and "migrat" not in up.stderr, up.stderr
    return time.monotonic() - down_at


def _proc_state(pid: int) -> str:
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2]
    return "Z"


def test_4_server_restart_mid_run_loses_neither_the_run_nor_its_logs(
    stack: RunningStack, lab: Lab
) -> None:
    run_id = stack.create_run("playbook/lab", playbook=BEATS, inventory=stack.inventory)
    stack.wait_log(run_id, "| ok | Beat 2")
    downtime = _restart_server(stack)
    back_at = time.time()
    ended = wait_state(stack, run_id, "COMPLETED")
    beats = beats_logged(stack, run_id, 15 * len(lab.hosts()))
    assert beats == 15 * len(lab.hosts()), f"server down {downtime:.0f} s"
    assert all(r["ok"] == 15 for r in host_rows(stack, run_id).values())
    rerun = stack.create_run("playbook/lab", playbook="ping", inventory=stack.inventory)
    wait_state(stack, rerun, "COMPLETED")
    report("4 server restart", server_down=downtime, run_done_after_restart=ended - back_at)


def _pg_cluster() -> list[str]:
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True)
    version, name = next(line.split()[:2] for line in listing.stdout.splitlines() if "5432" in line)
    return [version, name]


@pytest.mark.exclusive  # every other test's server shares this PostgreSQL
def test_5_postgres_restart_mid_run_recovers_without_manual_steps(
    stack: RunningStack, lab: Lab
) -> None:
    run_id = stack.create_run("playbook/lab", playbook=BEATS, inventory=stack.inventory)
    stack.wait_log(run_id, "| ok | Beat 2")
    started = time.monotonic()
    subprocess.run(["pg_ctlcluster", *_pg_cluster(), "restart"], check=True, timeout=120)
    pg_down, back_at = time.monotonic() - started, time.time()
    ended = wait_state(stack, run_id, "COMPLETED")
    assert beats_logged(stack, run_id, 15 * len(lab.hosts())) == 15 * len(lab.hosts())
    rerun = stack.create_run("playbook/lab", playbook="ping", inventory=stack.inventory)
    wait_state(stack, rerun, "COMPLETED")
    report("5 PostgreSQL restart", postgres_restart=pg_down, run_done_after=ended - back_at)


# -- 8 -------------------------------------------------------------------------------


def test_8_failed_runbook_retried_resumes_at_the_failed_step(stack: RunningStack, lab: Lab) -> None:
    tag = new_tag()
    ready = f"/var/tmp/ff-ready-{tag}"
    steps = [{"playbook": "step", "name": f"Step {n}", "extra_vars": {"tag": tag, "step": n}}
             for n in range(1, 5)]  # fmt: skip
    steps[2]["extra_vars"]["require"] = ready  # type: ignore[index]
    run_id = stack.create_run("runbook/lab", inventory=stack.inventory, steps=steps)
    wait_state(stack, run_id, "FAILED")
    assert "to resume at step 3" in stack.state(run_id)[2]
    for host in lab.hosts():
        assert [x for x in host_lines(lab, host.name, "/var/tmp/ff-runbook.log") if tag in x] == [
            f"{tag} 1",
            f"{tag} 2",
        ]
        lab.ssh(host.name, f"touch {ready}")
    retried_at = time.time()
    retry = stack.cli(str(BIN / "prefect"), "flow-run", "retry", run_id)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    ended = wait_state(stack, run_id, "COMPLETED")
    for host in lab.hosts():
        done = [x for x in host_lines(lab, host.name, "/var/tmp/ff-runbook.log") if tag in x]
        assert done == [f"{tag} {n}" for n in range(1, 5)], (host.name, done)
    logs = stack.logs(run_id)
    for n in (1, 2):
        assert any(f"step {n} (Step {n}) succeeded in an earlier attempt" in x for x in logs)
    report("8 resume", retry_to_done=ended - retried_at)


# -- 9, 10: remote work stops with its run (#26) --------------------------------------


def test_9_cancel_stops_the_command_on_the_host_and_nothing_else(
    stack: RunningStack, lab: Lab
) -> None:
    """One long remote command, canceled: the host is quiet within 10 s; the daemon the
    playbook started on purpose and a look-alike process of the same user live on."""
    tag, host = new_tag(), lab.hosts()[0].name
    twin = f"while :; do echo line {tag}-twin x >> {LONG_LOG}; sleep 1; done"
    lab.ssh(host, f"nohup sh -c '{twin}' >/dev/null 2>&1 &")
    try:
        run_id = stack.create_run(
            "playbook/lab", playbook=LONG, inventory=stack.inventory, limit=host,
            extra_vars={"tag": tag, "seconds": 300},
        )  # fmt: skip
        wait_on_host(lab, host, LONG_LOG, f"line {tag} 3 ")
        cancel = stack.cli(str(BIN / "prefect"), "flow-run", "cancel", run_id)
        canceled_at = time.monotonic()
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        quiet = quiet_after(lab, host, tag, since=canceled_at)
        assert quiet <= 10, f"lines kept coming {quiet:.1f} s after the cancel"
        wait_state(stack, run_id, "CANCELLED")
        assert host_pids(lab, host, f"ff-daemon-{tag}"), "the playbook's daemon was stopped"
        twin_lines = long_lines(lab, host, f"{tag}-twin")
        time.sleep(2)
        assert long_lines(lab, host, f"{tag}-twin") > twin_lines, "the look-alike was stopped"
    finally:
        kill_on_host(lab, host, f"ff-daemon-{tag}", f"line {tag}-twin")
    report("9 cancel", host_quiet_after_cancel=quiet)


# Kills the host's guards (SIGKILL, as an OOM kill would).
KILL_GUARDS = (
    "for f in /proc/[0-9]*/environ; do grep -qa FLEETFLOW_GUARD= $f 2>/dev/null && "
    "kill -9 $(echo $f | cut -d/ -f3); done; true"
)


def test_10_killed_worker_side_stops_remote_commands_and_the_next_run_fences(
    stack: RunningStack, lab: Lab
) -> None:
    """Worker, launcher and flow-run processes SIGKILLed while one long command runs on
    each of three hosts: a reachable one; one cut off the network (its guard hears no
    heartbeat: as when the worker machine dies); one cut off whose guard is gone too.
    The first two are quiet within 15 s; the third's command runs on until the next run
    on that host (started as soon as the lock is freed: the lock is no evidence) fences
    it before it starts, and says so in its log, its hosts table and `fleetflow history`."""
    tag = new_tag()
    silent, reach, cut = (host.name for host in lab.hosts()[:3])
    runs = {
        host: stack.create_run(
            "playbook/lab",
            playbook=LONG,
            inventory=stack.inventory,
            limit=host,
            extra_vars={"tag": f"{tag}-{host}", "seconds": 300, "use_su": host == reach},
        )
        for host in (reach, cut, silent)
    }
    for host in runs:
        wait_on_host(lab, host, LONG_LOG, f"line {tag}-{host} 3 ")
    assert lab.ssh(cut, KILL_GUARDS).returncode == 0
    lab.cut(cut)
    lab.cut(silent)
    try:
        _kill_worker_side(stack, spare="\0")
        killed_at = time.monotonic()
        quiet = quiet_after(lab, reach, f"{tag}-{reach}", since=killed_at)
        assert quiet <= 15, f"lines kept coming {quiet:.1f} s after the kill"
        alone = quiet_after(lab, silent, f"{tag}-{silent}", since=killed_at, on_disk=True)
        assert alone <= 15, f"the cut host wrote on {alone:.1f} s after the kill"
    finally:
        lab.restore(cut)
        lab.restore(silent)
        stack.up()
    before = long_lines(lab, cut, f"{tag}-{cut}")
    time.sleep(2)
    assert long_lines(lab, cut, f"{tag}-{cut}") > before, "the cut host's leftover is gone"
    # Its lock would free the host 120 s after the kill; an operator frees it now.
    stack.api("DELETE", f"/v2/concurrency_limits/fleetflow-host:{cut}")
    fenced_at = time.monotonic()
    rerun = stack.create_run(
        "playbook/lab", playbook=LONG, inventory=stack.inventory, limit=cut,
        extra_vars={"tag": f"{tag}-rerun", "seconds": 1},
    )  # fmt: skip
    wait_state(stack, rerun, "COMPLETED")
    assert quiet_after(lab, cut, f"{tag}-{cut}", since=fenced_at) < 60
    assert host_rows(stack, rerun)[cut]["leftovers"] >= 1
    stopped = [x for x in stack.logs(rerun) if "stopped PID" in x and f"{tag}-{cut}" in x]
    assert stopped, "the rerun's log does not say what it stopped"
    history = stack.cli(str(BIN / "fleetflow"), "history", "--limit", "3")
    assert f"leftovers of earlier runs (stopped, or the host failed): {cut}=" in history.stdout
    for host, run_id in runs.items():
        wait_state(stack, run_id, "CRASHED", timeout=300)
        kill_on_host(lab, host, f"ff-daemon-{tag}")
    report("10 worker SIGKILL", host_quiet_after_kill=quiet, cut_host_quiet_after_kill=alone)
