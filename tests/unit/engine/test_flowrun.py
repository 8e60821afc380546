"""flowrun: the tags a failed run gets, the note that hosts were reached, and expected
failures logged by Prefect's engines without a traceback."""

from __future__ import annotations

import logging
import sys
import uuid
from datetime import UTC, datetime

import pytest

from fleetflow.engine.flowrun import (
    MAX_HOST_TAGS,
    host_tags,
    mark_reached,
    quiet_expected_failures,
    reached_hosts,
)
from fleetflow.exceptions import NoHostsMatched
from fleetflow.results import HostResult, HostStatus, PlaybookResult, RunStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _result(statuses: dict[str, HostStatus]) -> PlaybookResult:
    return PlaybookResult(
        playbook="site.yml", inventory="lab", rc=2, status=RunStatus.FAILED,
        started_at=T0, finished_at=T0,
        hosts={h: HostResult(host=h, status=s) for h, s in statuses.items()},
    )  # fmt: skip


def test_failed_and_unreachable_hosts_become_tags_and_others_do_not() -> None:
    result = _result(
        {"db-01": HostStatus.OK, "web-02": HostStatus.UNREACHABLE, "web-01": HostStatus.FAILED}
    )
    assert host_tags(result) == ["failed:web-01", "unreachable:web-02"]


def test_beyond_a_few_hosts_the_rest_are_counted_in_one_tag() -> None:
    result = _result({f"h{i:02}": HostStatus.FAILED for i in range(12)})
    tags = host_tags(result)
    assert tags[:MAX_HOST_TAGS] == [f"failed:h{i:02}" for i in range(MAX_HOST_TAGS)]
    assert tags[MAX_HOST_TAGS:] == [f"failed:+{12 - MAX_HOST_TAGS} more"]


def test_a_successful_run_adds_no_tag() -> None:
    assert host_tags(_result({"web-01": HostStatus.CHANGED})) == []


def test_reached_is_per_flow_run_and_forgotten_on_request() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    mark_reached(first)
    assert reached_hosts(first) and not reached_hosts(second)
    assert reached_hosts(first, forget=True)
    assert not reached_hosts(first)
    mark_reached(None)
    assert not reached_hosts(None)


@pytest.mark.parametrize(
    ("error", "traceback_kept"), [(NoHostsMatched("limit 'x' matches no host"), False),
                                  (KeyError("a bug"), True)]
)  # fmt: skip
def test_prefect_engines_log_our_errors_without_traceback_and_bugs_with_one(
    error: Exception, traceback_kept: bool
) -> None:
    quiet_expected_failures()
    quiet_expected_failures()  # idempotent: one filter per logger
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        filters = logging.getLogger(name).filters
        assert len(filters) == len({id(f) for f in filters})
    try:
        raise error
    except Exception:
        record = logging.LogRecord(
            "prefect.task_runs", logging.ERROR, __file__, 1, "Task run failed with exception: %r",
            (error,), sys.exc_info(),
        )  # fmt: skip
    assert all(f.filter(record) for f in logging.getLogger("prefect.task_runs").filters)
    assert (record.exc_info is not None) is traceback_kept
    assert repr(error) in record.getMessage()


def test_the_engines_exit_line_goes_for_our_errors_and_stays_for_bugs() -> None:
    quiet_expected_failures()
    engine_filters = logging.getLogger("prefect.flow_runs").filters
    for error, shown in (
        (NoHostsMatched("limit 'x' matches no host"), False),
        (KeyError("bug"), True),
    ):
        try:
            raise error
        except Exception:
            record = logging.LogRecord(
                "prefect.flow_runs", logging.ERROR, __file__, 1,
                "Engine execution exited with unexpected exception", (), sys.exc_info(),
            )  # fmt: skip
        assert all(f.filter(record) for f in engine_filters) is shown
