"""outcome: a flow's failure message names the failed hosts and their reasons, bounded,
and the decorator keeps the flow's parameters (Prefect builds the schema from them)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from fleetflow.engine.flowrun import is_host_tag
from fleetflow.flowkit.outcome import MAX_HOSTS_NAMED, base_name, failure_message, reports_outcome
from fleetflow.flowkit.params import Inventory, Playbook, Retries
from fleetflow.results import HostFailure, HostResult, HostStatus, PlaybookResult, RunStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _result(
    statuses: dict[str, HostStatus], reason: str = "rc=1; stderr: disk full"
) -> PlaybookResult:
    hosts = {
        host: HostResult(
            host=host,
            status=status,
            failure=HostFailure(task="Run the script", message=reason)
            if status in (HostStatus.FAILED, HostStatus.UNREACHABLE)
            else None,
        )
        for host, status in statuses.items()
    }
    failed = any(h.failure for h in hosts.values())
    return PlaybookResult(
        playbook="run_script.yml", inventory="lab", rc=2 if failed else 0,
        status=RunStatus.FAILED if failed else RunStatus.SUCCESSFUL,
        started_at=T0, finished_at=T0, hosts=hosts, message="long engine text" if failed else "",
    )  # fmt: skip


def test_the_message_names_each_failed_host_with_its_task_and_reason() -> None:
    result = _result(
        {"web-01": HostStatus.OK, "web-02": HostStatus.UNREACHABLE, "web-03": HostStatus.FAILED}
    )
    assert failure_message(result) == (
        "2 of 3 hosts failed in run_script.yml: "
        "web-02 (unreachable at 'Run the script': rc=1; stderr: disk full); "
        "web-03 (failed at 'Run the script': rc=1; stderr: disk full)"
    )


def test_many_failed_hosts_are_named_up_to_a_few_then_counted() -> None:
    result = _result({f"web-{i:02}": HostStatus.FAILED for i in range(1, 11)})
    message = failure_message(result)
    assert message.startswith("10 of 10 hosts failed in run_script.yml: web-01 (failed")
    assert message.endswith(f"; and {10 - MAX_HOSTS_NAMED} more")
    assert "web-04" not in message


def test_a_long_reason_is_cut_and_kept_on_one_line() -> None:
    result = _result({"web-01": HostStatus.FAILED}, reason="line one\nline two " + "x" * 5000)
    message = failure_message(result)
    assert "\n" not in message and len(message) < 300
    assert "line one line two" in message and message.endswith("\u2026)")


def test_a_run_that_failed_without_failed_hosts_keeps_the_engines_message() -> None:
    result = _result({"web-01": HostStatus.OK}).model_copy(
        update={"status": RunStatus.TIMED_OUT, "message": "timed out after 4 s and was killed"}
    )
    assert failure_message(result) == "timed out after 4 s and was killed"


def test_the_decorated_flow_keeps_its_parameters_and_their_constraints() -> None:
    @flow(name="outcome-sample")
    @reports_outcome
    def sample(playbook: Playbook, inventory: Inventory = "lab", retries: Retries = 0) -> str:
        """Sample."""
        return playbook

    schema = sample.parameters.model_dump()
    assert schema["required"] == ["playbook"]
    assert "ping" in schema["properties"]["playbook"]["enum"]
    assert schema["properties"]["retries"]["maximum"] == 5
    assert sample.description == "Sample."


def test_a_retry_finds_the_runs_own_name_and_the_outcome_tags() -> None:
    named = "crimson-fox: 1 of 3 hosts failed in site.yml: web-01 (failed at 'x': y: z)"
    assert base_name(named) == "crimson-fox"
    assert base_name("crimson-fox") == "crimson-fox"
    assert [t for t in ["nightly", "failed:web-01", "unreachable:db-01", "failed:+2 more"]
            if not is_host_tag(t)] == ["nightly"]  # fmt: skip
