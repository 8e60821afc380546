"""The docs site's generated pages: the reference (command line, flows, settings, metrics)
made from the code, and the benchmarks page made from bench/RESULTS.md, each time the site
is built (tools/docs_hooks.py hands them to MkDocs), so none of them can drift from what
they describe. tests/unit/ops/test_reference.py fails when something they list is
undocumented."""

from __future__ import annotations

from pathlib import Path

from fleetflow.ops.reference._cli import cli_page
from fleetflow.ops.reference._flows import flows_page
from fleetflow.ops.reference._models import metrics_page, settings_page

__all__ = [
    "benchmarks_page",
    "cli_page",
    "flows_page",
    "generated_pages",
    "metrics_page",
    "settings_page",
]


def benchmarks_page(project_dir: Path) -> str:
    """bench/RESULTS.md as it is (the benchmarks write it)."""
    results = project_dir / "bench" / "RESULTS.md"
    return results.read_text() + f"\n\n*Generated from `{results.relative_to(project_dir)}`.*\n"


def generated_pages(project_dir: Path) -> dict[str, str]:
    """Page path in the site's docs -> its Markdown, for the repository at `project_dir`."""
    return {
        "reference/cli.md": cli_page(),
        "reference/flows.md": flows_page(project_dir),
        "reference/settings.md": settings_page(),
        "reference/metrics.md": metrics_page(),
        "benchmarks.md": benchmarks_page(project_dir),
    }
