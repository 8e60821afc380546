"""publish_run and progress_artifact with Prefect's artifact calls faked: what is sent, in
which order, masked, and the bar's last value (issue #20)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from fleetflow.engine import publish
from fleetflow.engine._artifacts import markdown_text
from fleetflow.engine._collector import RunningHost
from fleetflow.engine._runlog import RunLog
from fleetflow.engine.secrets import MASK
from fleetflow.results import (
    HostFailure,
    HostResult,
    HostStatus,
    PlaybookResult,
    RunStatus,
    TaskChange,
)

SECRET = "hunter2-s3cret"


class _Artifacts:
    """Prefect's artifact calls, recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.id = uuid4()
        self.tables: list[dict[str, Any]] = []
        self.markdowns: list[dict[str, Any]] = []
        self.progress: list[tuple[float, str | None]] = []
        monkeypatch.setattr(publish, "emit_event", lambda **event: None)
        monkeypatch.setattr(publish, "create_table_artifact", self._table)
        monkeypatch.setattr(publish, "create_markdown_artifact", self._markdown)
        monkeypatch.setattr(publish, "create_progress_artifact", self._create_progress)
        monkeypatch.setattr(publish, "update_progress_artifact", self._update_progress)

    def _table(self, **artifact: Any) -> UUID:
        self.tables.append(artifact)
        return uuid4()

    def _markdown(self, **artifact: Any) -> UUID:
        self.markdowns.append(artifact)
        return uuid4()

    def _create_progress(self, progress: float, description: str) -> UUID:
        self.progress.append((progress, description))
        return self.id

    def _update_progress(self, artifact_id: UUID, progress: float, description: str) -> UUID:
        assert artifact_id == self.id
        self.progress.append((progress, description))
        return artifact_id


class _Collector:
    """What Progress reads of an EventCollector."""

    def __init__(self) -> None:
        self.events = 7
        self.share = 0.4
        self.busy = [RunningHost("db-01", "Wait for the lock", 65.0)]

    def progress(self) -> float:
        return self.share

    def running(self) -> list[RunningHost]:
        return list(self.busy)


def _result(*hosts: HostResult, status: RunStatus, check: bool = False) -> PlaybookResult:
    now = datetime.now(UTC)
    return PlaybookResult(
        playbook="site.yml", inventory="lab", status=status, hosts={h.host: h for h in hosts},
        rc=2, started_at=now, finished_at=now + timedelta(seconds=1), check=check,
    )  # fmt: skip


def _publish(result: PlaybookResult, progress: publish.Progress, caplog: Any) -> PlaybookResult:
    logger = logging.getLogger("test.publish")
    caplog.set_level(logging.INFO, logger="test.publish")
    with RunLog(logger, [SECRET], interval=0.01) as log:
        return publish.publish_run(
            result, playbook=Path("/p/playbooks/site.yml"), inventory="lab", groups={},
            progress=progress, log=log,
        )  # fmt: skip


def test_the_table_is_sent_failed_first_marked_with_the_outcome_and_reasons_masked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sent = _Artifacts(monkeypatch)
    result = _result(
        HostResult(host="a", status=HostStatus.OK, ok=1),
        HostResult(host="b", status=HostStatus.FAILED, failed=1,
                   failure=HostFailure(task="Login", message=f"bad password {SECRET}")),
        status=RunStatus.FAILED,
    )  # fmt: skip
    _publish(result, publish.Progress(sent.id, "site.yml on lab"), caplog)
    [table] = sent.tables
    assert table["key"] == "hosts-site-lab"
    assert [(r["mark"], r["host"], r["status"]) for r in table["table"]] == [
        ("✗", "b", "failed"),
        ("✓", "a", "ok"),
    ]
    assert table["description"].startswith("✗ 1 of 2 hosts failed · site on lab")
    assert f"bad password {MASK}" in table["table"][0]["reason"]
    assert SECRET not in str(table)
    assert f"bad password {markdown_text(MASK)}" in table["description"]
    # What history and the exporter read back from it.
    assert publish.table_hosts(table["table"]) == {"a": "ok", "b": "failed"}
    assert sent.markdowns == []  # not a check/diff run: no diff artifact
    # The bar: one host of two ended well, and the reason it stopped.
    assert sent.progress == [(50.0, "✗ stopped: 1 host failed · site on lab")]


