"""Alerts end to end: automations from the repository on a real stack, messages received
by a real HTTP server and a real SMTP server on loopback."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from fleetflow.lab import Lab

from .receivers import ALL, Inbox
from .stacks import BIN, RunningStack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
log = logging.getLogger(__name__)

CONFIG = """
work_pool: {name: fleetflow, queues: [{name: lab}]}
workers: [{name: worker-alerts, queues: [lab]}]
"""


@pytest.fixture(scope="module")
def stack(
    lab: Lab, inbox: tuple[Inbox, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    directory = tmp_path_factory.mktemp("alerts")
    with running_stack(directory, str(lab.inventory_dir), CONFIG) as running:
        running.env.update(inbox[1])
        done = running.cli(str(BIN / "fleetflow"), "automations", "apply")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "+ create fleetflow/flow-run-failed" in done.stdout
        yield running


def test_reapplying_the_automations_changes_nothing(stack: RunningStack) -> None:
    done = stack.cli(str(BIN / "fleetflow"), "automations", "apply", "--dry-run")
    assert done.returncode == 0 and "dry run: 0 changes" in done.stdout, done.stdout
    assert "= unchanged fleetflow/zombie-runs" in done.stdout
    assert "= unchanged fleetflow/stuck/site/lab" in done.stdout
    again = stack.cli(str(BIN / "fleetflow"), "automations", "apply")
    assert again.returncode == 0 and "0 changes applied" in again.stdout, again.stdout


def _run_name(stack: RunningStack, run_id: str) -> str:
    return str(stack.query("SELECT name FROM flow_run WHERE id::text = %s", run_id)[0][0])


def test_failed_run_alerts_every_channel_once_with_the_failed_host(
    stack: RunningStack, lab: Lab, inbox: tuple[Inbox, dict[str, str]]
) -> None:
    box = inbox[0]
    inventory = stack.inventory
    ok_code, ok_run, _ = stack.trigger("playbook/lab", True, playbook="ping", inventory=inventory)
    assert ok_code == 0
    code, run_id, _ = stack.trigger("playbook/lab", True, playbook="mixed", inventory=inventory)
    assert code != 0
    name = _run_name(stack, run_id)
    failed_at = stack.wait_final(run_id)[run_id][2].timestamp()
    received = box.wait_for(name, ALL, timeout=60)
    latency = max(received.values()) - failed_at
    log.warning("alert latency: %.1f s after the run failed", latency)
    assert latency < 60
    db_host = lab.hosts()[1].name  # the group `db`, where mixed.yml fails
    for channel, _, text in box.about(name):
        assert f"{db_host} (failed at 'Fail on database hosts'" in text, (channel, text)
        assert lab.hosts()[0].name not in text
    time.sleep(5)  # one incident, one message per channel: nothing more arrives
    assert sorted(c for c, _, _ in box.about(name)) == sorted(ALL)
    assert box.about(_run_name(stack, ok_run)) == [], "a successful run sent a message"
    assert "To: ops@example.org" in next(t for c, _, t in box.about(name) if c == "email")
    # Triage without opening the run: tags on the runs list, the host in the state message,
    # one line per failure in the log and no traceback.
    state_name, message, tags = _final_state(stack, run_id)
    assert state_name == "Failed" and f"failed:{db_host}" in tags
    assert lab.hosts()[0].name not in " ".join(tags)
    assert message.startswith(f"1 of {len(lab.hosts())} hosts failed in mixed.yml: ")
    assert f"{db_host} (failed at 'Fail on database hosts': " in message
    assert _traceback_lines(stack, run_id) == []


def _final_state(stack: RunningStack, run_id: str) -> tuple[str, str, list[str]]:
    (row,) = stack.query(
        "SELECT s.name, s.message, fr.tags FROM flow_run fr JOIN flow_run_state s "
        "ON s.id = fr.state_id WHERE fr.id::text = %s", run_id,
    )  # fmt: skip
    return str(row[0]), str(row[1] or ""), list(row[2])


def _traceback_lines(stack: RunningStack, run_id: str) -> list[str]:
    rows = stack.query("SELECT message FROM log WHERE flow_run_id::text = %s", run_id)
    return [str(m) for (m,) in rows if "Traceback (most recent call last)" in str(m)]


def test_a_limit_matching_no_host_is_refused_with_what_exists_and_alerts_no_one(
    stack: RunningStack, lab: Lab, inbox: tuple[Inbox, dict[str, str]]
) -> None:
    code, run_id, _ = stack.trigger(
        "playbook/lab", True, playbook="ping", inventory=stack.inventory, limit="nosuchgroup"
    )
    assert code != 0 and run_id
    assert stack.wait_final(run_id)[run_id][0] == "FAILED"
    state_name, message, tags = _final_state(stack, run_id)
    assert state_name == "Refused"
    assert message.startswith("refused: limit 'nosuchgroup' matches no host")
    assert "groups: " in message and lab.hosts()[0].name in message
    assert tags == [] or not any(t.startswith(("failed:", "unreachable:")) for t in tags)
    assert _traceback_lines(stack, run_id) == []
    time.sleep(10)  # a Failed run's alert arrives within ~2 s (see above)
    assert inbox[0].about(_run_name(stack, run_id)) == []


def test_engine_emits_an_event_per_failed_host(stack: RunningStack, lab: Lab) -> None:
    response = httpx.post(
        stack.env["PREFECT_API_URL"] + "/events/filter",
        json={"filter": {"event": {"prefix": ["fleetflow.host."]}}, "limit": 50},
        auth=tuple(stack.env["FLEETFLOW_API_AUTH"].split(":", 1)),  # type: ignore[arg-type]
        timeout=10,
    )
    events = response.json()["events"]
    failed = [e for e in events if e["event"] == "fleetflow.host.failed"]
    assert {e["resource"]["prefect.resource.name"] for e in failed} == {lab.hosts()[1].name}
    related = {r["prefect.resource.role"] for r in failed[0]["related"]}
    assert {"flow-run", "task-run"} <= related
    assert failed[0]["payload"]["task"] == "Fail on database hosts"


def test_run_no_worker_picks_up_is_late_and_alerted(
    stack: RunningStack, inbox: tuple[Inbox, dict[str, str]]
) -> None:
    stack.deploy_playbook_flow("nobody", queue="unserved")
    run_id = stack.trigger("playbook/nobody", playbook="ping", inventory=stack.inventory)[1]
    name = _run_name(stack, run_id)
    # The server marks a run Late 15 s after its scheduled time; the alert follows.
    inbox[0].wait_for(name, ALL, timeout=90)
    assert all(t.count("LATE") >= 1 and "unserved" in t for _, _, t in inbox[0].about(name))
    stack.cli(str(BIN / "prefect"), "flow-run", "cancel", run_id)
