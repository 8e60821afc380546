"""The text of a run's artifacts: the per-host table and its description, the progress
line, the diff of a check/diff run and its log summary.

Pure functions of a (masked) result, so that what an operator reads can be tested without
a server; engine/publish.py sends them. Prefect renders table cells as plain text (no
colour), so a status carries a text mark; descriptions are markdown, so every free text
in them (host and task names, Ansible's messages, diffs) is escaped or fenced here.
The UI's artifact card shows about the first 40 characters of a description: they say
the outcome.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetflow.engine._guard import describe as describe_leftover
from fleetflow.results import HostResult, HostStatus, PlaybookResult, RunStatus

if TYPE_CHECKING:
    from fleetflow.engine._collector import RunningHost

__all__ = [
    "MARKS",
    "diff_log_lines",
    "diff_markdown",
    "fenced",
    "final_percent",
    "markdown_text",
    "one_line",
    "outcome_line",
    "progress_final_text",
    "progress_running_text",
    "table_description",
    "table_rows",
]

MARKS: dict[HostStatus, str] = {
    HostStatus.FAILED: "✗",
    HostStatus.UNREACHABLE: "⚠",
    HostStatus.CHANGED: "●",
    HostStatus.OK: "✓",
    HostStatus.SKIPPED: "○",
}
_RUN_MARKS = {RunStatus.TIMED_OUT: "⏱ timed out", RunStatus.CANCELED: "■ canceled"}
# The table's reason column: short enough to stay on screen; the full text is above it.
REASON_CELL = 80
# Full reasons listed in the description, and how long each may be.
LISTED_HOSTS = 20
REASON_TEXT = 1000
# Hosts named in the progress line; the rest are counted.
RUNNING_NAMED = 5
# Diff artifact bounds: lines per task diff, characters in all.
DIFF_LINES = 200
DIFF_CHARS = 60_000
# What makes inline markdown of text (emphasis, code, links, html, tables, strikethrough);
# the rest (".", "-", "(") matters only at a line's start: _LEADING.
_ESCAPED = re.compile(r"([\\`*_\[\]<>|~!#&])")
_LEADING = re.compile(r"^(\d*)([-+.)])")


def markdown_text(value: object) -> str:
    """`value` as literal inline markdown: markup characters escaped, lines joined.

    A host name, task name or Ansible message is free text: unescaped, `<b>`, `[x](y)` or
    a leading `#` or `-` would be rendered rather than shown.
    """
    text = _ESCAPED.sub(r"\\\1", " ".join(str(value).split()))
    return _LEADING.sub(r"\1\\\2", text)


def fenced(text: str, language: str = "") -> list[str]:
    """`text` in a fenced block no line of it can close (longer than any backtick run)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{language}", *text.splitlines(), fence]


def _hosts_word(count: int) -> str:
    return f"{count} host" if count == 1 else f"{count} hosts"


def outcome_line(result: PlaybookResult) -> str:
    """The run's outcome first ("✗ 1 of 3 hosts failed"), then the playbook and inventory,
    as markdown (the names escaped; the rest is left plain for the card's raw preview)."""
    total = len(result.hosts)
    failed = len(result.hosts_with(HostStatus.FAILED))
    unreachable = len(result.hosts_with(HostStatus.UNREACHABLE))
    would = "would change" if result.check else "changed"
    if failed:
        head = f"✗ {failed} of {total} hosts failed"
        head += f", {unreachable} unreachable" if unreachable else ""
    elif unreachable:
        head = f"⚠ {unreachable} of {total} hosts unreachable"
    elif result.status in _RUN_MARKS:
        head = _RUN_MARKS[result.status]
    elif result.status != RunStatus.SUCCESSFUL:
        head = f"✗ {result.status.value}"
    else:
        changed = len(result.changed_hosts)
        head = f"✓ {_hosts_word(total)} ok" + (f", {changed} {would}" if changed else "")
    if result.status in _RUN_MARKS and (failed or unreachable):
        head += f" ({result.status.value.replace('_', ' ')})"
    return f"{head} · {_where(result)}"


