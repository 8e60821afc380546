"""Remote work stops with its run: cancel, crash and retry leave no process on a host.

Why this mechanism (issue #26). Killing ansible-playbook and its SSH masters ends the
controller's side only: with pipelining there is no pty, so the host sends no hangup and a
task's command runs to its own end. So each run marks, guards and fences its hosts:

- Mark: every task runs with FLEETFLOW_RUN=<token> in its environment (the callback plugin
  ansible_plugins/callback/fleetflow_guard.py puts it in each play's `environment`). Ansible
  writes it on the module's command line inside su/sudo, with or without pipelining, and
  every process the task starts inherits it, nohup'd and double-forked ones included. Work
  meant to outlive the run clears it (`environment: {FLEETFLOW_RUN: ""}`) or is started by
  a service manager.
- Guard: the plugin's first task in each play runs the host script (_remote_guard.py),
  which starts a guard daemon on the host with the play's become user. The controller
  keeps one beacon per host over the run's own SSH connection (a mux session of Ansible's
  ControlPersist master) and writes it a heartbeat every second. When the beacon ends (the
  connection closed: run end, cancel, timeout, the run's process or worker SIGKILLed and
  the reaper killing the masters) or goes HEARTBEAT_SILENCE s without a heartbeat (network
  cut, the worker machine dead), the guard SIGTERMs, then SIGKILLs, every process marked
  with the run's token, and records them for the next run to report.
- Fence: the same first task, before anything else of the play, stops processes marked by
  earlier runs that have no live guard (their run is gone), or fails the host by policy.

Cost per run: one small task per play and host (a python3 start, a /proc scan), one
guard process and one beacon per host, one heartbeat byte per host per second
(bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shlex
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic import ValidationError

from fleetflow.results import Leftover

__all__ = [
    "BEACON",
    "HEARTBEAT_SILENCE",
    "TASK_NAME",
    "Beacons",
    "FenceReport",
    "GuardConfig",
    "describe",
    "guard_envvars",
    "new_token",
]

logger = logging.getLogger(__name__)

TASK_NAME = "fleetflow: fence this host and guard the run's processes"
BEACON = "fleetflow-beacon"
HEARTBEAT_SILENCE = 8  # s; the guard acts within this + 0.5 s + 3 s TERM wait (< 15 s)
_HEARTBEAT_EVERY = 1.0
_SCAN_EVERY = 0.25
_RESTART_AFTER = 1.0
PLUGINS = Path(__file__).with_name("ansible_plugins") / "callback"
# A beacon: exits at the end of its input or after HEARTBEAT_SILENCE s without one.
BEACON_CODE = (
    "import os,select\n"
    f"while select.select([0],[],[],{HEARTBEAT_SILENCE})[0] and os.read(0,64):\n"
    "    pass\n"
)
_RUN_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")

GhostPolicy = Literal["stop", "fail"]


@dataclass(frozen=True)
class GuardConfig:
    """Whether and how a run guards its hosts (settings: remote_guard, ghost_policy)."""

    enabled: bool = True
    policy: GhostPolicy = "stop"
    run_id: str = "local"  # the flow run's id: the first part of the token hosts show


def new_token(run_id: str) -> str:
    """`<flow run id>.<8 hex>`: unique per ansible-playbook invocation (attempt)."""
    base = run_id if _RUN_ID.match(run_id) else "local"
    return f"{base}.{secrets.token_hex(4)}"


def guard_envvars(token: str, policy: GhostPolicy, *, watch: bool) -> dict[str, str]:
    """What ansible-playbook needs for the callback plugin (PLUGINS is appended by runner's
    own callback dir, so both load)."""
    return {
        "ANSIBLE_CALLBACK_PLUGINS": str(PLUGINS),
        "FLEETFLOW_GUARD_TOKEN": token,
        "FLEETFLOW_GUARD_POLICY": policy,
        "FLEETFLOW_GUARD_WATCH": "1" if watch else "0",
    }


@dataclass(frozen=True)
class FenceReport:
    """What the fence task said about one host: leftovers and, if it failed, why."""

    leftovers: tuple[Leftover, ...] = ()
    reason: str = ""

    @classmethod
    def of(cls, res: dict[str, Any]) -> FenceReport:
        """From the task's result: its stdout is the host script's JSON (or nothing, if
        the host script could not run: then only its stderr says why)."""
        # A raw task: the host script's JSON is its last line (a pty may add others).
        lines = str(res.get("stdout") or "").splitlines()
        last = next((x.strip() for x in reversed(lines) if x.strip().startswith("{")), "")
        try:
            data = json.loads(last)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return cls(reason=str(res.get("stderr") or res.get("msg") or "")[-500:].strip())
        found = [
            *_leftovers(data.get("records"), "guard"),
            *_leftovers(data.get("stopped"), "fence"),
            *_leftovers(data.get("found"), ""),
        ]
        return cls(tuple(found), str(data.get("reason") or ""))

    def message(self) -> str:
        """The host's failure: which leftovers are still running, and why it was not used."""
        running = [f"ghost of run {g.run} still running: {_process(g)}" for g in self.running]
        return "; ".join([*running, self.reason or "the host could not be fenced"])

    @property
    def running(self) -> list[Leftover]:
        return [g for g in self.leftovers if not g.stopped_by]


