"""EventCollector and failure_message, fed synthetic runner events shaped like ansible-runner
2.4.3's with ansible-core 2.21 (recorded from real runs): loop failures name every failed
item, Ansible's warnings reach the run log once, and the busy hosts can be read."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from fleetflow.engine import _collector
from fleetflow.engine._collector import EventCollector, RunningHost, failure_message

LOGGER = logging.getLogger("ff-collector-test")
LIMIT = 2000
CENSORED = "the output has been hidden due to the fact that 'no_log: true' was specified"
LOOP_FAILED = "One or more items failed"
NONZERO = "The command exited with a non-zero return code."
NOISE = "".join(f"progress line {i}\n" for i in range(100_000)) + "error: disk full\n"


def event(kind: str, host: str | None = None, task: str = "t", **res: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"task": task, "res": res}
    if host:
        data["host"] = host
    return {"event": kind, "created": "2026-11-23T10:00:00+00:00", "event_data": data}


def display(kind: str, stdout: str) -> dict[str, Any]:
    """Ansible's own printed lines: no host, no task, only stdout."""
    return {"event": kind, "stdout": stdout, "created": "2026-11-23T10:00:00+00:00",
            "event_data": {}}  # fmt: skip


def item(label: str, failed: bool = True, **res: Any) -> dict[str, Any]:
    return {"ansible_loop_var": "item", "item": label, "_ansible_item_label": label,
            "failed": failed, "changed": True, **res}  # fmt: skip


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# --- failure_message: loops -------------------------------------------------------------


def test_a_failed_loop_names_every_failed_item_with_its_reason() -> None:
    """Regression: only the first failed item of a loop was reported; bad2 was lost."""
    res = {
        "msg": LOOP_FAILED,
        "results": [
            item("good", failed=False, msg="", rc=0),
            item("bad1", msg=NONZERO, rc=3, stderr="bad1: no such file", stdout=""),
            item("bad2", msg=NONZERO, rc=4, stderr="", stdout="bad2: refused"),
        ],
    }
    assert failure_message(res) == (
        "One or more items failed; 2 of 3 items failed: "
        f"(item=bad1) {NONZERO}; rc=3; stderr: bad1: no such file | "
        f"(item=bad2) {NONZERO}; rc=4; stdout: bad2: refused"
    )


def test_an_item_without_msg_keeps_rc_and_the_tail_of_its_output() -> None:
    res = {"msg": LOOP_FAILED, "results": [item("big", rc=2, stderr="", stdout=NOISE)]}
    message = failure_message(res)
    assert message.startswith(
        "One or more items failed; 1 of 1 items failed: (item=big) rc=2; stdout (last "
    )
    assert message.endswith("error: disk full") and "progress line 0\n" not in message


def test_many_failed_items_show_three_and_count_the_rest_within_the_limit() -> None:
    res = {
        "msg": LOOP_FAILED,
        "results": [item(f"pkg{n}", msg="x" * 5000, rc=n, stderr=NOISE) for n in range(50)],
    }
    message = failure_message(res)
    assert len(message) <= LIMIT
    assert message.startswith("One or more items failed; 50 of 50 items failed: (item=pkg0) ")
    assert "(item=pkg1) " in message and "(item=pkg2) " in message
    assert "(item=pkg3)" not in message
    assert message.endswith(" | and 47 more")
    # Each shown item keeps its exit code although its msg alone would fill the budget.
    assert all(f"rc={n}" in message for n in range(3))


def test_the_item_label_is_ansibles_and_is_bounded() -> None:
    dict_item = {"name": "nginx", "password": "p"}
    labelled = {**item("x"), "item": dict_item, "_ansible_item_label": "nginx", "msg": "boom"}
    long = item("L" * 10_000, msg="boom")
    message = failure_message({"msg": LOOP_FAILED, "results": [labelled, long]})
    assert "(item=nginx) boom" in message and "password" not in message
    assert "L" * 79 + "\u2026) boom" in message and "L" * 81 not in message


