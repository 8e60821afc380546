"""What an operator reads in a run's artifacts (issue #20): the outcome in the card's first
40 characters, failed hosts first with a mark and a readable reason, who is still
running, a failed run never at 100%, and the diff of a check/diff run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleetflow.engine import _artifacts as art
from fleetflow.engine._collector import RunningHost
from fleetflow.results import (
    HostFailure,
    HostResult,
    HostStatus,
    PlaybookResult,
    RunStatus,
    TaskChange,
)


def _result(
    *hosts: HostResult, status: RunStatus = RunStatus.FAILED, check: bool = False
) -> PlaybookResult:
    now = datetime.now(UTC)
    return PlaybookResult(
        playbook="/repo/playbooks/site.yml", inventory="/repo/inventory/lab", status=status,
        hosts={h.host: h for h in hosts}, rc=2, started_at=now,
        finished_at=now + timedelta(seconds=3), check=check,
    )  # fmt: skip


def _failed(host: str, message: str = "boom", task: str = "Install x") -> HostResult:
    failure = HostFailure(task=task, message=message)
    return HostResult(host=host, status=HostStatus.FAILED, failed=1, failure=failure)


def _mixed() -> PlaybookResult:
    return _result(
        HostResult(host="a-ok", status=HostStatus.OK, ok=2),
        HostResult(host="b-changed", status=HostStatus.CHANGED, ok=2, changed=1),
        _failed("z-db", "db hosts refuse this change " + "x" * 300),
        HostResult(host="m-gone", status=HostStatus.UNREACHABLE, unreachable=1,
                   failure=HostFailure(task="Gathering Facts", message="ssh: timed out")),
        HostResult(host="c-skip", status=HostStatus.SKIPPED),
    )  # fmt: skip


def test_failed_and_unreachable_hosts_come_first_then_the_rest_by_name_each_marked() -> None:
    rows = art.table_rows(_mixed())
    assert [(r["mark"], r["host"], r["status"]) for r in rows] == [
        ("⚠", "m-gone", "unreachable"),
        ("✗", "z-db", "failed"),
        ("✓", "a-ok", "ok"),
        ("●", "b-changed", "changed"),
        ("○", "c-skip", "skipped"),
    ]
    # The reason sits beside the status, short enough to stay on screen...
    assert list(rows[0])[:4] == ["mark", "host", "status", "reason"]
    assert rows[1]["reason"].startswith("Install x: db hosts refuse this change")
    assert len(rows[1]["reason"]) == art.REASON_CELL and rows[1]["reason"].endswith("…")
    assert rows[2]["reason"] == "" and (rows[3]["changed"], rows[3]["ok"]) == (1, 2)
    # ...and every column of PlaybookResult.table() is there, with its value, for readers.
    plain = {row["host"]: row for row in _mixed().table()}
    for row in rows:
        assert {k: row[k] for k in plain[row["host"]]} == plain[row["host"]]
    assert list(rows[1])[-1] == "failure" and rows[1]["failure"].endswith("x" * 300)


@pytest.mark.parametrize(
    ("result", "head"),
    [
        (
            _result(_failed("a"), HostResult(host="b", status=HostStatus.OK)),
            "✗ 1 of 2 hosts failed",
        ),
        (
            _result(_failed("a"), HostResult(host="b", status=HostStatus.UNREACHABLE)),
            "✗ 1 of 2 hosts failed, 1 unreachable",
        ),
        (
            _result(HostResult(host="b", status=HostStatus.UNREACHABLE)),
            "⚠ 1 of 1 hosts unreachable",
        ),
        (
            _result(HostResult(host="b", status=HostStatus.CHANGED),
                    HostResult(host="c", status=HostStatus.OK), status=RunStatus.SUCCESSFUL),
            "✓ 2 hosts ok, 1 changed",
        ),
        (
            _result(HostResult(host="b", status=HostStatus.OK), status=RunStatus.TIMED_OUT),
            "⏱ timed out",
        ),
    ],
)  # fmt: skip
def test_the_cards_first_40_characters_say_the_outcome(result: PlaybookResult, head: str) -> None:
    description = art.table_description(result)
    assert description.startswith(head)
    assert head in description[:40]


def test_the_description_lists_each_failed_hosts_full_reason_escaped() -> None:
    result = _result(
        _failed("web-01", "<b>bold</b> | [link](http://x) *not*\nsecond line"),
        HostResult(host="ok-1", status=HostStatus.OK),
    )
    description = art.table_description(result)
    why = description.split("**Why:**", 1)[1]
    assert "- ✗ failed **web-01**: Install x: " in why
    assert "\\<b\\>bold\\</b\\> \\| \\[link\\](http://x) \\*not\\* second line" in why
    assert "ok-1" not in why  # only the hosts that went wrong
    # A long reason is there in full (the table's cell is cut).
    long = _mixed()
    assert "x" * 300 in art.table_description(long)


def test_the_description_says_and_n_more_past_the_listed_hosts() -> None:
    result = _result(*(_failed(f"h{i:02d}") for i in range(art.LISTED_HOSTS + 3)))
    description = art.table_description(result)
    assert description.count("- ✗ failed **h") == art.LISTED_HOSTS
    assert "- and 3 more (see the table)" in description


def test_a_run_failing_without_a_failed_host_shows_its_message() -> None:
    result = _result(HostResult(host="a", status=HostStatus.OK)).model_copy(
        update={"message": "ansible-playbook exited with rc 4"}
    )
    description = art.table_description(result)
    assert description.startswith("✗ failed · site on lab")
    assert "ansible-playbook exited with rc 4" in description


def test_progress_names_the_hosts_still_running_their_task_and_for_how_long() -> None:
    running = [
        RunningHost("db-01", "Wait for <the> lock", 130.2),
        RunningHost("web-01", "Install x", 12.9),
        RunningHost("web-02", "Install x", 3.0),
    ]
    text = art.progress_running_text("site.yml on lab", running)
    assert text == (
        "site.yml on lab: 3 hosts still running: **db-01** on Wait for \\<the\\> lock for "
        "2 min 10 s; **web-01** on Install x for 10 s; **web-02** on Install x for <5 s"
    )
    many = [RunningHost(f"h{i}", "t", 1.0) for i in range(art.RUNNING_NAMED + 2)]
    assert art.progress_running_text("x", many).endswith(", and 2 more")
    assert art.progress_running_text("site.yml on lab", []) == "site.yml on lab"


@pytest.mark.parametrize("last", [None, 0.0, 40.0, 99.0, 100.0])
def test_a_failed_run_never_ends_at_100_percent(last: float | None) -> None:
    result = _result(_failed("a"), HostResult(host="b", status=HostStatus.OK))
    for status in (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELED):
        percent = art.final_percent(result.model_copy(update={"status": status}), last)
        assert percent < 100
        assert percent <= 50.0  # one host of two ended well
    ok = _result(HostResult(host="b", status=HostStatus.OK), status=RunStatus.SUCCESSFUL)
    assert art.final_percent(ok, last) == 100.0
    # Every host fine, yet the run failed (rc, max_fail_percentage): still not 100.
    assert art.final_percent(_result(HostResult(host="b", status=HostStatus.OK)), last) < 100


def test_the_last_progress_text_says_why_a_run_stopped() -> None:
    result = _result(_failed("a"), HostResult(host="b", status=HostStatus.UNREACHABLE))
    assert art.progress_final_text(result) == (
        "✗ stopped: 1 host failed, 1 host unreachable · site on lab"
    )
    timed = _result(HostResult(host="b", status=HostStatus.OK), status=RunStatus.TIMED_OUT)
    assert art.progress_final_text(timed).startswith("✗ stopped: timed out")
    ok = _result(HostResult(host="b", status=HostStatus.CHANGED), status=RunStatus.SUCCESSFUL)
    assert art.progress_final_text(ok) == "✓ done: 1 host ok, 1 changed · site on lab"


def _planned() -> PlaybookResult:
    diff = "--- before: /etc/x\n+++ after: /etc/x\n@@ -1 +1 @@\n-old\n+new\n"
    return _result(
        HostResult(host="web-01", status=HostStatus.CHANGED, changed=2, changes=[
            TaskChange(task="Install x", diff=""),
            TaskChange(task="Write y", diff=diff),
        ]),
        HostResult(host="db-01", status=HostStatus.OK),
        HostResult(host="app-01", status=HostStatus.CHANGED, changed=1, changes=[
            TaskChange(task="Write y", diff=diff),
        ]),
        status=RunStatus.SUCCESSFUL, check=True,
    )  # fmt: skip


def test_the_log_says_per_host_what_would_change_and_the_total() -> None:
    assert art.diff_log_lines(_planned()) == [
        "app-01 would change 1 task: Write y",
        "web-01 would change 2 tasks: Install x, Write y",
        "in all, 2 hosts would change, 3 tasks",
    ]
    applied = _planned().model_copy(update={"check": False})
    assert art.diff_log_lines(applied)[1] == "web-01 changed 2 tasks: Install x, Write y"
    nothing = _result(HostResult(host="a", status=HostStatus.OK), check=True)
    assert art.diff_log_lines(nothing) == ["nothing would change"]


def test_the_diff_artifact_shows_each_host_and_task_with_its_diff_fenced() -> None:
    text = art.diff_markdown(_planned())
    assert text == (
        "# Diff: site on lab (check mode: nothing was changed)\n\n"
        "in all, 2 hosts would change, 3 tasks\n\n"
        "## app-01\n\n### Write y\n\n"
        "```diff\n--- before: /etc/x\n+++ after: /etc/x\n@@ -1 +1 @@\n-old\n+new\n```\n\n"
        "## web-01\n\n### Install x\n\n(no diff)\n\n### Write y\n\n"
        "```diff\n--- before: /etc/x\n+++ after: /etc/x\n@@ -1 +1 @@\n-old\n+new\n```\n"
    )


def test_a_diff_cannot_close_its_fence_nor_a_name_become_markup() -> None:
    diff = "+````\n+# not a heading\n+```"
    result = _result(
        HostResult(host="h", status=HostStatus.CHANGED, changes=[
            TaskChange(task="## [evil](http://x)", diff=diff)]),
        status=RunStatus.SUCCESSFUL, check=True,
    )  # fmt: skip
    text = art.diff_markdown(result)
    assert "### \\#\\# \\[evil\\](http://x)" in text
    assert "`````diff\n+````\n+# not a heading\n+```\n`````" in text


def test_a_big_diff_is_cut_between_blocks_with_a_note() -> None:
    long = "\n".join(f"+line {i}" for i in range(art.DIFF_LINES + 50))
    hosts = [
        HostResult(host=f"h{i:02d}", status=HostStatus.CHANGED,
                   changes=[TaskChange(task="Write", diff=long)])
        for i in range(30)
    ]  # fmt: skip
    text = art.diff_markdown(_result(*hosts, status=RunStatus.SUCCESSFUL, check=True), 20_000)
    assert len(text) < 20_000 + 500
    assert "... 50 more lines not shown" in text
    shown = text.count("### Write")
    assert 0 < shown < 30
    assert f"{30 - shown} more hosts not shown (h{shown:02d}, " in text
    assert text.count("```diff") * 2 == text.count("```")  # every fence closed


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("1. not a list", "1\\. not a list"),
        ("- not a list", "\\- not a list"),
        ("# not a heading", "\\# not a heading"),
        ("&lt;b&gt; is not an entity", "\\&lt;b\\&gt; is not an entity"),
        ("`x` <i>y</i> ~z~", "\\`x\\` \\<i\\>y\\</i\\> \\~z\\~"),
        ("web-01.example.org (db) ran", "web-01.example.org (db) ran"),
        ("two\nlines", "two lines"),
    ],
)
def test_free_text_is_shown_as_written(text: str, shown: str) -> None:
    assert art.markdown_text(text) == shown
