"""The seed's failure scenarios on the real stack: server on PostgreSQL, a worker, the lab,
alerts received by real HTTP and SMTP servers. Each asserts final states, per-host results,
the alert where one is due, and a safe rerun, and logs how long recovery took.
This module: 6 (load) and 7 (idempotency of every flow); the others are in test_faults.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetflow.lab import Lab

from ..conftest import unique_lab_name
from .faults import (
    CURRENT,
    HOLD,
    HOLD_LOG,
    all_host_rows,
    faults_stack,
    host_lines,
    report,
)
from .receivers import Inbox
from .stacks import RunningStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(
    lab: Lab, inbox: tuple[Inbox, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    with faults_stack(lab, tmp_path_factory.mktemp("faults"), inbox[1]) as running:
        yield running


# -- 6 -------------------------------------------------------------------------------

RUNS = 20


@pytest.fixture(scope="module")
def fleet50(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    fleet = Lab(unique_lab_name("f50"), inventory_dir=tmp_path_factory.mktemp("fleet50"))
    try:
        fleet.up(50)
        yield fleet
    finally:
        fleet.down()


@pytest.fixture
def stack50(
    fleet50: Lab, inbox: tuple[Inbox, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    """A stack whose `lab` environment is the 50-host fleet: deployments run on their own
    environment only (playbook/lab on lab), so the fleet gets a stack of its own."""
    with faults_stack(fleet50, tmp_path_factory.mktemp("faults50"), inbox[1]) as running:
        yield running


def test_6_twenty_runs_at_once_over_50_hosts_all_end_none_doubles_a_host(
    stack50: RunningStack, fleet50: Lab
) -> None:
    names = [h.name for h in fleet50.hosts()]
    # Runs 2k and 2k+1 share hosts 5k+1..5k+4 of block 5k..5k+4: ten pairs over 50 hosts,
    # each pair contending for its hosts, no chain of waits across pairs.
    plan = {f"r{i:02d}": names[5 * (i // 2) + i % 2 : 5 * (i // 2) + 5] for i in range(RUNS)}
    started = time.time()
    ids = {
        tag: stack50.create_run(
            "playbook/lab",
            playbook=HOLD,
            inventory=stack50.inventory,
            limit=",".join(hosts),
            extra_vars={"tag": tag, "seconds": 1},
        )
        for tag, hosts in plan.items()
    }
    runs = stack50.wait_final(*ids.values(), timeout=600)
    assert sorted(r[0] for r in runs.values()) == ["COMPLETED"] * RUNS, runs
    elapsed = max(r[2].timestamp() for r in runs.values()) - started
    for host in names:
        events = [line.split()[:2] for line in host_lines(fleet50, host, HOLD_LOG)]
        expected = sorted(tag for tag, hosts in plan.items() if host in hosts)
        # Each run exactly once per host, and never two at once: start/end pairs in a row.
        assert sorted(tag for kind, tag in events if kind == "start") == expected, host
        pairs = [events[i : i + 2] for i in range(0, len(events), 2)]
        assert all(p[0][0] == "start" and p[1] == ["end", p[0][1]] for p in pairs), (host, events)
    report("6 load: 20 runs x 50 hosts", all_final_after=elapsed)


# -- 7 -------------------------------------------------------------------------------


def _every_flow(stack: RunningStack, lab: Lab, tag: str) -> dict[str, dict[str, Any]]:
    """Parameters of a run of each deployed flow; hosts chosen so that the flows that would
    undo each other (site deploys the app's default version, rolling_update another) never
    share a host, and all can run at once."""
    web, db, batch = (h.name for h in lab.hosts())
    marker = {"path": "/var/tmp/ff-idempotent", "content": tag}
    # end_of_day closes a business date once: its settlement file, planted on the db host.
    day = (date(2030, 1, 1) + timedelta(days=int(tag) % 20000)).isoformat()
    settlement = "id,account,amount_cents\np-1,GB01,1250\n"
    inbox = "/srv/eod/inbox"
    plant = f"mkdir -p {inbox} && printf '{settlement}' > {inbox}/settlement-{day}.csv"
    assert lab.ssh(db, plant).returncode == 0
    write = {"playbook": "write_file", "name": "Write the marker",
             "limit": db, "extra_vars": marker}  # fmt: skip
    inventory = stack.inventory
    return {
        "site/lab": {"inventory": inventory, "limit": web},
        "playbook/lab": {
            "inventory": inventory,
            "playbook": write["playbook"],
            "limit": db,
            "extra_vars": marker,
        },
        "run_script/lab": {"inventory": inventory, "script": "disk_usage.sh", "hosts": db},
        "rolling_update/lab": {"inventory": inventory, "version": f"7.{tag}", "hosts": batch},
        "runbook/lab": {"inventory": inventory, "steps": [write, {"playbook": "ping"}]},
        "wait_then_run/lab": {
            "inventory": inventory,
            "playbook": write["playbook"],
            "limit": db,
            "extra_vars": marker,
            "conditions": [{"kind": "file", "path": "/etc/hostname", "timeout": 60}],
        },
        "end_of_day/lab": {"inventory": inventory, "business_date": day},
    }


# Every deployed flow twice, each round waited for up to 600 s, then the module's stack
# stopped in this test's teardown: the suite's 600 s per test (a hang guard) is too short
# for that on a loaded machine (552 s of call alone seen with other work running).
@pytest.mark.timeout(1800)
def test_7_every_flow_run_twice_changes_nothing_the_second_time(
    stack: RunningStack, lab: Lab
) -> None:
    tag = str(int(time.time()))
    flows = {p.stem for p in (Path(__file__).parents[2] / "flows").glob("[a-z]*.py")}
    cases = _every_flow(stack, lab, tag)
    assert {d.split("/")[0] for d in cases} == flows, "a flow in flows/ is not covered"
    firsts = {d: stack.create_run(d, **params) for d, params in cases.items()}
    ended = stack.wait_final(*firsts.values(), timeout=600)
    for deployment, run_id in firsts.items():
        assert ended[run_id][0] == "COMPLETED", (deployment, stack.logs(run_id)[-10:])
    seconds = {d: stack.create_run(d, **params) for d, params in cases.items()}
    stack.wait_final(*seconds.values(), timeout=600)
    for deployment, run_id in seconds.items():
        assert stack.state(run_id)[0] == "COMPLETED", deployment
        rows = all_host_rows(stack, run_id)
        assert rows and all(r["changed"] == 0 for r in rows), (deployment, rows)
        stack.wait_log(run_id, "nothing changed", timeout=20)  # may land after the run ends
    web, db, batch = (h.name for h in lab.hosts())
    assert lab.ssh(db, "cat /var/tmp/ff-idempotent").stdout.strip() == tag
    assert lab.ssh(web, "readlink /etc/localtime").stdout.strip().endswith("Etc/UTC")
    assert lab.ssh(web, "getent group ops").returncode == 0
    assert lab.ssh(web, CURRENT).stdout.strip().endswith("/releases/1.0.0")
    assert lab.ssh(batch, CURRENT).stdout.strip().endswith(f"/releases/7.{tag}")
