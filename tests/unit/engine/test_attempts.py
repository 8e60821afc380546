"""The engine's decisions, driven by a fake runner that replays events."""

from __future__ import annotations

import logging
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest

import fleetflow
from fleetflow.engine._attempts import execute
from fleetflow.engine._collector import EventCollector, failure_message
from fleetflow.engine._runner import RunnerOutcome
from fleetflow.engine.inventory import Preflight
from fleetflow.engine.request import RunRequest
from fleetflow.engine.retry import RetryPolicy
from fleetflow.exceptions import ConfigurationError, PlaybookFailed
from fleetflow.results import HostStatus, PlaybookResult, RunStatus

LOG = logging.getLogger("test")
HOSTS = ("a", "b", "c")


def plan(hosts: tuple[str, ...] = HOSTS) -> Preflight:
    return Preflight(Path("/p/site.yml"), Path("/inv"), hosts, task_count=2)


def request(**kwargs: Any) -> RunRequest:
    return RunRequest(playbook="site", inventory="lab", project_dir=Path("/p"), **kwargs)


def stats(**per_host: dict[str, int]) -> dict[str, Any]:
    keys = ("ok", "changed", "dark", "failures", "skipped", "rescued", "ignored", "processed")
    data: dict[str, dict[str, int]] = {k: {} for k in keys}
    for host, counts in per_host.items():
        data["processed"][host] = 1
        for key, value in counts.items():
            data[key][host] = value
    return {"event": "playbook_on_stats", "event_data": data}


def result_event(kind: str, host: str, task: str = "t", **res: Any) -> dict[str, Any]:
    return {
        "event": kind,
        "created": "2026-11-23T10:00:00+00:00",
        "event_data": {"host": host, "task": task, "res": res},
    }


class FakeRunner:
    """Replays one scripted attempt per call and records what it was asked."""

    def __init__(self, attempts: list[tuple[list[dict[str, Any]], RunnerOutcome]]) -> None:
        self.attempts = attempts
        self.requests: list[RunRequest] = []

    def __call__(self, req: RunRequest, on_event: Any, cancel: threading.Event) -> RunnerOutcome:
        self.requests.append(req)
        events, outcome = self.attempts[len(self.requests) - 1]
        for event in events:
            on_event(event)
        return outcome


OK = RunnerOutcome("successful", 0, "")
FAILED = RunnerOutcome("failed", 2, "")


def test_all_ok() -> None:
    runner = FakeRunner([([stats(a={"ok": 2}, b={"ok": 2}, c={"ok": 2})], OK)])
    result = execute(request(), plan(), runner, LOG)
    assert result.status == RunStatus.SUCCESSFUL
    assert {h.status for h in result.hosts.values()} == {HostStatus.OK}
    assert runner.requests[0].forks == 3  # sized to the fleet, not Ansible's 5


def test_failure_carries_task_and_message() -> None:
    events = [
        result_event("runner_on_failed", "b", task="Install", msg="no package foo"),
        stats(a={"ok": 2}, b={"ok": 1, "failures": 1}, c={"ok": 2, "changed": 1}),
    ]
    result = execute(request(), plan(), FakeRunner([(events, FAILED)]), LOG)
    assert result.status == RunStatus.FAILED
    assert result.hosts["b"].status == HostStatus.FAILED
    assert result.hosts["b"].failure is not None
    assert result.hosts["b"].failure.task == "Install"
    assert result.hosts["c"].status == HostStatus.CHANGED
    assert "b failed at 'Install': no package foo" in result.message


def test_ignored_failure_does_not_fail_the_host() -> None:
    event = result_event("runner_on_failed", "a", msg="boom")
    event["event_data"]["ignore_errors"] = True
    events = [event, stats(a={"ok": 1, "ignored": 1}, b={"ok": 1}, c={"ok": 1})]
    result = execute(request(), plan(), FakeRunner([(events, OK)]), LOG)
    assert result.status == RunStatus.SUCCESSFUL
    assert result.hosts["a"].failure is None and result.hosts["a"].ignored == 1


def test_retry_targets_only_failed_hosts_and_merges() -> None:
    first = [
        result_event("runner_on_unreachable", "c", msg="timed out"),
        stats(a={"ok": 2}, b={"ok": 2}, c={"dark": 1}),
    ]
    second = [stats(c={"ok": 2, "changed": 1})]
    runner = FakeRunner([(first, RunnerOutcome("failed", 4, "")), (second, OK)])
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, delay_seconds=7)
    result = execute(request(retry=policy), plan(), runner, LOG, sleep=sleeps.append)
    assert [r.limit for r in runner.requests] == [None, "c"]
    assert sleeps == [7]
    assert result.status == RunStatus.SUCCESSFUL
    assert result.attempts == 2
    assert (result.hosts["c"].status, result.hosts["c"].attempts) == (HostStatus.CHANGED, 2)
    assert result.hosts["a"].attempts == 1


