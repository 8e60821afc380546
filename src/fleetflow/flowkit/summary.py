"""How flows show what happened: the terminal recap of a playbook result (printed, so that
flows with log_prints=True log it to Prefect) and markdown tables for their artifacts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fleetflow.results import PlaybookResult

__all__ = ["format_result", "markdown_cell", "markdown_table", "print_result"]

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


def markdown_cell(value: object) -> str:
    """`value` as one table cell: a `|` or a line break in it would end the cell or the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table with every cell escaped (a host name, step title or failure message
    is free text). Without `columns` the header line is left blank (a key/value table):
    markdown needs one, as wide as the rows."""
    body = [[markdown_cell(cell) for cell in row] for row in rows]
    width = len(columns) or (len(body[0]) if body else 0)
    header = _row(columns) if columns else "|" + " |" * width
    return "\n".join([header, "|" + "---|" * width, *map(_row, body)])


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