def _where(result: PlaybookResult) -> str:
    where = f"{Path(result.playbook).stem} on {Path(result.inventory).name}"
    return markdown_text(where) + (" (check mode)" if result.check else "")


def _order(host: HostResult) -> tuple[int, str]:
    return (0 if not host.succeeded else 1, host.host)


def _reason(host: HostResult) -> str:
    return f"{host.failure.task}: {host.failure.message}" if host.failure else ""


def one_line(text: str, limit: int) -> str:
    """`text` on one line (runs of whitespace as one space), cut to `limit` with an ellipsis:
    for a table cell, a state message or a run's name."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def table_rows(result: PlaybookResult) -> list[dict[str, Any]]:
    """The table artifact's rows: failed and unreachable hosts first, then by name.

    A mark column comes first and a short reason sits beside the status, so both are on
    screen; the keys of `PlaybookResult.table()` keep their plain values (readers match
    `status` against HostStatus values and search `failure`, the full text, kept last).
    """
    by_host = {row["host"]: row for row in result.table()}
    rows = []
    for host in sorted(result.hosts.values(), key=_order):
        row = dict(by_host[host.host])
        failure = row.pop("failure")
        rows.append(
            {
                "mark": MARKS.get(host.status, ""),
                "host": row.pop("host"),
                "status": row.pop("status"),
                "reason": one_line(failure, REASON_CELL),
                **row,
                "failure": failure,
            }
        )
    return rows


def _marked(status: HostStatus) -> str:
    return f"{MARKS.get(status, '')} {status.value}".strip()


def table_description(result: PlaybookResult) -> str:
    """Markdown above the table: the outcome, then every failed host's full reason."""
    lines = [outcome_line(result), "", markdown_text(result.summary())]
    if result.source is not None:
        lines += ["", f"Content: {markdown_text(str(result.source))}"]
    failing = sorted((h for h in result.hosts.values() if not h.succeeded), key=_order)
    if failing:
        lines += ["", "**Why:**", ""]
    for host in failing[:LISTED_HOSTS]:
        reason = one_line(_reason(host) or host.status.value, REASON_TEXT)
        lines.append(f"- {_marked(host.status)} **{markdown_text(host.host)}**: "
                     f"{markdown_text(reason)}")  # fmt: skip
    if len(failing) > LISTED_HOSTS:
        lines.append(f"- and {len(failing) - LISTED_HOSTS} more (see the table)")
    if result.message and not failing:
        lines += ["", markdown_text(one_line(result.message, REASON_TEXT))]
    return "\n".join(lines + _leftover_lines(result))


def _leftover_lines(result: PlaybookResult) -> list[str]:
    """Processes of earlier runs found on the hosts: what was stopped, where (#26)."""
    found = [(h.host, g) for h in sorted(result.hosts.values(), key=_order) for g in h.leftovers]
    if not found:
        return []
    lines = ["", "**Leftovers of earlier runs:**", ""]
    for host, leftover in found[:LISTED_HOSTS]:
        text = one_line(describe_leftover(leftover), REASON_TEXT)
        lines.append(f"- **{markdown_text(host)}**: {markdown_text(text)}")
    if len(found) > LISTED_HOSTS:
        lines.append(f"- and {len(found) - LISTED_HOSTS} more (see the run's log)")
    return lines


def _duration(seconds: float) -> str:
    # Whole 5 s steps: the line changes (and is re-sent) every 5 s, not every second.
    whole = int(seconds) // 5 * 5
    if whole < 60:
        return f"{whole} s" if whole else "<5 s"
    return f"{whole // 60} min {whole % 60:02d} s"


