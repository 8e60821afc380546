"""Runner events -> live log lines, progress and per-host results.

The collector runs inside ansible-runner's read loop, so it only updates memory and hands
lines to a logger (Prefect's handler batches them to the API in the background). Progress
is read from another thread (`progress()`), never pushed from this loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleetflow.engine._diff import render_diff
from fleetflow.results import HostFailure, HostResult, TaskChange

_RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
    "runner_on_async_failed": "failed",
}
_RECAP_KEYS = {
    "ok": "ok",
    "changed": "changed",
    "dark": "unreachable",
    "failures": "failed",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}
_MESSAGE_LIMIT = 2000
# msg is the module's summary: its start says what went wrong.
_HEAD_LIMIT = 600
_ITEM_LIMIT = 900
# Output is cut to this many last lines, read from this many last chars.
_TAIL_LINES = 10
_TAIL_WINDOW = 4096
_LOOP_FAILED = "One or more items failed"
_ENDS = (slice(None, _TAIL_WINDOW), slice(-_TAIL_WINDOW, None))


@dataclass
class _HostTrack:
    first: datetime | None = None
    last: datetime | None = None
    results: int = 0
    done: bool = False
    failure: HostFailure | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    changes: list[TaskChange] = field(default_factory=list)


_HOST_KEY_CHANGED = "REMOTE HOST IDENTIFICATION HAS CHANGED"
_HOST_KEY_UNVERIFIED = "Host key verification failed"
# Mitogen's words for either case.
_HOST_KEY_MITOGEN = "SSH reported an unrecognized or mismatching host key"


def _host_key_reason(text: str) -> str | None:
    """SSH's host-key refusals, said plainly (they otherwise read like a network error)."""
    if _HOST_KEY_CHANGED in text:
        return (
            "host key changed: the host's SSH key differs from known_hosts (a rebuilt host, "
            "or someone impersonating it); verify it, then update known_hosts"
        )
    if _HOST_KEY_UNVERIFIED in text:
        return "host key unknown: the host is not in known_hosts; add its verified key"
    if _HOST_KEY_MITOGEN in text:
        return (
            "host key changed or unknown: the host's SSH key is not the one in known_hosts; "
            "verify it, then update known_hosts"
        )
    return None


def failure_message(res: dict[str, Any]) -> str:
    """A failed result in one bounded message: msg, the exit code and the tail of stderr.

    e.g. "non-zero return code; rc=3; stderr (last 10 lines): ...". Output is cut to its
    last lines because that is where a failing command says why; a 20 MB stderr costs a
    4 KB slice, never a split of the whole string. An SSH host-key refusal leads with its
    reason; the connection is never retried without checking the key.
    """
    text = _describe(res, _MESSAGE_LIMIT)
    item = _first_failed_item(res)
    if item is not None:
        text = f"{text}; first failed item: {_describe(item, _ITEM_LIMIT)}"
    if not res.get("censored"):
        # SSH's words open or close its output: read both ends, not megabytes between.
        ends = [_raw(res, k)[cut] for k in ("msg", "stderr") for cut in _ENDS]
        reason = _host_key_reason("\n".join(ends))
        if reason:
            text = f"{reason} ({_clip(text, _MESSAGE_LIMIT - len(reason) - 3)})"
    return _clip(text, _MESSAGE_LIMIT)


