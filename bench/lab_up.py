"""Benchmark: how long `lab up N` takes on a warm image cache, and what 50 hosts cost.

Run: .venv/bin/python bench/lab_up.py  (root; uses labs named bench-*; removes them)
"""

from __future__ import annotations

import statistics
import time

from fleetflow.lab import Lab, image_info, image_path
from fleetflow.settings import get_settings


def timed_up(name: str, count: int) -> tuple[float, float]:
    lab = Lab(name)
    try:
        started = time.monotonic()
        hosts = lab.up(count)
        up = time.monotonic() - started
        bad = [h.name for h in hosts if lab.ssh(h.name, "hostname").stdout.strip() != h.name]
        if len(hosts) != count or bad:
            raise SystemExit(f"{name}: {len(hosts)} hosts, ssh failed on {bad}")
    finally:
        started = time.monotonic()
        lab.down()
        down = time.monotonic() - started
    return up, down


def main() -> None:
    settings = get_settings()
    info = image_info(image_path(settings.image_dir, settings.lab_debian_suite))
    print(f"image: {info}")
    five = [timed_up("bench-5", 5) for _ in range(5)]
    print(
        f"lab up 5 (warm, median of 5): {statistics.median(u for u, _ in five):.2f} s, "
        f"down {statistics.median(d for _, d in five):.2f} s"
    )
    up, down = timed_up("bench-50", 50)
    print(f"lab up 50: {up:.2f} s, down {down:.2f} s (every host answered ssh)")


if __name__ == "__main__":
    main()