def test_a_censored_loop_item_stays_censored() -> None:
    secret_item = {"failed": True, "censored": CENSORED, "item": "s3cret",
                   "_ansible_item_label": "s3cret", "_ansible_no_log": True}  # fmt: skip
    res = {"msg": LOOP_FAILED, "results": [secret_item, item("pub", msg="boom")]}
    message = failure_message(res)
    assert message.startswith(
        f"One or more items failed; 2 of 2 items failed: (item=censored due to no_log) {CENSORED}"
    )
    assert "s3cret" not in message and "(item=pub) boom" in message


def test_a_censored_loop_result_stays_censored() -> None:
    """ansible-core 2.21 censors a whole loop result when any item is no_log."""
    res = {"censored": CENSORED, "msg": LOOP_FAILED, "results": [item("s3cret", msg="s3cret")]}
    assert failure_message(res) == CENSORED


def test_a_loop_with_its_own_msg_is_not_itemized() -> None:
    res = {"msg": "custom failure", "results": [item("a", msg="boom")]}
    assert failure_message(res) == "custom failure"


# --- failure_message: rc and output without msg -----------------------------------------


def test_without_msg_rc_and_the_stderr_tail_are_kept() -> None:
    assert failure_message({"rc": 127, "stderr": "sh: nope: not found\n", "stdout": "x"}) == (
        "rc=127; stderr: sh: nope: not found"
    )


def test_without_msg_or_stderr_the_stdout_tail_is_kept() -> None:
    message = failure_message({"msg": "", "rc": 1, "stderr": "  \n", "stdout": NOISE})
    assert message.startswith("rc=1; stdout (last 10 lines): ")
    assert message.endswith("error: disk full") and len(message) <= LIMIT


# --- the collector's failure line --------------------------------------------------------


def real_item(label: str, **res: Any) -> dict[str, Any]:
    """An item result as ansible-core 2.21 reports it: no `failed` key, failed or not."""
    return {"ansible_loop_var": "item", "item": label, "_ansible_item_label": label,
            "changed": True, **res}  # fmt: skip


def run_loop(collector: EventCollector, host: str, task: str, items: list[dict[str, Any]],
             failed: set[str], **data: Any) -> None:  # fmt: skip
    """A loop's events as ansible-runner 2.4.3 delivers them: start, one event per item,
    then the task's result whose items no longer say which failed."""
    collector(event("runner_on_start", host, task))
    for res in items:
        kind = "runner_item_on_failed" if res["item"] in failed else "runner_item_on_ok"
        collector(event(kind, host, task, **res))
    final = event("runner_on_failed", host, task, changed=True, msg=LOOP_FAILED, results=items)
    final["event_data"].update(data)
    collector(final)


def test_a_host_failing_in_a_loop_logs_every_failed_item(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: with ansible-core 2.21 a failed loop reported only "One or more items
    failed": its items carry no `failed` key, so none was found to name."""
    collector = EventCollector(("a",), 1, LOGGER)
    items = [
        real_item("good", msg="", rc=0, stderr="", stdout=""),
        real_item("bad1", msg=NONZERO, rc=3, stderr="e1", stdout=""),
        real_item("bad2", msg="", rc=4, stderr="", stdout="o2"),
    ]
    with caplog.at_level(logging.INFO, LOGGER.name):
        run_loop(collector, "a", "Run it", items, {"bad1", "bad2"})
    failure = collector.host_results()["a"].failure
    assert failure is not None and failure.task == "Run it"
    assert failure.message == (
        "One or more items failed; 2 of 3 items failed: "
        f"(item=bad1) {NONZERO}; rc=3; stderr: e1 | (item=bad2) rc=4; stdout: o2"
    )
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"a | failed | Run it: {failure.message}"]