def test_retries_stop_after_the_policy_attempts() -> None:
    failing = ([stats(a={"ok": 1}, b={"failures": 1}, c={"ok": 1})], FAILED)
    failing_b = ([stats(b={"failures": 1})], FAILED)
    runner = FakeRunner([failing, failing_b, failing_b])
    result = execute(request(retry=RetryPolicy(attempts=3, delay_seconds=1)), plan(), runner,
                     LOG, sleep=lambda s: None)  # fmt: skip
    assert len(runner.requests) == 3
    assert result.status == RunStatus.FAILED and result.hosts["b"].attempts == 3


def test_playbook_error_is_not_retried() -> None:
    """rc 1 with no recap (e.g. an undefined variable) would fail the same way again."""
    runner = FakeRunner([([], RunnerOutcome("failed", 1, "ERROR! 'x' is undefined"))] * 2)
    result = execute(request(retry=RetryPolicy(attempts=2)), plan(), runner, LOG,
                     sleep=lambda s: None)  # fmt: skip
    assert len(runner.requests) == 1
    assert result.status == RunStatus.FAILED
    assert "'x' is undefined" in result.message


@pytest.mark.parametrize("rc", [2, 4])
def test_a_failure_exit_without_a_failed_host_fails_the_run(rc: int) -> None:
    """ansible-playbook's 4 is also its parser error (a vaulted inventory without the
    password): no host ran, every host is skipped, and that is no success."""
    tail = "[ERROR]: Attempting to decrypt but no vault secrets found"
    runner = FakeRunner([([], RunnerOutcome("failed", rc, tail))] * 2)
    result = execute(request(retry=RetryPolicy(attempts=2)), plan(), runner, LOG,
                     sleep=lambda s: None)  # fmt: skip
    assert result.status == RunStatus.FAILED and len(runner.requests) == 1
    assert f"exited {rc} with no host failed or unreachable" in result.message
    assert "no vault secrets found" in result.message


@pytest.mark.parametrize(("status", "expected"), [("timeout", RunStatus.TIMED_OUT),
                                                  ("canceled", RunStatus.CANCELED)])  # fmt: skip
def test_timeout_and_cancel_are_not_retried(status: str, expected: RunStatus) -> None:
    runner = FakeRunner([([], RunnerOutcome(status, 254, ""))])
    result = execute(request(retry=RetryPolicy(attempts=3)), plan(), runner, LOG)
    assert result.status == expected and len(runner.requests) == 1


def test_max_fail_percentage() -> None:
    events = [stats(a={"failures": 1}, b={"ok": 1}, c={"ok": 1})]
    tolerant = execute(request(max_fail_percentage=34), plan(), FakeRunner([(events, FAILED)]), LOG)
    strict = execute(request(max_fail_percentage=33), plan(), FakeRunner([(events, FAILED)]), LOG)
    assert tolerant.status == RunStatus.SUCCESSFUL
    assert strict.status == RunStatus.FAILED


def test_outputs_are_collected_from_set_fact() -> None:
    ok = result_event("runner_on_ok", "a", ansible_facts={"fleetflow_output": {"rc": 0}})
    events = [ok, stats(a={"ok": 1}, b={"ok": 1}, c={"ok": 1})]
    result = execute(request(), plan(), FakeRunner([(events, OK)]), LOG)
    assert result.hosts["a"].outputs == {"rc": 0}


def test_progress_counts_failed_hosts_as_done() -> None:
    collector = EventCollector(HOSTS, 4, LOG)
    collector(result_event("runner_on_ok", "a"))
    collector(result_event("runner_on_failed", "b", msg="x"))
    assert collector.progress() == pytest.approx((0.25 + 1.0) / 3)
    collector(stats(a={"ok": 1}))
    assert collector.progress() == 1.0


@pytest.mark.parametrize(("res", "expected"), [
    ({"msg": "boom"}, "boom"),
    ({"msg": "exited 1", "stderr": "disk full", "rc": 1}, "exited 1; rc=1; stderr: disk full"),
    ({"rc": 3}, "rc=3"),
    ({}, "failed without a message"),
])  # fmt: skip
def test_failure_message(res: dict[str, Any], expected: str) -> None:
    assert failure_message(res) == expected


@pytest.mark.parametrize("kwargs", [{"max_fail_percentage": 101}, {"forks": 0}, {"timeout": 0}])
def test_bad_request_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        request(**kwargs)


def test_retry_policy_backoff() -> None:
    policy = RetryPolicy(attempts=5, delay_seconds=10, backoff=2, max_delay_seconds=35)
    assert [policy.delay_before(n) for n in (2, 3, 4, 5)] == [10, 20, 35, 35]


def test_playbook_failed_pickles_with_its_result() -> None:
    """Prefect stores task exceptions; the result must survive the round trip."""
    result = execute(request(), plan(), FakeRunner([([stats(a={"failures": 1})], FAILED)]), LOG)
    error = pickle.loads(pickle.dumps(PlaybookFailed("x", result)))
    assert isinstance(error.result, PlaybookResult) and error.result.hosts["a"].failed == 1


def test_public_exports() -> None:
    for name in fleetflow.__all__:
        assert getattr(fleetflow, name) is not None
    assert fleetflow.run_playbook.name == "run_playbook"
