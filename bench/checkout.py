"""Benchmark: what the deployments' pull step (issue #25) adds to the start of a run.

`fleetflow.ops.checkout.checkout` of this repository's HEAD from its own directory as the
git remote (file://, as a worker on this machine fetches it), timed in this process (the
flow-run process calls it the same way): 10 runs of a commit the worker has not seen
(fresh cache: mirror fetch, `git archive`, digest) and 10 of a commit already extracted
(digest check only), p50 and max of each.

Run: fleetflow bench checkout [--runs 10] [--no-write]
(or .venv/bin/python bench/checkout.py)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import write_section

from fleetflow.ops.checkout import CACHE_VARIABLE, checkout

REPO = Path(__file__).resolve().parents[1]


def _timed(remote: str, commit: str) -> float:
    started = time.perf_counter()
    checkout(remote, commit)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    files = len(subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True,
                               text=True, check=True).stdout.splitlines())  # fmt: skip
    cwd, cold, warm = Path.cwd(), [], []
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(args.runs):
            os.environ[CACHE_VARIABLE] = str(Path(scratch) / f"cold-{run}")
            cold.append(_timed(REPO.as_uri(), commit))
        os.environ[CACHE_VARIABLE] = str(Path(scratch) / "warm")
        _timed(REPO.as_uri(), commit)
        warm = [_timed(REPO.as_uri(), commit) for _ in range(args.runs)]
        os.chdir(cwd)
    load = os.getloadavg()[0]
    body = (
        "## Pull step: the commit a run executes (issue #25)\n\n"
        f"`bench/checkout.py`: `fleetflow.ops.checkout.checkout` of this repository "
        f"({files} files) from a file:// remote, {args.runs} runs each, in-process; "
        f"2 cores, load average {load:.1f} at start.\n\n"
        "| case | p50 | max |\n|---|---|---|\n"
        f"| first run of a commit on a worker (fetch, archive, digest) | "
        f"{statistics.median(cold) * 1000:.0f} ms | {max(cold) * 1000:.0f} ms |\n"
        f"| later runs of the commit (digest check only) | "
        f"{statistics.median(warm) * 1000:.0f} ms | {max(warm) * 1000:.0f} ms |\n\n"
        "The cached case is what a run pays in the trigger-latency budget; the first run "
        "of each new commit on each worker pays the fetch once (deploy warms the deploying "
        "machine's cache, so local workers skip it). A remote over the network adds its "
        "transfer to the first run only."
    )
    print(body)
    if not args.no_write:
        write_section("checkout", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
