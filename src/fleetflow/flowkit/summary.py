"""Human-readable summaries of playbook results."""

from __future__ import annotations

from fleetflow.results import PlaybookResult

__all__ = ["format_result", "print_result"]

_COLUMNS = ("host", "status", "ok", "changed", "unreachable", "failed", "skipped", "attempts")


def format_result(result: PlaybookResult) -> str:
    """A PLAY RECAP-like table with the failing task and message under each failed host."""
    rows = result.table()
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in _COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in _COLUMNS)]
    for row in rows:
        lines.append("  ".join(str(row[c]).ljust(widths[c]) for c in _COLUMNS))
        if row["failure"]:
            lines.append(f"    -> {row['failure']}")
    lines.append(result.summary())
    if result.message:
        lines.append(result.message)
    return "\n".join(lines)


def print_result(result: PlaybookResult) -> None:
    """Print the summary (flows log it to Prefect with log_prints=True)."""
    print(format_result(result))  # noqa: T201 - called from flows, which capture prints