def _leftovers(items: object, stopped_by: str) -> list[Leftover]:
    found = []
    for item in items if isinstance(items, list) else []:
        try:
            found.append(Leftover.model_validate({**item, "stopped_by": stopped_by}))
        except (TypeError, ValidationError):
            continue  # a host's odd line does not hide the others
    return found


def _process(leftover: Leftover) -> str:
    return f"PID {leftover.pid} ({leftover.user}, started {leftover.started}): {leftover.command}"


def describe(leftover: Leftover) -> str:
    """One log line's worth about a leftover."""
    if leftover.stopped_by == "guard":
        why = f" ({leftover.why})" if leftover.why else ""
        return f"run {leftover.run}'s guard had stopped {_process(leftover)}{why}"
    if leftover.stopped_by == "fence":
        return f"stopped {_process(leftover)}, left by run {leftover.run}"
    return f"ghost of run {leftover.run} still running: {_process(leftover)}"


def beacon_command(socket: Path, token: str) -> list[str]:
    """An ssh mux client on the run's master connection running a beacon on its host."""
    remote = f"exec python3 -c {shlex.quote(BEACON_CODE)} {BEACON} {token}"
    return [
        "ssh", "-S", str(socket), "-o", "ControlMaster=no", "-o", "BatchMode=yes", "-T",
        BEACON, remote,
    ]  # fmt: skip


class Beacons:
    """Keeps a beacon on every host the run's SSH masters in `control_dir` connect to,
    and its heartbeat, while the block runs; ends them all (EOF) when it leaves."""

    def __init__(self, control_dir: Path, token: str) -> None:
        self.control_dir = control_dir
        self.token = token
        self._procs: dict[Path, subprocess.Popen[bytes]] = {}
        self._started: dict[Path, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fleetflow-beacons", daemon=True)

    def __enter__(self) -> Beacons:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """End every beacon (EOF) and wait for them: each host's guard then stops what is
        left of the run there."""
        self._stop.set()
        self._thread.join(5)
        for proc in self._procs.values():
            with contextlib.suppress(OSError):
                if proc.stdin:
                    proc.stdin.close()  # EOF: the beacon ends, the guard stops what is left
        deadline = time.monotonic() + 3
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.01))
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def _sockets(self) -> list[Path]:
        try:
            entries = list(os.scandir(self.control_dir))
        except OSError:
            return []
        found = []
        for entry in entries:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                    found.append(Path(entry.path))
        return found

    def _start(self, socket: Path) -> None:
        now = time.monotonic()
        proc = self._procs.get(socket)
        if proc is not None and proc.poll() is None:
            return
        if now - self._started.get(socket, 0.0) < _RESTART_AFTER:
            return
        self._started[socket] = now
        self._procs[socket] = subprocess.Popen(
            beacon_command(socket, self.token),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def _loop(self) -> None:
        beat = 0.0
        while not self._stop.wait(_SCAN_EVERY):
            for socket in self._sockets():
                self._start(socket)
            if time.monotonic() - beat < _HEARTBEAT_EVERY:
                continue
            beat = time.monotonic()
            for proc in list(self._procs.values()):
                if proc.poll() is None and proc.stdin is not None:
                    with contextlib.suppress(OSError):
                        proc.stdin.write(b".")
                        proc.stdin.flush()

    @property
    def count(self) -> int:
        """Beacons started so far (a host's is restarted if its connection was redone)."""
        return len(self._procs)
