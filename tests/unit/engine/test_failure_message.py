"""failure_message: a failed task's message keeps its exit code and the end of its output."""

from __future__ import annotations

from typing import Any

from fleetflow.engine._collector import failure_message

LIMIT = 2000
# ~20 MB of output whose last lines say why the command failed.
NOISE = "".join(f"progress line {i}\n" for i in range(1_000_000)) + "error: disk full\n"
CENSORED = "the output has been hidden due to the fact that 'no_log: true' was specified"


def test_a_20_mb_stderr_keeps_rc_and_its_last_lines_within_the_limit() -> None:
    """Regression: a task failing with 20 MB of stderr was reported without rc or tail."""
    message = failure_message({"msg": "non-zero return code", "rc": 3, "stderr": NOISE})
    assert len(message) <= LIMIT
    assert message.startswith("non-zero return code; rc=3; stderr (last 10 lines): ")
    assert message.endswith("progress line 999999\nerror: disk full")
    assert "progress line 0\n" not in message


def test_without_msg_the_output_tail_and_rc_still_tell_what_happened() -> None:
    message = failure_message({"rc": 2, "stderr": "", "stdout": NOISE})
    assert message.startswith("rc=2; stdout (last 10 lines): ")
    assert message.endswith("error: disk full") and len(message) <= LIMIT


def test_a_huge_msg_is_bounded_and_rc_survives() -> None:
    message = failure_message({"msg": "x" * 5_000_000, "rc": 1})
    assert len(message) <= LIMIT and message.endswith("; rc=1")


def test_a_huge_single_line_is_cut_to_the_limit() -> None:
    message = failure_message({"msg": "boom", "rc": 1, "stderr": "y" * 20_000_000})
    assert len(message) <= LIMIT and message.startswith("boom; rc=1; stderr")


def test_short_output_is_shown_whole_without_a_line_count() -> None:
    message = failure_message({"msg": "failed", "rc": 1, "stderr": "a\nb\n"})
    assert message == "failed; rc=1; stderr: a\nb"


def test_stderr_repeated_as_msg_is_not_shown_twice() -> None:
    assert failure_message({"msg": "disk full", "stderr": "disk full"}) == "disk full"


def test_a_censored_result_never_shows_its_output() -> None:
    res: dict[str, Any] = {"censored": CENSORED, "stderr": "s3cret", "stdout": "s3cret", "rc": 1}
    message = failure_message(res)
    assert message == CENSORED and "s3cret" not in message


def test_a_failed_loop_names_its_failed_items() -> None:
    res = {
        "msg": "One or more items failed",
        "results": [
            {"failed": False, "msg": "fine", "item": "a"},
            {"failed": True, "msg": "non-zero return code", "rc": 4, "stderr": "no such file"},
            {"failed": True, "msg": "second failure", "rc": 5},
        ],
    }
    message = failure_message(res)
    assert message == (
        "One or more items failed; 2 of 3 items failed: (item=?) non-zero return code; rc=4; "
        "stderr: no such file | (item=?) second failure; rc=5"
    )


def test_a_censored_loop_item_stays_censored() -> None:
    res = {"msg": "One or more items failed", "results": [{"failed": True, "censored": CENSORED}]}
    assert failure_message(res).endswith(f"(item=censored due to no_log) {CENSORED}")


def test_a_host_key_refusal_in_huge_stderr_leads_and_stays_bounded() -> None:
    stderr = "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n" + NOISE
    message = failure_message({"msg": "unreachable", "stderr": stderr})
    assert message.startswith("host key changed:") and len(message) <= LIMIT
