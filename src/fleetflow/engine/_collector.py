"""Runner events -> live log lines, progress and per-host results.

The collector runs inside ansible-runner's read loop, so it only updates memory and hands
lines to a logger (Prefect's handler batches them to the API in the background). Progress
and the hosts still busy are read from another thread (`progress()`, `running()`), never
pushed from this loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from time import monotonic
from typing import Any

from fleetflow.engine._diff import render_diff
from fleetflow.engine._guard import TASK_NAME as GUARD_TASK
from fleetflow.engine._guard import FenceReport, describe
from fleetflow.results import HostFailure, HostResult, Leftover, TaskChange

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
_LOOP_FAILED = "One or more items failed"  # ansible-core 2.21's msg for a failed loop
# A failed loop names this many failed items, then counts the rest.
_ITEMS_SHOWN = 3
_LABEL_LIMIT = 80
# Ansible's own prefixes; the same words on a host's output are the host's business.
_WARNING_PREFIXES = ("[WARNING]: ", "[DEPRECATION WARNING]: ")
# Ansible prints it after the first deprecation: advice, not a problem of the run.
_WARNING_NOISE = "Deprecation warnings can be disabled"
# Events that carry Ansible's own display lines (warnings are "warning" events; a
# deprecation shown while a task runs arrives as "verbose" lines).
_DISPLAY_EVENTS = frozenset({"verbose", "warning", "deprecated", "system_warning"})
# Distinct warnings logged per run: a playbook warning on every loop item must not flood.
_WARNINGS_MAX = 50
_ENDS = (slice(None, _TAIL_WINDOW), slice(-_TAIL_WINDOW, None))


@dataclass(frozen=True)
class RunningHost:
    """A targeted host busy with a task: its name and how long it has been at it."""

    host: str
    task: str
    seconds: float


@dataclass(frozen=True)
class LoopFailures:
    """A loop's failed items as their own events told (ansible-core 2.21 leaves `failed`
    out of the items in the loop's result): the first few, and how many failed."""

    first: tuple[dict[str, Any], ...]
    count: int


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
    # The failed items of the task running now (runner_item_on_failed events).
    failed_items: list[dict[str, Any]] = field(default_factory=list)
    items_failed: int = 0
    leftovers: list[Leftover] = field(default_factory=list)
    # Outcomes of fleetflow's own fence task: left out of the recap's counts.
    hidden: dict[str, int] = field(default_factory=dict)


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


def failure_message(res: dict[str, Any], loop: LoopFailures | None = None) -> str:
    """A failed result in one bounded message: msg, the exit code and the tail of stderr.

    e.g. "non-zero return code; rc=3; stderr (last 10 lines): ...". Output is cut to its
    last lines because that is where a failing command says why; a 20 MB stderr costs a
    4 KB slice, never a split of the whole string. An SSH host-key refusal leads with its
    reason; the connection is never retried without checking the key. A failed loop names
    its failed items (`loop`, else those its result marks failed) with their reasons.
    """
    failures = _loop_failures(res, loop)
    text = _describe_loop(res, failures) if failures else _describe(res, _MESSAGE_LIMIT)
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


def _loop_failures(res: dict[str, Any], loop: LoopFailures | None) -> LoopFailures | None:
    """A loop's failed items, when the loop's own msg is only Ansible's generic one."""
    items = res.get("results")
    if res.get("censored") or _head(res, "msg") != _LOOP_FAILED or not isinstance(items, list):
        return None
    if loop is not None and loop.count:
        return loop
    failed = [i for i in items if isinstance(i, dict) and i.get("failed")]
    return LoopFailures(tuple(failed[:_ITEMS_SHOWN]), len(failed)) if failed else None


def _describe_loop(res: dict[str, Any], failures: LoopFailures) -> str:
    """e.g. "One or more items failed; 2 of 3 items failed: (item=b) ...; rc=3 | (item=c) ...".

    Every failed item is counted and the first few speak: a loop failing on two packages
    must not read as if only the first one did.
    """
    count, total = failures.count, len(res["results"])
    intro = f"{_describe(res, _HEAD_LIMIT)}; {count} of {total} items failed: "
    shown = failures.first[:_ITEMS_SHOWN]
    more = f" | and {count - len(shown)} more" if count > len(shown) else ""
    room = (_MESSAGE_LIMIT - len(intro) - len(more)) // len(shown) - len(" | ")
    parts = [_describe_item(item, min(room, _ITEM_LIMIT)) for item in shown]
    return intro + " | ".join(parts) + more