def progress_running_text(title: str, running: Sequence[RunningHost]) -> str:
    """The progress artifact's description while the run goes: who is still on what."""
    if not running:
        return markdown_text(title)
    named = [
        f"**{markdown_text(r.host)}** on {markdown_text(r.task or '?')} for {_duration(r.seconds)}"
        for r in running[:RUNNING_NAMED]
    ]
    more = len(running) - RUNNING_NAMED
    tail = f", and {more} more" if more > 0 else ""
    return (
        f"{markdown_text(title)}: {_hosts_word(len(running))} still running: "
        + "; ".join(named)
        + tail
    )


def progress_final_text(result: PlaybookResult) -> str:
    """The progress artifact's last description: done, or why it stopped."""
    if result.status == RunStatus.SUCCESSFUL:
        return f"✓ done: {outcome_line(result).removeprefix('✓ ')}"
    failed = len(result.hosts_with(HostStatus.FAILED))
    unreachable = len(result.hosts_with(HostStatus.UNREACHABLE))
    why = [f"{_hosts_word(failed)} failed"] if failed else []
    why += [f"{_hosts_word(unreachable)} unreachable"] if unreachable else []
    if result.status != RunStatus.FAILED or not why:
        why.insert(0, result.status.value.replace("_", " "))
    return f"✗ stopped: {', '.join(why)} · {_where(result)}"


def final_percent(result: PlaybookResult, last: float | None) -> float:
    """100 only for a run that succeeded; otherwise the last measured value or the share
    of hosts that finished well, whichever is lower, and never 100."""
    if result.status == RunStatus.SUCCESSFUL:
        return 100.0
    hosts = list(result.hosts.values())
    share = 100.0 * sum(h.succeeded for h in hosts) / len(hosts) if hosts else 0.0
    return round(min(share, last if last is not None else share, 99.0), 1)


def _task_list(host: HostResult) -> str:
    return ", ".join(change.task for change in host.changes)


def diff_log_lines(result: PlaybookResult) -> list[str]:
    """One line per host that would change (changed, outside check mode), and a total."""
    verb = "would change" if result.check else "changed"
    changing = [h for _, h in sorted(result.hosts.items()) if h.changes]
    lines = [
        f"{h.host} {verb} {len(h.changes)} task{'s' * (len(h.changes) != 1)}: {_task_list(h)}"
        for h in changing
    ]
    tasks = sum(len(h.changes) for h in changing)
    if not changing:
        lines.append("nothing would change" if result.check else "nothing changed")
    else:
        lines.append(
            f"in all, {_hosts_word(len(changing))} {verb}, {tasks} task{'s' * (tasks != 1)}"
        )
    return lines


def _diff_lines(diff: str) -> str:
    lines = diff.splitlines()
    if len(lines) <= DIFF_LINES:
        return diff
    cut = len(lines) - DIFF_LINES
    return "\n".join([*lines[:DIFF_LINES], f"... {cut} more lines not shown"])


def diff_markdown(result: PlaybookResult, limit: int = DIFF_CHARS) -> str:
    """Per host, per task, the diff in a fenced block; cut between blocks past `limit`
    characters (a fence is never left open), with a note of what was left out."""
    where = f"{Path(result.playbook).stem} on {Path(result.inventory).name}"
    mode = " (check mode: nothing was changed)" if result.check else ""
    out = [f"# Diff: {markdown_text(where)}{mode}", "", markdown_text(diff_log_lines(result)[-1])]
    size = sum(len(line) + 1 for line in out)
    left: list[str] = []
    for host in (h for _, h in sorted(result.hosts.items()) if h.changes):
        block = ["", f"## {markdown_text(host.host)}"]
        for change in host.changes:
            block += ["", f"### {markdown_text(change.task)}", ""]
            block += fenced(_diff_lines(change.diff), "diff") if change.diff else ["(no diff)"]
        text = "\n".join(block)
        if left or size + len(text) > limit:
            left.append(host.host)
            continue
        out.append(text)
        size += len(text) + 1
    if left:
        named = markdown_text(", ".join(left[:10])) + (", ..." if len(left) > 10 else "")
        out += ["", f"... cut at {limit} characters: {len(left)} more hosts not shown ({named})"]
    return "\n".join(out) + "\n"