def _describe(res: dict[str, Any], limit: int) -> str:
    # A no_log task's result is only {"censored": ...}: keep it censored, and say so.
    if res.get("censored"):
        return _clip(_head(res, "censored"), limit)
    parts = []
    head = _head(res, "msg") or _head(res, "reason")
    if head:
        parts.append(_clip(head, _HEAD_LIMIT))
    if res.get("rc") is not None:
        parts.append(f"rc={res['rc']}")
    stream = "stderr" if _raw(res, "stderr")[-_TAIL_WINDOW:].strip() else "stdout"
    label, tail = _tail(_raw(res, stream), limit // 2)
    if tail and tail not in head:  # some modules repeat stderr as their msg
        parts.append(f"{stream}{label}: {tail}")
    return _clip("; ".join(parts), limit) if parts else "failed without a message"


def _raw(res: dict[str, Any], key: str) -> str:
    value = res.get(key)
    return str(value) if value else ""


def _head(res: dict[str, Any], key: str) -> str:
    return _raw(res, key)[:_TAIL_WINDOW].strip()


def _tail(text: str, limit: int) -> tuple[str, str]:
    """The last lines of `text` within `limit` chars, and their label if text was cut."""
    window = text[-_TAIL_WINDOW:].strip()
    lines = window.splitlines()[-_TAIL_LINES:]
    tail = "\n".join(lines)[-limit:]
    if len(text) <= _TAIL_WINDOW and tail == window:
        return "", tail
    return f" (last {len(lines)} lines)", tail


def _first_failed_item(res: dict[str, Any]) -> dict[str, Any] | None:
    """A loop's first failed item, when the loop's own msg is only Ansible's generic one."""
    items = res.get("results")
    if res.get("censored") or _head(res, "msg") != _LOOP_FAILED or not isinstance(items, list):
        return None
    return next((i for i in items if isinstance(i, dict) and i.get("failed")), None)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "\u2026"


class EventCollector:
    """Feed it runner events; ask it for HostResults when the run ends."""

    def __init__(
        self,
        hosts: tuple[str, ...],
        task_count: int,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        *,
        record_changes: bool = False,
    ) -> None:
        self.hosts = hosts
        # Check/diff runs keep each changed task and its diff: the plan of a change.
        self.record_changes = record_changes
        self.task_count = max(task_count, 1)
        self.logger = logger
        self.recap: dict[str, dict[str, int]] | None = None
        self.events = 0
        self._tracks: dict[str, _HostTrack] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        self.events += 1
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_start":
            # The first event: ansible-playbook is up (trigger-latency benchmarks end here).
            self.logger.info("ansible-playbook started")
        elif kind == "playbook_on_task_start":
            self.logger.info("TASK [%s]", data.get("task") or data.get("name") or "?")
        elif kind == "runner_on_start":
            self._track(data, event)
        elif kind in _RESULT_EVENTS:
            self._result(_RESULT_EVENTS[kind], data, event)
        elif kind == "playbook_on_stats":
            self.recap = {
                host: {
                    ours: int(data.get(theirs, {}).get(host, 0))
                    for theirs, ours in _RECAP_KEYS.items()
                }
                for host in data.get("processed", {})
            }
        elif kind == "playbook_on_no_hosts_matched":
            self.logger.warning("a play matched no host")

    def _track(self, data: dict[str, Any], event: dict[str, Any]) -> _HostTrack | None:
        host = data.get("host")
        if not host:
            return None
        track = self._tracks.setdefault(host, _HostTrack())
        created = event.get("created")
        if created:
            stamp = datetime.fromisoformat(created)
            track.first = track.first or stamp
            track.last = stamp
        return track

    def _result(self, outcome: str, data: dict[str, Any], event: dict[str, Any]) -> None:
        track = self._track(data, event)
        if track is None:
            return
        host, task = data["host"], data.get("task", "?")
        res = data.get("res") or {}
        track.results += 1
        if outcome == "ok" and res.get("changed"):
            outcome = "changed"
            if self.record_changes:
                track.changes.append(TaskChange(task=task, diff=_task_diff(res)))
        track.counts[outcome] = track.counts.get(outcome, 0) + 1
        published = (res.get("ansible_facts") or {}).get("fleetflow_output")
        if isinstance(published, dict):
            track.outputs.update(published)
        if outcome in ("failed", "unreachable") and data.get("ignore_errors"):
            self.logger.info("%s | failed (ignored) | %s: %s", host, task, failure_message(res))
        elif outcome in ("failed", "unreachable"):
            track.failure = HostFailure(task=task, message=failure_message(res))
            track.done = True
            log = self.logger.error if outcome == "failed" else self.logger.warning
            log("%s | %s | %s: %s", host, outcome, task, track.failure.message)
        elif outcome == "skipped":
            self.logger.debug("%s | skipped | %s", host, task)
        else:
            self.logger.info("%s | %s | %s", host, outcome, task)

    @property
    def touched_hosts(self) -> bool:
        """Whether any task started on any host."""
        return bool(self._tracks)

    def progress(self) -> float:
        """Share of (host x task) results seen; a host that failed counts as finished."""
        if self.recap is not None:
            return 1.0
        tracks = list(self._tracks.items())  # snapshot: the runner thread keeps adding
        per_host = [
            1.0 if t.done else min(t.results / self.task_count, 1.0)
            for h, t in tracks
            if h in self.hosts
        ]
        return min(sum(per_host) / max(len(self.hosts), 1), 0.99)

    def host_results(self) -> dict[str, HostResult]:
        """One result per targeted host: the recap's counts, or the events' if there was none."""
        results = {}
        for host in sorted(set(self.hosts) | set(self.recap or {})):
            track = self._tracks.get(host, _HostTrack())
            counts = (self.recap or {}).get(host) or _counts_from_events(track)
            status = HostResult.status_from_counts(
                ok=counts.get("ok", 0),
                changed=counts.get("changed", 0),
                unreachable=counts.get("unreachable", 0),
                failed=counts.get("failed", 0),
                skipped=counts.get("skipped", 0),
            )
            duration = (
                (track.last - track.first).total_seconds() if track.first and track.last else 0.0
            )
            results[host] = HostResult(
                host=host,
                status=status,
                duration_seconds=duration,
                failure=track.failure if status in ("failed", "unreachable") else None,
                outputs=track.outputs,
                changes=track.changes,
                **counts,
            )
        return results


def _task_diff(res: dict[str, Any]) -> str:
    """The diff of a task result; a loop's is the diffs of its changed items."""
    if "diff" in res:
        return render_diff(res["diff"])
    items = res.get("results")
    if isinstance(items, list):
        diffs = (render_diff(i["diff"]) for i in items if isinstance(i, dict) and "diff" in i)
        return "\n".join(d for d in diffs if d)
    return ""


def _counts_from_events(track: _HostTrack) -> dict[str, int]:
    counts = dict(track.counts)
    # Ansible's recap counts a changed task as ok too.
    counts["ok"] = counts.get("ok", 0) + counts.get("changed", 0)
    return counts
