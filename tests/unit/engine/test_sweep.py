"""A worker's start removes what killed runs left (issue #18: secret files stayed in /tmp)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from fleetflow.engine.sweep import sweep_stale_run_dirs


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_directories_of_dead_processes_go_and_the_rest_stay(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getpid()
    stale = [tmp_path / f"ff-{kind}-{dead}-abc" for kind in ("run", "cp", "preflight")]
    kept = [tmp_path / f"ff-run-{alive}-abc", tmp_path / "ff-other-1-x", tmp_path / "mine"]
    for directory in (*stale, *kept):
        (directory / "secrets").mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / f"ff-run-{dead}-link").symlink_to(target)
    removed = sweep_stale_run_dirs([tmp_path, tmp_path / "missing"])
    assert sorted(removed) == sorted(stale)
    assert not any(d.exists() for d in stale)
    assert all(d.exists() for d in kept) and target.exists()


def test_a_zombie_is_dead_and_files_are_not_directories(tmp_path: Path) -> None:
    zombie = subprocess.Popen(["true"])
    try:
        while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)  # exited, not yet waited for
        stale, file = tmp_path / f"ff-cp-{zombie.pid}-a", tmp_path / f"ff-run-{zombie.pid}-b"
        stale.mkdir()
        file.write_text("not a run directory")
        assert sweep_stale_run_dirs([tmp_path]) == [stale]
        assert file.exists()
    finally:
        zombie.wait()


def test_another_users_directory_stays(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("only root can give a directory to another user")
    theirs = tmp_path / f"ff-run-{_dead_pid()}-theirs"
    theirs.mkdir()
    os.chown(theirs, 54321, 54321)
    assert sweep_stale_run_dirs([tmp_path]) == [] and theirs.exists()