def test_failed_items_are_counted_per_host_and_per_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = EventCollector(("a", "b"), 2, LOGGER)
    many = [real_item(f"i{n}", msg=f"boom {n}", rc=1) for n in range(6)]
    with caplog.at_level(logging.INFO, LOGGER.name):
        # An ignored loop first: its failed items must not leak into the next task's.
        run_loop(collector, "a", "Try", many, {"i0", "i1"}, ignore_errors=True)
        run_loop(collector, "b", "Install", many, {f"i{n}" for n in range(6)})
        run_loop(collector, "a", "Install", many, {"i4", "i5"})
    ignored = [r.getMessage() for r in caplog.records if "(ignored)" in r.getMessage()]
    assert len(ignored) == 1 and "2 of 6 items failed: (item=i0) boom 0" in ignored[0]
    results = collector.host_results()
    b_failure, a_failure = results["b"].failure, results["a"].failure
    assert b_failure is not None and a_failure is not None
    assert b_failure.message == (
        "One or more items failed; 6 of 6 items failed: (item=i0) boom 0; rc=1 | "
        "(item=i1) boom 1; rc=1 | (item=i2) boom 2; rc=1 | and 3 more"
    )
    assert a_failure.message == (
        "One or more items failed; 2 of 6 items failed: (item=i4) boom 4; rc=1 | "
        "(item=i5) boom 5; rc=1"
    )


# --- Ansible's warnings -------------------------------------------------------------------

CONDITIONAL = (
    "Conditionals should not be surrounded by templating delimiters such as {{ }} or {% %}."
)
INJECT = (
    "INJECT_FACTS_AS_VARS default to `True` is deprecated, top-level facts will not be "
    "auto injected after the change."
)


def deprecation(msg: str, version: str = "2.23") -> dict[str, Any]:
    return {"msg": msg, "collection_name": None, "version": version,
            "deprecator": {"resolved_name": None, "type": None}}  # fmt: skip


def test_a_deprecation_every_host_returns_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = EventCollector(("a", "b", "c"), 1, LOGGER)
    with caplog.at_level(logging.INFO, LOGGER.name):
        for host in "abc":
            collector(event("runner_on_ok", host, deprecations=[deprecation(CONDITIONAL)]))
    assert warnings_logged(caplog) == [f"[DEPRECATION WARNING]: {CONDITIONAL}"]


