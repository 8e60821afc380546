"""reaper: nothing started under it outlives it or the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fleetflow

REAPER = Path(fleetflow.__file__).parent / "engine" / "reaper.py"


def _running(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if marker.encode() in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def _started(marker: str, count: int) -> None:
    """Wait until `count` processes run `sleep <marker>` (the reaper's own line has it too)."""
    deadline = time.monotonic() + 10
    while len(_running(f"sleep\0{marker}")) < count:
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.02)


def _gone(marker: str, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while _running(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_exit_code_is_the_commands_and_detached_leftovers_are_killed() -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 1000}"  # a unique sleep length
    script = f"setsid sleep {marker} & exit 3"
    done = subprocess.run(
        [sys.executable, str(REAPER), str(os.getpid()), "sh", "-c", script], timeout=30, check=False
    )
    assert done.returncode == 3
    assert _gone(f"sleep\0{marker}")


def test_everything_dies_when_the_process_that_started_it_is_killed() -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 1000}"
    # A run process starting the reaper, as the flow run does; then it is SIGKILLed.
    starter = (
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(REAPER)!r}, str(os.getpid()), 'sh', '-c',"
        f" 'setsid sleep {marker} & sleep {marker}; wait'])\n"
        "time.sleep(600)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", starter])
    try:
        _started(marker, 2)
        run.send_signal(signal.SIGKILL)
        assert _gone(f"sleep\0{marker}"), "a process outlived the killed run"
    finally:
        run.kill()
        run.wait()


def test_a_run_already_dead_starts_nothing() -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 1000}"
    done = subprocess.run(
        [sys.executable, str(REAPER), "1", "sleep", marker], timeout=30, check=False
    )
    assert done.returncode == 128 + signal.SIGTERM
    assert not _running(f"sleep\0{marker}")


def test_signals_arriving_together_still_kill_everything() -> None:
    # A run's death brings SIGTERM (death signal) and SIGHUP (its pty closing) at once.
    for _ in range(10):
        marker = f"{uuid.uuid4().int % 10**6 + 1000}"
        reaper = subprocess.Popen(
            [sys.executable, str(REAPER), str(os.getpid()), "sh", "-c",
             f"setsid sleep {marker} & sleep {marker}; wait"],
        )  # fmt: skip
        _started(marker, 2)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGHUP):
            reaper.send_signal(signum)
        assert reaper.wait(10) - 128 in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
        assert _gone(f"sleep\0{marker}"), "a process outlived its reaper"


def test_a_killed_runs_directories_are_removed(tmp_path: Path) -> None:
    """Issue #18: a SIGKILLed flow-run process left its private dir (secret files) in /tmp."""
    marker = f"{uuid.uuid4().int % 10**6 + 1000}"
    private, control, other = (tmp_path / n for n in ("ff-run-1-x", "ff-cp-1-y", "keep-me"))
    for directory in (private, control, other):
        (directory / "secrets").mkdir(parents=True)
        (directory / "secrets" / "vault").write_text("s3cret")
    removes = ", ".join(f"'--remove', {str(d)!r}" for d in (private, control, other))
    starter = (
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(REAPER)!r}, str(os.getpid()), {removes},"
        f" '--', 'sleep', '{marker}'])\n"
        "time.sleep(600)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", starter])
    try:
        _started(marker, 1)
        run.send_signal(signal.SIGKILL)
        assert _gone(f"sleep\0{marker}")
        deadline = time.monotonic() + 10
        while private.exists() or control.exists():
            assert time.monotonic() < deadline, "the killed run's directories remain"
            time.sleep(0.05)
        assert other.exists(), "only directories named ff-* are removed"
    finally:
        run.kill()
        run.wait()


def test_after_a_normal_end_the_run_removes_its_own_directories(tmp_path: Path) -> None:
    private = tmp_path / "ff-run-2-z"
    private.mkdir()
    done = subprocess.run(
        [sys.executable, str(REAPER), str(os.getpid()), "--remove", str(private), "--", "true"],
        timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and private.exists()


def test_a_signal_while_the_run_lives_leaves_its_directories(tmp_path: Path) -> None:
    """A cancel (SIGTERM from the run) kills the tree; the run still reads its dir."""
    marker = f"{uuid.uuid4().int % 10**6 + 1000}"
    private = tmp_path / "ff-run-3-w"
    private.mkdir()
    reaper = subprocess.Popen(
        [sys.executable, str(REAPER), str(os.getpid()), "--remove", str(private), "--",
         "sleep", marker],
    )  # fmt: skip
    _started(marker, 2)  # the reaper's command line has it too
    reaper.send_signal(signal.SIGTERM)
    assert reaper.wait(10) == 128 + signal.SIGTERM
    assert _gone(f"sleep\0{marker}") and private.exists()


def test_only_absolute_ff_directories_are_ever_removed(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("ff_reaper", REAPER)
    assert spec and spec.loader
    reaper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reaper)
    (tmp_path / "ff-link-target").mkdir()
    (tmp_path / "ff-link").symlink_to(tmp_path / "ff-link-target")
    assert reaper._removable(str(tmp_path / "ff-run-1-a"))
    for path in ("/", "ff-run-1-a", str(tmp_path), str(tmp_path / "ff-run/.."),
                 str(tmp_path / "ff-link")):  # fmt: skip
        assert not reaper._removable(path), path
    assert reaper._parse(["7", "sleep", "1"]) == (7, [], ["sleep", "1"])
    assert reaper._parse(["7", "--remove", "/tmp/ff-a", "--", "--remove"]) == (
        7, ["/tmp/ff-a"], ["--remove"],
    )  # fmt: skip
