"""run_playbook against the lab: real ansible-playbook, real SSH, real Prefect server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from fleetflow import (
    ConfigurationError,
    HostStatus,
    InventoryError,
    NoHostsMatched,
    PlaybookError,
    PlaybookFailed,
    PlaybookResult,
    RetryPolicy,
    RunStatus,
    run_playbook,
)
from fleetflow.engine._ansible import ansible_environment, ansible_tool
from fleetflow.lab import Lab
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
FIXTURES = REPO / "tests/fixtures/playbooks"


@flow
def one_run(playbook: str, inventory: str, kwargs: dict[str, Any]) -> PlaybookResult:
    return run_playbook(playbook, inventory=inventory, **kwargs)


def run(lab: Lab, playbook: str, **kwargs: Any) -> PlaybookResult:
    return one_run(playbook, str(lab.inventory_dir), kwargs)


def names(lab: Lab) -> list[str]:
    return [h.name for h in lab.hosts()]


def test_all_hosts_ok(lab: Lab) -> None:
    result = run(lab, "ping")
    assert result.status == RunStatus.SUCCESSFUL
    assert sorted(result.hosts) == names(lab)
    for host in result.hosts.values():
        assert (host.status, host.ok, host.changed, host.failed) == (HostStatus.OK, 2, 0, 0)


def _cli_recap(lab: Lab, playbook: Path) -> dict[str, dict[str, int]]:
    out = subprocess.run(
        [ansible_tool("ansible-playbook"), "-i", str(lab.inventory_dir), str(playbook)],
        capture_output=True, text=True, env=ansible_environment(REPO), cwd=REPO, check=False,
    ).stdout  # fmt: skip
    recap = {}
    for line in out.split("PLAY RECAP")[1].splitlines()[1:]:
        if ":" in line:
            host, counts = line.split(":", 1)
            recap[host.strip()] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return recap


def test_counts_equal_ansible_play_recap_and_failure_is_reported(lab: Lab) -> None:
    playbook = FIXTURES / "mixed.yml"
    db = next(h.name for h in lab.hosts() if h.group == "db")
    with pytest.raises(PlaybookFailed) as caught:
        run(lab, str(playbook))
    result = caught.value.result
    expected = _cli_recap(lab, playbook)
    assert sorted(expected) == names(lab)
    for host, counts in expected.items():
        got = result.hosts[host]
        assert {k: getattr(got, k) for k in counts} == counts, host
    assert result.hosts[db].status == HostStatus.FAILED
    assert result.hosts[db].failure is not None
    assert result.hosts[db].failure.task == "Fail on database hosts"
    assert "db hosts refuse this change" in result.hosts[db].failure.message
    assert result.failed_hosts == [db]
    assert db in str(caught.value)


def test_max_fail_percentage_tolerates_some_failures(lab: Lab) -> None:
    result = run(lab, str(FIXTURES / "mixed.yml"), max_fail_percentage=34)
    assert result.status == RunStatus.SUCCESSFUL
    assert len(result.failed_hosts) == 1


def test_unreachable_host(lab: Lab) -> None:
    victim = lab.hosts()[0].name
    lab.cut(victim)
    try:
        with pytest.raises(PlaybookFailed) as caught:
            run(lab, "ping")
    finally:
        lab.restore(victim)
    result = caught.value.result
    assert result.hosts[victim].status == HostStatus.UNREACHABLE
    assert result.hosts[victim].unreachable == 1
    assert result.hosts[victim].failure is not None
    others = [h for h in names(lab) if h != victim]
    assert all(result.hosts[h].status == HostStatus.OK for h in others)


@pytest.mark.parametrize("strategy", ["linear", "mitogen"])
@pytest.mark.parametrize("case", ["changed", "unknown"])
def test_host_key_that_does_not_match_fails_only_that_host(
    lab: Lab, tmp_path: Path, case: str, strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETFLOW_STRATEGY", strategy)  # Mitogen keeps checking keys too
    victim, other = lab.hosts()[0], lab.hosts()[1]
    lines = lab.known_hosts_path.read_text().splitlines()
    keys = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines}
    if case == "changed":  # the victim now answers with a key known_hosts does not have
        keys[victim.address] = keys[other.address]
    else:
        del keys[victim.address]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(f"{addr} {key}\n" for addr, key in keys.items()))
    inventory = tmp_path / "inventory"
    shutil.copytree(lab.inventory_dir, inventory)
    hosts = inventory / "hosts.yml"
    hosts.write_text(hosts.read_text().replace(str(lab.known_hosts_path), str(known_hosts)))
    result = one_run("ping", str(inventory), {"raise_on_failure": False})
    failure = result.hosts[victim.name].failure
    assert result.hosts[victim.name].status == HostStatus.UNREACHABLE and failure is not None
    expected = f"host key {case}" if strategy == "linear" else "host key changed or unknown"
    assert failure.message.startswith(expected), failure.message
    assert all(result.hosts[h.name].status == HostStatus.OK for h in lab.hosts()[1:])


def test_retry_reruns_only_the_failed_host(lab: Lab) -> None:
    tag = uuid.uuid4().hex[:8]
    flaky = lab.hosts()[1].name
    assert lab.ssh(flaky, "touch /etc/ff-fail-once").returncode == 0
    result = run(
        lab,
        str(FIXTURES / "fail_once.yml"),
        extra_vars={"tag": tag},
        retry=RetryPolicy(attempts=3, delay_seconds=0.5),
    )
    assert result.status == RunStatus.SUCCESSFUL
    assert result.attempts == 2
    assert result.hosts[flaky].attempts == 2
    assert result.hosts[flaky].status == HostStatus.CHANGED
    for host in names(lab):
        lines = lab.ssh(host, f"wc -l < /root/ff-attempts-{tag}").stdout.strip()
        assert lines == ("2" if host == flaky else "1"), host


def test_check_mode_changes_nothing_then_second_run_reports_no_change(lab: Lab) -> None:
    path = f"/root/ff-check-{uuid.uuid4().hex[:8]}"
    args = {"extra_vars": {"path": path, "content": "hello"}}
    planned = run(lab, str(FIXTURES / "write_file.yml"), check=True, **args)
    assert planned.check and planned.changed_hosts == names(lab)
    assert all(lab.ssh(h, f"test -e {path}").returncode == 1 for h in names(lab))
    first = run(lab, str(FIXTURES / "write_file.yml"), **args)
    assert first.changed_hosts == names(lab)
    assert all(lab.ssh(h, f"cat {path}").stdout == "hello\n" for h in names(lab))
    second = run(lab, str(FIXTURES / "write_file.yml"), **args)
    assert second.changed_hosts == []
    assert all(r.changed == 0 and r.status == HostStatus.OK for r in second.hosts.values())


def test_two_concurrent_runs_in_one_process_do_not_interfere(lab: Lab) -> None:
    first, second = names(lab)[:2]
    tag = uuid.uuid4().hex[:8]

    @flow
    def both() -> tuple[PlaybookResult, PlaybookResult]:
        a = run_playbook.submit(
            str(FIXTURES / "sleep.yml"),
            inventory=str(lab.inventory_dir),
            limit=first,
            extra_vars={"tag": f"a{tag}", "seconds": 3},
        )
        b = run_playbook.submit(
            str(FIXTURES / "sleep.yml"),
            inventory=str(lab.inventory_dir),
            limit=second,
            extra_vars={"tag": f"b{tag}", "seconds": 3},
        )
        return a.result(), b.result()

    a, b = both()
    assert list(a.hosts) == [first] and list(b.hosts) == [second]
    assert a.hosts[first].changed == 2 and b.hosts[second].changed == 2
    assert lab.ssh(first, f"test -e /root/ff-sleep-ended-a{tag}").returncode == 0
    assert lab.ssh(second, f"test -e /root/ff-sleep-ended-b{tag}").returncode == 0
    assert lab.ssh(first, f"test -e /root/ff-sleep-ended-b{tag}").returncode == 1


def test_outputs_published_by_the_playbook_are_collected(lab: Lab) -> None:
    result = run(
        lab,
        "run_script",
        extra_vars={"script_name": "service_check.sh", "script_args": []},
    )
    for host in result.hosts.values():
        assert host.outputs["rc"] == 0
        assert host.outputs["stdout"].startswith("healthy")


@pytest.mark.parametrize(
    ("playbook", "inventory", "limit", "error", "message"),
    [
        ("no-such-playbook", None, None, PlaybookError, "not found"),
        (str(FIXTURES / "broken.yml"), None, None, PlaybookError, "YAML"),
        ("ping", None, "no-such-host", NoHostsMatched, "matches no host"),
        ("ping", "no-such-env", None, InventoryError, "unknown inventory"),
    ],
)
def test_bad_input_fails_before_any_host_is_touched(
    lab: Lab, playbook: str, inventory: str | None, limit: str | None,
    error: type[ConfigurationError], message: str,
) -> None:  # fmt: skip
    with pytest.raises(error, match=message):
        one_run(playbook, inventory or str(lab.inventory_dir), {"limit": limit})


def test_unparsable_inventory_is_refused(lab: Lab, tmp_path: Path) -> None:
    broken = tmp_path / "hosts.yml"
    broken.write_text("all: [this is: not valid\n")
    with pytest.raises(InventoryError, match="cannot be used"):
        one_run("ping", str(broken), {})


def test_artifacts_and_live_logs_reach_the_server_and_nothing_stays_on_disk(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    monkeypatch.setenv("FLEETFLOW_RUN_DIR", str(run_dir))
    state = one_run("ping", str(lab.inventory_dir), {}, return_state=True)
    assert state.is_completed()
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    by_type = {a.type: a for a in artifacts}
    table = by_type["table"]
    assert table.key == f"hosts-ping-{lab.inventory_dir.name}".lower().replace("_", "-")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert sorted(r["host"] for r in rows) == names(lab)
    assert {r["status"] for r in rows} == {"ok"}
    assert by_type["progress"].data == 100.0
    # Logs are shipped in batches by a background worker: poll until the last one arrives.
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    deadline = time.monotonic() + 20
    while True:
        with get_client(sync_client=True) as client:
            records = client.read_logs(log_filter=log_filter)
        # A record carries the lines that arrived within a quarter second.
        lines = [line for log in records for line in log.message.splitlines()]
        if any("PLAY RECAP" in line for line in lines) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "TASK [Ping the host over SSH]" in lines
    assert any(m.startswith(f"{names(lab)[0]} | ok | Ping the host") for m in lines), lines
    # The private data dir (with runner's env dump) is gone once the run ends.
    assert list(run_dir.iterdir()) == []


def test_timeout_kills_the_run(lab: Lab) -> None:
    from fleetflow import PlaybookTimedOut

    tag = uuid.uuid4().hex[:8]
    host = names(lab)[0]
    started = time.monotonic()
    with pytest.raises(PlaybookTimedOut) as caught:
        run(lab, str(FIXTURES / "sleep.yml"), limit=host, timeout=4,
            extra_vars={"tag": tag, "seconds": 120})  # fmt: skip
    elapsed = time.monotonic() - started
    assert caught.value.result.status == RunStatus.TIMED_OUT
    # Ended long before the command would have (not a speed figure: the machine may be busy).
    assert elapsed < 120, elapsed
    assert lab.ssh(host, f"test -e /root/ff-sleep-started-{tag}").returncode == 0
    assert lab.ssh(host, f"test -e /root/ff-sleep-ended-{tag}").returncode == 1
    # This lab's only: another test process may run sleep.yml on its own lab meanwhile.
    mine = f"{re.escape(str(lab.inventory_dir))}.*{re.escape(str(FIXTURES / 'sleep.yml'))}"
    leftovers = subprocess.run(["pgrep", "-f", mine], capture_output=True, text=True,
                               check=False)  # fmt: skip
    assert leftovers.stdout == ""
