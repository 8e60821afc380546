"""The benchmark harness runs end to end on a small scale (the real figures come from
`make bench`; here only that each benchmark works and checks what it claims)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _bench(*args: str) -> str:
    done = subprocess.run(
        [str(BIN / "fleetflow"), "bench", *args, "--no-write"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def test_overhead_compares_both_sides_on_a_lab() -> None:
    out = _bench("overhead", "--hosts", "2", "--runs", "1")
    row = re.search(r"^\| 2 \| ([\d.]+) s \| ([\d.]+) s \| \*\*([\d.]+)x\*\*", out, re.M)
    assert row, out[-3000:]
    plain, ours, ratio = (float(v) for v in row.groups())
    assert plain > 0 and ours > 0 and ratio == pytest.approx(ours / plain, rel=0.01)


def test_event_pipeline_loses_no_line() -> None:
    out = _bench("events", "--tasks", "5", "--runs", "1", "--repeat", "2")
    lost = re.search(r"^\| log lines lost \| 0 of ([\d,]+)", out, re.M)
    assert lost and int(lost.group(1).replace(",", "")) > 5 * 5 * 2, out[-3000:]


def test_checkout_times_a_new_and_a_cached_commit() -> None:
    out = _bench("checkout", "--runs", "2")
    rows = re.findall(r"^\| (first run|later runs)[^|]*\| (\d+) ms \| (\d+) ms \|", out, re.M)
    assert [r[0] for r in rows] == ["first run", "later runs"], out[-3000:]
    assert all(0 < int(p50) <= int(most) for _, p50, most in rows)
