"""Detached service processes: start them, recognise them after a restart, stop all of them."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["ServiceProcess", "processes_marked", "spawn", "stop_all", "tail", "tail_file"]

# Every process the stack starts carries this variable (and its children inherit it),
# so `down` finds stragglers such as flow-run processes or SSH control masters.
MARK_VARIABLE = "FLEETFLOW_STACK_MARK"
# Popen objects of services started from this process, kept so they are never collected
# (collecting a running child's Popen warns); the services outlive us by design.
_STARTED: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class ServiceProcess:
    role: str  # "server" or "worker"
    name: str
    pid: int
    start_ticks: int  # /proc start time: tells our process from a recycled PID
    log: str
    port: int = 0  # the loopback port it serves, if any (kept across restarts)

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def spawn(
    role: str,
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    log: Path,
    cwd: Path,
    port: int = 0,
) -> ServiceProcess:
    """Start `argv` in its own session, output appended to `log`, detached from our terminal."""
    out = _open_private_log(log)
    try:
        with open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(
                argv,
                stdin=devnull,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
    finally:
        os.close(out)
    _STARTED.append(proc)
    ticks = _start_ticks(proc.pid)
    return ServiceProcess(role, name, proc.pid, ticks or 0, str(log), port)


def _open_private_log(log: Path) -> int:
    """Open `log` for appending, for its owner only: service logs show hosts, vars, errors."""
    _private_dir(log.parent)
    # No symlink followed: a planted link would turn our appends into writes elsewhere.
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(log, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a log from before this rule may be readable by others
    except OSError:
        os.close(fd)
        raise
    return fd


def _private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    # Only a directory of our own is tightened, never a shared one such as /tmp (sticky).
    if info.st_uid == os.geteuid() and not info.st_mode & stat.S_ISVTX:
        directory.chmod(0o700)


def processes_marked(mark: str) -> list[int]:
    """PIDs of live processes whose environment carries `MARK_VARIABLE=mark`."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and _start_ticks(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


def _signal_groups(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        for send in (os.killpg, os.kill):
            try:
                send(pid, sig)
            except (ProcessLookupError, PermissionError):
                continue


def stop_all(services: list[ServiceProcess], mark: str, grace: float = 15.0) -> list[int]:
    """SIGTERM each service's process group, then SIGKILL what is left; return survivors."""
    live = [service.pid for service in services if service.alive()]
    _signal_groups(live, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not any(service.alive() for service in services):
            break
        time.sleep(0.2)
    for _ in range(3):
        for started in _STARTED:
            started.poll()  # reap the ones this process started, so none lingers as a zombie
        stragglers = [s.pid for s in services if s.alive()] + processes_marked(mark)
        if not stragglers:
            return []
        _signal_groups(stragglers, signal.SIGKILL)
        time.sleep(0.5)
    return processes_marked(mark)


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def tail_file(path: Path) -> str:
    try:
        return tail(path.read_text(errors="replace"))
    except OSError:
        return f"(no log at {path})"