def test_a_printed_deprecation_and_the_same_one_in_results_are_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As ansible-runner delivers INJECT_FACTS_AS_VARS: verbose lines, then each result."""
    printed = f"[DEPRECATION WARNING]: {INJECT} This feature will be removed from ansible-core version 2.24."  # noqa: E501
    collector = EventCollector(("a", "b"), 1, LOGGER)
    with caplog.at_level(logging.INFO, LOGGER.name):
        collector(display("verbose", printed))
        collector(display("verbose", "Origin: /p/site.yml:18:14"))
        collector(display("verbose", '18         msg: "{{ ansible_system }}"'))
        for host in "ab":
            collector(event("runner_on_ok", host, deprecations=[deprecation(INJECT, "2.24")]))
    assert warnings_logged(caplog) == [printed]


def test_a_warning_event_logs_its_first_line_only(caplog: pytest.LogCaptureFixture) -> None:
    stdout = (
        "[WARNING]: Found variable using reserved name 'environment'.\r\n"
        "Origin: /p/site.yml:5:5\r\n\r\n3   gather_facts: false\r\n5     environment: lab"
    )
    collector = EventCollector(("a",), 1, LOGGER)
    with caplog.at_level(logging.INFO, LOGGER.name):
        collector(display("warning", stdout))
        collector(display("warning", stdout))
    assert warnings_logged(caplog) == [
        "[WARNING]: Found variable using reserved name 'environment'."
    ]


def test_module_and_item_warnings_are_logged_and_similar_ones_stay_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = EventCollector(("a", "b"), 1, LOGGER)
    looped = [item("x", failed=False, warnings=["name 'env' is odd"])]
    with caplog.at_level(logging.INFO, LOGGER.name):
        collector(event("runner_on_ok", "a", warnings=["name 'environment' is odd"]))
        collector(event("runner_on_ok", "b", warnings=[{"msg": "name 'environment' is odd"}]))
        collector(event("runner_on_ok", "a", results=looped))
    assert warnings_logged(caplog) == [
        "[WARNING]: name 'environment' is odd",
        "[WARNING]: name 'env' is odd",
    ]


def test_output_lines_and_ansibles_advice_are_not_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = EventCollector(("a",), 1, LOGGER)
    advice = (
        "[WARNING]: Deprecation warnings can be disabled by setting `deprecation_warnings=False`"
    )
    with caplog.at_level(logging.INFO, LOGGER.name):
        collector(display("verbose", advice))
        collector(display("verbose", "some line mentioning [WARNING]: inside"))
        collector(event("runner_on_ok", "a", stdout="[WARNING]: printed by the host's command"))
        collector(event("runner_on_failed", "a", censored=CENSORED, warnings=["s3cret"]))
    assert "s3cret" not in caplog.text
    assert warnings_logged(caplog) == []


def test_a_flood_of_distinct_warnings_is_capped(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_collector, "_WARNINGS_MAX", 3)
    collector = EventCollector(("a",), 1, LOGGER)
    with caplog.at_level(logging.INFO, LOGGER.name):
        for n in range(10):
            collector(display("warning", f"[WARNING]: number {n}"))
    assert warnings_logged(caplog) == [
        "[WARNING]: number 0",
        "[WARNING]: number 1",
        "[WARNING]: number 2",
        "more Ansible warnings than 3: the rest are not logged",
    ]


# --- running() ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(_collector, "monotonic", fake)
    return fake


def test_running_lists_started_hosts_without_a_result_longest_first(clock: Clock) -> None:
    collector = EventCollector(("a", "b", "c"), 2, LOGGER)
    collector(event("runner_on_start", "a", "Install"))
    clock.now += 5
    collector(event("runner_on_start", "b", "Install"))
    collector(event("runner_on_start", "c", "Install"))
    clock.now += 2
    collector(event("runner_on_ok", "c", "Install"))
    assert collector.running() == [
        RunningHost(host="a", task="Install", seconds=7.0),
        RunningHost(host="b", task="Install", seconds=2.0),
    ]
    # The next task's start resets the clock of that host.
    collector(event("runner_on_failed", "a", "Install", msg="boom"))
    collector(event("runner_on_ok", "b", "Install"))
    collector(event("runner_on_start", "b", "Restart"))
    clock.now += 1
    assert collector.running() == [RunningHost(host="b", task="Restart", seconds=1.0)]


def test_running_ignores_untargeted_hosts_and_ends_with_the_recap(clock: Clock) -> None:
    collector = EventCollector(("a",), 1, LOGGER)
    collector(event("runner_on_start", "a", "Wait"))
    collector(event("runner_on_start", "localhost", "Wait"))
    clock.now += 3
    assert collector.running() == [RunningHost(host="a", task="Wait", seconds=3.0)]
    collector(event("runner_on_unreachable", "a", "Wait", msg="timed out"))
    assert collector.running() == []
    collector(event("runner_on_start", "a", "Wait"))
    collector({"event": "playbook_on_stats", "event_data": {"processed": {"a": 1}}})
    assert collector.running() == []


def test_running_can_be_read_while_events_arrive() -> None:
    hosts = tuple(f"h{n}" for n in range(200))
    collector = EventCollector(hosts, 1, LOGGER)
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                busy = collector.running()
                assert busy == sorted(busy, key=lambda r: -r.seconds)
            except BaseException as exc:  # reported on the test's thread
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(20):
            for host in hosts:
                collector(event("runner_on_start", host, "Spin"))
            for host in hosts:
                collector(event("runner_on_ok", host, "Spin"))
    finally:
        stop.set()
        reader.join(30)
    assert errors == []
    assert collector.running() == []
