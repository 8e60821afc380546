"""The benchmark harness's bookkeeping: ordering, ratios, and the RESULTS.md sections."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ..conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import _common


def test_round_robin_rotates_the_first_side_every_round() -> None:
    calls: list[str] = []

    def side(name: str, seconds: float) -> Callable[[], float]:
        def run() -> float:
            calls.append(name)
            return seconds

        return run

    times = _common.round_robin(3, {"a": side("a", 1.0), "b": side("b", 2.0), "c": side("c", 3.0)})
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert times == {"a": [1.0] * 3, "b": [2.0] * 3, "c": [3.0] * 3}


def test_paired_ratio_is_the_median_of_per_pair_ratios() -> None:
    result = _common.Paired(a=[10.0, 20.0, 10.0], b=[11.0, 30.0, 10.5])
    assert result.ratio == pytest.approx(1.1)
    assert result.medians() == (10.0, 11.0)


def test_a_section_is_replaced_in_place_and_a_new_one_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n<!-- bench:a -->\nold\n<!-- /bench:a -->\n\ntail\n")
    monkeypatch.setattr(_common, "RESULTS", results)
    _common.write_section("a", "new a")
    _common.write_section("b", "new b")
    text = results.read_text()
    assert "old" not in text and text.index("new a") < text.index("tail") < text.index("new b")
    assert text.count("<!-- bench:a -->") == 1 and text.count("<!-- /bench:b -->") == 1


def test_peak_memory_includes_a_child_started_while_sampling() -> None:
    hog = "b = bytearray(300 * 2**20); import time; time.sleep(0.6)"
    with _common.PeakMemory(interval=0.05) as memory:
        subprocess.run([sys.executable, "-c", hog], check=True)
    assert memory.peak > 300 * 2**20