def test_a_check_diff_run_sends_its_diff_masked_and_logs_what_would_change(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sent = _Artifacts(monkeypatch)
    diff = f"--- before\n+++ after\n@@ -1 +1 @@\n-password: old\n+password: {SECRET}\n"
    result = _result(
        HostResult(host="web-01", status=HostStatus.CHANGED, changed=2, changes=[
            TaskChange(task="Install x", diff=""), TaskChange(task="Write y", diff=diff)]),
        HostResult(host="db-01", status=HostStatus.OK),
        status=RunStatus.SUCCESSFUL, check=True,
    )  # fmt: skip
    told = _publish(result, publish.Progress(sent.id, "site.yml on lab"), caplog)
    assert told.hosts["web-01"].changes[1].diff.endswith(f"+password: {MASK}\n")
    [artifact] = sent.markdowns
    assert artifact["key"] == publish.diff_key("site", "lab") == "diff-site-lab"
    assert artifact["description"] == "in all, 1 host would change, 2 tasks"
    text = artifact["markdown"]
    assert "## web-01" in text and "### Write y" in text
    fenced = f"```diff\n--- before\n+++ after\n@@ -1 +1 @@\n-password: old\n+password: {MASK}\n```"
    assert fenced in text
    assert SECRET not in text
    logged = [r.getMessage() for r in caplog.records if r.name == "test.publish"]
    assert "web-01 would change 2 tasks: Install x, Write y" in "\n".join(logged)
    assert "in all, 1 host would change, 2 tasks" in "\n".join(logged)
    assert SECRET not in "\n".join(logged)
    done = "✓ done: 2 hosts ok, 1 would change · site on lab (check mode)"
    assert sent.progress == [(100.0, done)]


def test_progress_names_who_is_running_and_a_failed_run_never_shows_100(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sent = _Artifacts(monkeypatch)
    collector = _Collector()
    with publish.progress_artifact(Path("/p/site.yml"), "/inv/lab", interval=0.01) as progress:
        progress.follow(collector)  # type: ignore[arg-type]
        _wait_for(lambda: len(sent.progress) > 1)
        # The recap is in (the collector says 1.0) but the outcome is not known yet.
        collector.share, collector.busy = 1.0, []
        _wait_for(lambda: sent.progress[-1][0] == 99.0)
    assert sent.progress[0] == (0.0, "site.yml on lab")
    assert sent.progress[1] == (
        40.0,
        "site.yml on lab: 1 host still running: **db-01** on Wait for the lock for 1 min 05 s",
    )
    assert all(value < 100 for value, _ in sent.progress)
    failed = _result(
        HostResult(host="db-01", status=HostStatus.UNREACHABLE, unreachable=1),
        HostResult(host="web-01", status=HostStatus.OK),
        status=RunStatus.FAILED,
    )
    _publish(failed, progress, caplog)
    assert sent.progress[-1] == (50.0, "✗ stopped: 1 host unreachable · site on lab")


def test_a_run_that_raises_leaves_the_bar_where_it_was_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = _Artifacts(monkeypatch)
    collector = _Collector()
    with (
        pytest.raises(KeyboardInterrupt),
        publish.progress_artifact(Path("site.yml"), "lab", interval=0.01) as progress,
    ):
        progress.follow(collector)  # type: ignore[arg-type]
        _wait_for(lambda: len(sent.progress) > 1)
        raise KeyboardInterrupt
    assert sent.progress[-1] == (40.0, "✗ stopped: the run ended with KeyboardInterrupt")


def _wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
