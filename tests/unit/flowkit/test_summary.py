"""What flows show: markdown tables for artifacts (every cell escaped) and the terminal recap."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleetflow.flowkit.summary import markdown_cell, markdown_table, print_result
from fleetflow.results import HostResult, HostStatus, PlaybookResult, RunStatus


def test_a_table_has_a_header_a_rule_and_one_line_per_row() -> None:
    table = markdown_table(("step", "what", "changed"), [(1, "Deploy", "web-01"), (2, "Ping", "")])
    assert table.splitlines() == [
        "| step | what | changed |",
        "|---|---|---|",
        "| 1 | Deploy | web-01 |",
        "| 2 | Ping |  |",
    ]


def test_every_cell_is_escaped() -> None:
    """A `|` or a line break in free text (a step title, a failure message) would split a
    cell or end the row; before the shared builder only the approval table escaped them."""
    table = markdown_table(("what", "failure"), [("a | b", "line one\nline two")])
    assert table.splitlines()[2] == "| a \\| b | line one line two |"
    assert markdown_cell(3) == "3"


def test_a_table_without_column_names_keeps_a_blank_header() -> None:
    table = markdown_table((), [("outcome", "**approved**"), ("reason", "ok")])
    assert table.splitlines()[:3] == ["| | |", "|---|---|", "| outcome | **approved** |"]


def test_a_table_without_rows_is_its_header() -> None:
    assert markdown_table(("host", "status"), []) == "| host | status |\n|---|---|"


def test_print_result_prints_the_recap(capsys: pytest.CaptureFixture[str]) -> None:
    result = PlaybookResult(
        playbook="site.yml",
        inventory="lab",
        status=RunStatus.SUCCESSFUL,
        rc=0,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        finished_at=datetime(2026, 1, 1, tzinfo=UTC),
        hosts={"web-01": HostResult(host="web-01", status=HostStatus.CHANGED, changed=2)},
    )
    print_result(result)
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "host", "status", "ok", "changed", "unreachable", "failed", "skipped", "attempts",
    ]  # fmt: skip
    assert out.splitlines()[1].split()[:2] == ["web-01", "changed"]
