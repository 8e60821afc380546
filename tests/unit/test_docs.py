"""The docs site (mkdocs.yml) builds with every warning an error, with its generated pages;
a broken link fails the build (so it fails `make lint`, and CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO

pytestmark = pytest.mark.slow


def _build(config: Path, site: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", *flags, "-f", str(config),
         "--site-dir", str(site)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip


def test_the_site_builds_strict_with_every_page_of_the_nav(tmp_path: Path) -> None:
    built = _build(REPO / "mkdocs.yml", tmp_path / "site", "--strict")
    assert built.returncode == 0, built.stderr
    assert "WARNING" not in built.stderr
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "fleetflow lab up" in cli and "--server-url" in cli
    flows = (tmp_path / "site" / "reference" / "flows" / "index.html").read_text()
    assert "end_of_day/lab" in flows and "settlement_timeout" in flows
    settings = (tmp_path / "site" / "reference" / "settings" / "index.html").read_text()
    assert "FLEETFLOW_DATABASE_URL" in settings
    metrics = (tmp_path / "site" / "reference" / "metrics" / "index.html").read_text()
    assert "fleetflow_host_outcomes_total" in metrics
    benchmarks = (tmp_path / "site" / "benchmarks" / "index.html").read_text()
    assert "Benchmark results" in benchmarks
    assert (tmp_path / "site" / "blackouts.example.yml").is_file()


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    """The repository's config on a copy of docs/ with one link to a page that is not
    there: strict mode (mkdocs.yml's own, no flag needed) turns the warning into a
    failure."""
    docs = tmp_path / "docs"
    subprocess.run(["cp", "-r", str(REPO / "docs"), str(docs)], check=True)
    (docs / "lab.md").write_text("# The lab\n\nSee [the missing page](missing.md).\n")
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    config |= {"docs_dir": str(docs), "hooks": [str(REPO / "tools" / "docs_hooks.py")]}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    built = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0
    assert "missing.md" in built.stderr
