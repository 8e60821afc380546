"""_reaper: nothing started under it outlives it or the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fleetflow

REAPER = Path(fleetflow.__file__).with_name("_reaper.py")


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
        deadline = time.monotonic() + 10
        while len(_running(f"sleep\0{marker}")) < 2:
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.05)
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
        deadline = time.monotonic() + 10
        while len(_running(f"sleep\0{marker}")) < 2:
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.02)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGHUP):
            reaper.send_signal(signum)
        assert reaper.wait(10) - 128 in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
        assert _gone(f"sleep\0{marker}"), "a process outlived its reaper"