def _describe_item(item: dict[str, Any], limit: int) -> str:
    # Ansible's label (loop_control.label) is what its own output shows; a no_log item's
    # label and value are as secret as its result.
    if item.get("censored") or item.get("_ansible_no_log"):
        label = "censored due to no_log"
    else:
        label = str(item.get("_ansible_item_label", item.get("item", "?")))
    label = f"(item={_clip(label, _LABEL_LIMIT)})"
    return f"{label} {_describe(item, limit - len(label) - 1)}"


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
        # host -> (task, monotonic start): replaced whole, so another thread reads a pair.
        self._started: dict[str, tuple[str, float]] = {}
        self._warned: list[str] = []

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
            track = self._track(data, event)
            if track is not None:
                self._started[data["host"]] = (str(data.get("task") or "?"), monotonic())
                track.failed_items, track.items_failed = [], 0
        elif kind == "runner_item_on_failed":
            self._item_failed(data, event)
        elif kind in _RESULT_EVENTS:
            self._result(_RESULT_EVENTS[kind], data, event)
        elif kind in _DISPLAY_EVENTS:
            self._display_warning(str(event.get("stdout") or ""))
        elif kind == "playbook_on_stats":
            self._started.clear()
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
        self._started.pop(host, None)
        if task == GUARD_TASK and self._fenced(outcome, host, track, res):
            return
        self._result_warnings(res)
        track.results += 1
        if outcome == "ok" and res.get("changed"):
            outcome = "changed"
            if self.record_changes:
                track.changes.append(TaskChange(task=task, diff=_task_diff(res)))
        track.counts[outcome] = track.counts.get(outcome, 0) + 1
        published = (res.get("ansible_facts") or {}).get("fleetflow_output")
        if isinstance(published, dict):
            track.outputs.update(published)
        loop = LoopFailures(tuple(track.failed_items), track.items_failed)
        track.failed_items, track.items_failed = [], 0
        if outcome in ("failed", "unreachable") and data.get("ignore_errors"):
            message = failure_message(res, loop)
            self.logger.info("%s | failed (ignored) | %s: %s", host, task, message)
        elif outcome in ("failed", "unreachable"):
            track.failure = HostFailure(task=task, message=failure_message(res, loop))
            track.done = True
            log = self.logger.error if outcome == "failed" else self.logger.warning
            log("%s | %s | %s: %s", host, outcome, task, track.failure.message)
        elif outcome == "skipped":
            self.logger.debug("%s | skipped | %s", host, task)
        else:
            self.logger.info("%s | %s | %s", host, outcome, task)

    def _fenced(self, outcome: str, host: str, track: _HostTrack, res: dict[str, Any]) -> bool:
        """The fence task's result (engine/_guard.py): log and keep its leftovers; an ok or
        skipped one is not the playbook's and stays out of the counts. False: count it."""
        if outcome == "unreachable":
            return False
        report = FenceReport.of(res)
        track.leftovers.extend(report.leftovers)
        for leftover in report.leftovers:
            self.logger.warning("%s | %s", host, describe(leftover))
        if outcome in ("ok", "skipped"):
            track.hidden[outcome] = track.hidden.get(outcome, 0) + 1
            return True
        track.results += 1
        track.counts["failed"] = track.counts.get("failed", 0) + 1
        track.failure = HostFailure(task=GUARD_TASK, message=report.message())
        track.done = True
        self.logger.error("%s | failed | %s: %s", host, GUARD_TASK, track.failure.message)
        return True

    def _item_failed(self, data: dict[str, Any], event: dict[str, Any]) -> None:
        """Keep the first failed items of the host's task (their count, not all of them)."""
        track = self._track(data, event)
        res = data.get("res")
        if track is None or not isinstance(res, dict):
            return
        track.items_failed += 1
        if len(track.failed_items) < _ITEMS_SHOWN:
            track.failed_items.append(res)

    def _display_warning(self, stdout: str) -> None:
        """A warning Ansible printed itself: its first line (the rest is where it points)."""
        line = stdout[:_TAIL_WINDOW].lstrip().split("\n", 1)[0].rstrip()
        prefix = next((p for p in _WARNING_PREFIXES if line.startswith(p)), None)
        if prefix is not None:
            self._warn(prefix, line[len(prefix) :])

    def _result_warnings(self, res: dict[str, Any]) -> None:
        """Warnings and deprecations a task returned: once per host, or per loop item."""
        items = res.get("results")
        for part in [res, *(items if isinstance(items, list) else [])]:
            if not isinstance(part, dict) or part.get("censored"):
                continue
            for key, prefix in (
                ("warnings", "[WARNING]: "),
                ("deprecations", _WARNING_PREFIXES[1]),
            ):
                found = part.get(key)
                for entry in found if isinstance(found, list) else []:
                    text = entry.get("msg") if isinstance(entry, dict) else entry
                    if text:
                        self._warn(prefix, str(text))

    def _warn(self, prefix: str, text: str) -> None:
        """Log an Ansible warning once per run, as Ansible words it.

        Every host returns the same deprecation, and Ansible prints it once more with its
        removal version appended: both are the one already logged.
        """
        text = _clip(text.strip(), _HEAD_LIMIT)
        if not text or text.startswith(_WARNING_NOISE) or len(self._warned) > _WARNINGS_MAX:
            return
        if any(_same_warning(seen, text) for seen in self._warned):
            return
        self._warned.append(text)
        if len(self._warned) > _WARNINGS_MAX:
            self.logger.warning(
                "more Ansible warnings than %d: the rest are not logged", _WARNINGS_MAX
            )
            return
        self.logger.warning("%s%s", prefix, text)

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

    def running(self) -> list[RunningHost]:
        """Targeted hosts inside a task that has no result yet, longest-running first.

        Seconds are counted on this process's monotonic clock from when the start event
        reached us, not from Ansible's `created` stamps: those are wall-clock time, which
        NTP or an operator can move while a task runs.
        """
        now = monotonic()
        started = list(self._started.items())  # snapshot: the runner thread keeps changing it
        busy = [
            RunningHost(host=host, task=task, seconds=max(now - since, 0.0))
            for host, (task, since) in started
            if host in self.hosts
        ]
        return sorted(busy, key=lambda r: (-r.seconds, r.host))

    def host_results(self) -> dict[str, HostResult]:
        """One result per targeted host: the recap's counts, or the events' if there was none."""
        results = {}
        for host in sorted(set(self.hosts) | set(self.recap or {})):
            track = self._tracks.get(host, _HostTrack())
            recap = (self.recap or {}).get(host)
            counts = _without(recap, track.hidden) if recap else _counts_from_events(track)
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
                leftovers=track.leftovers,
                **counts,
            )
        return results


def _same_warning(one: str, other: str) -> bool:
    """Equal, or one is the other with words appended (Ansible's "This feature will be
    removed from ... version ..."); 'name x' and 'name xy' stay two warnings."""
    short, long = sorted((one, other), key=len)
    return long == short or long.startswith(short + " ")


def _task_diff(res: dict[str, Any]) -> str:
    """The diff of a task result; a loop's is the diffs of its changed items."""
    if "diff" in res:
        return render_diff(res["diff"])
    items = res.get("results")
    if isinstance(items, list):
        diffs = (render_diff(i["diff"]) for i in items if isinstance(i, dict) and "diff" in i)
        return "\n".join(d for d in diffs if d)
    return ""


def _without(recap: dict[str, int], hidden: dict[str, int]) -> dict[str, int]:
    """The recap's counts less fleetflow's own task."""
    return {key: max(value - hidden.get(key, 0), 0) for key, value in recap.items()}


def _counts_from_events(track: _HostTrack) -> dict[str, int]:
    counts = dict(track.counts)
    # Ansible's recap counts a changed task as ok too.
    counts["ok"] = counts.get("ok", 0) + counts.get("changed", 0)
    return counts
