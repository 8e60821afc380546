"""The only module that imports ansible_runner: one isolated ansible-playbook process per call.

Traps of ansible-runner 2.4 handled here:
- a private data dir shared by concurrent runs corrupts them: each call gets its own,
  mode 0700, removed afterwards, and by the reaper if our process is killed;
- `run()` dumps passwords, extra vars and settings into env/ files and copies our whole
  environment (API credential, database URL) to ansible-playbook and into
  artifacts/*/command: RunnerConfig is built here instead, passwords stay in memory, and
  ansible-playbook gets an allow-listed environment (so the command file holds only that);
- it turns host key checking off unless told otherwise: we set it on;
- per-event JSON files: the event handler returns False so none are written;
- on the main thread without cancel_callback it installs SIGINT/SIGTERM handlers: it always
  runs on a helper thread here, with a cancel callback;
- it kills only ansible-playbook's process group: SSH ControlPersist masters daemonize into
  sessions of their own, so every process naming the private dir is killed afterwards;
- if our process dies (worker SIGKILL), ansible-playbook and its forked workers must not
  go on changing hosts unseen: it is started under reaper.py, which kills its whole tree;
- killing ansible-playbook leaves a task's command running on its host (no pty under
  pipelining): each invocation marks, guards and fences its hosts (_guard.py);
- it points ANSIBLE_CACHE_PLUGIN_CONNECTION at a fact cache inside the private dir,
  overriding envvars: the shared fact cache is passed as its `fact_cache` instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ansible_runner import Runner, RunnerConfig
from pydantic import SecretStr

from fleetflow.engine._ansible import ANSIBLE_FLAGS, ansible_environment, ansible_tool, inherited
from fleetflow.engine._guard import Beacons, guard_envvars, new_token
from fleetflow.engine.request import RunRequest
from fleetflow.engine.secrets import write_private
from fleetflow.engine.variables import unsafe_yaml

logger = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]
_OUTPUT_TAIL_LINES = 20
# Started by path (`python -I -S reaper.py ...`), not imported: see its docstring.
_REAPER = Path(__file__).with_name("reaper.py")
# Runner's settings: an env/settings file is the only way they are honoured.
_SETTINGS = {"pexpect_timeout": 0.25, "suppress_ansible_output": True}


@dataclass(frozen=True)
class RunnerOutcome:
    """How the process ended: runner's status, exit code and the last lines it printed."""

    status: str  # successful | failed | timeout | canceled
    rc: int
    output_tail: str


RunnerFn = Callable[[RunRequest, EventCallback, threading.Event], RunnerOutcome]


def _wrapper(private: Path, control_dir: Path) -> Path:
    """A bin dir whose ansible-playbook, and all it starts, die with the process that
    started it, which also removes this run's directories (see reaper.py)."""
    bin_dir = private / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ansible-playbook"
    reaper = f"{sys.executable} -I -S {_REAPER}"
    remove = f"--remove {private} --remove {control_dir} --"
    wrapper.write_text(
        f'#!/bin/sh\nexec {reaper} "$PPID" {remove} {ansible_tool("ansible-playbook")} "$@"\n'
    )
    wrapper.chmod(0o700)
    return bin_dir


def _envvars(
    request: RunRequest, private: Path, control_dir: Path, bin_dir: Path, token: str | None
) -> dict[str, str]:
    base = ansible_environment(request.project_dir)
    (private / "tmp").mkdir()
    env = {
        "PATH": f"{bin_dir}:{base.get('PATH', os.defpath)}",
        "ANSIBLE_CONFIG": base.get("ANSIBLE_CONFIG", ""),
        **ANSIBLE_FLAGS,
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
        "ANSIBLE_LOCAL_TEMP": str(private / "tmp"),
        **request.tuning.envvars(),
    }
    if token is not None:
        guard = guard_envvars(token, request.guard.policy, watch=_watched(request))
        theirs = base.get("ANSIBLE_CALLBACK_PLUGINS")
        if theirs:
            guard["ANSIBLE_CALLBACK_PLUGINS"] = f"{theirs}:{guard['ANSIBLE_CALLBACK_PLUGINS']}"
        env |= guard
    return env


def _token(request: RunRequest) -> str | None:
    """The run-scoped marker of this invocation, or None when its hosts are not guarded
    (turned off, or check mode: nothing runs that could outlive it)."""
    if not request.guard.enabled or request.check:
        return None
    return new_token(request.guard.run_id)


def _watched(request: RunRequest) -> bool:
    """Beacons ride Ansible's ControlPersist masters; Mitogen has none (fence only)."""
    return not request.tuning.mitogen


def _secret_file(directory: Path, name: str, secret: SecretStr) -> Path:
    """Created 0600 from the start; removed with the private dir whatever the run's end."""
    directory.mkdir(mode=0o700, exist_ok=True)
    value = secret.get_secret_value()
    # OpenSSH refuses a key file without its final newline.
    return write_private(directory / name, value if value.endswith("\n") else value + "\n")


def _secret_envvars(request: RunRequest, private: Path) -> dict[str, str]:
    found = {}
    if request.secrets.ssh_key is not None:
        key = _secret_file(private / "secrets", "ssh_key", request.secrets.ssh_key)
        found["ANSIBLE_PRIVATE_KEY_FILE"] = str(key)
    if request.secrets.vault_password is not None:
        vault = _secret_file(private / "secrets", "vault", request.secrets.vault_password)
        found["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault)
    return found


def _passwords(request: RunRequest) -> dict[str, str] | None:
    """Answers to Ansible's prompts, typed through the pty: never on disk or argv."""
    if request.secrets.become_password is None:
        return None
    return {r"BECOME password.*:\s*?$": request.secrets.become_password.get_secret_value()}


def _extra_vars_file(request: RunRequest, private: Path) -> Path | None:
    """The caller's variables, 0600, every string !unsafe (see fleetflow.engine.variables)."""
    if not request.extra_vars:
        return None
    (private / "secrets").mkdir(mode=0o700, exist_ok=True)
    return write_private(private / "secrets" / "extra_vars.yml", unsafe_yaml(request.extra_vars))


def _cmdline(request: RunRequest, extra_vars: Path | None) -> str | None:
    flags = [f"--extra-vars @{extra_vars}"] if extra_vars else []
    if request.secrets.become_password is not None:
        flags.append("--ask-become-pass")
    if request.check:
        flags.append("--check")
    if request.diff:
        flags.append("--diff")
    if request.become:
        flags.append("--become")
    return " ".join(flags) or None


def run_ansible(
    request: RunRequest, on_event: EventCallback, cancel: threading.Event
) -> RunnerOutcome:
    """Run one attempt of a request (`RunRequest.for_attempt`: resolved paths, its limit,
    forks and time left); feed every event to `on_event`; stop when `cancel` is set.

    Blocks until ansible-playbook and everything it started are gone. If the calling thread
    is interrupted (Prefect raises TerminationSignal on cancellation), the run is killed
    before the exception propagates.
    """
    # Named with our pid: a worker start sweeps what a killed process left (engine/sweep.py).
    private = Path(tempfile.mkdtemp(prefix=f"ff-run-{os.getpid()}-", dir=request.run_dir))
    # SSH control sockets must fit a 108-byte Unix socket path whatever run_dir is.
    control_dir = Path(tempfile.mkdtemp(prefix=f"ff-cp-{os.getpid()}-", dir="/tmp"))
    box: dict[str, Any] = {}
    token = _token(request)

    def target() -> None:
        try:
            box["runner"] = _invoke(request, private, control_dir, on_event, cancel, token=token)
        except BaseException as exc:  # re-raised on the calling thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="fleetflow-runner", daemon=True)
    # Heartbeats to each host's guard while the run lives; their end stops its processes.
    beacons = Beacons(control_dir, token) if token and _watched(request) else None
    try:
        if beacons is not None:
            beacons.start()
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
    finally:
        cancel_requested = thread.is_alive()
        if cancel_requested:
            cancel.set()
            thread.join(10)
        if beacons is not None:
            beacons.close()
        _kill_leftovers(private, control_dir)
        outcome = _outcome(box.get("runner"), private)
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(control_dir, ignore_errors=True)
    if "error" in box:
        raise box["error"]
    return outcome


def _invoke(
    request: RunRequest,
    private: Path,
    control_dir: Path,
    on_event: EventCallback,
    cancel: threading.Event,
    *,
    token: str | None,
) -> Any:
    bin_dir = _wrapper(private, control_dir)
    (private / "env").mkdir()
    (private / "env" / "settings").write_text(yaml.safe_dump(_SETTINGS))

    def handle(event: dict[str, Any]) -> bool:
        on_event(event)
        return False  # keep per-event JSON off disk

    config = RunnerConfig(
        private_data_dir=str(private),
        project_dir=str(request.project_dir),
        playbook=str(request.playbook),
        inventory=str(request.inventory),
        limit=request.limit,
        tags=",".join(request.tags) or None,
        skip_tags=",".join(request.skip_tags) or None,
        cmdline=_cmdline(request, _extra_vars_file(request, private)),
        forks=request.forks,
        envvars=_envvars(request, private, control_dir, bin_dir, token)
        | _secret_envvars(request, private),
        passwords=_passwords(request),
        # An absolute path survives runner's join with its artifacts dir.
        fact_cache=str(request.tuning.fact_cache_dir) if request.tuning.fact_cache_dir else None,
        timeout=max(1, round(request.timeout)) if request.timeout else None,
        quiet=True,
        ident="run",
    )
    config.prepare()
    config.env = _allow_listed(config.env)
    runner = Runner(config, event_handler=handle, cancel_callback=cancel.is_set)
    runner.run()
    return runner


def _allow_listed(env: dict[str, Any]) -> dict[str, Any]:
    """Runner's environment without what it copied from ours that Ansible does not need;
    what runner and we set for the run (callback plugins, ANSIBLE_*, PATH) stays."""
    return {
        key: value for key, value in env.items() if inherited(key) or os.environ.get(key) != value
    }


def _outcome(runner: Any, private: Path) -> RunnerOutcome:
    stdout = private / "artifacts/run/stdout"
    tail = ""
    if stdout.exists():
        tail = "\n".join(stdout.read_text(errors="replace").splitlines()[-_OUTPUT_TAIL_LINES:])
    if runner is None:
        return RunnerOutcome("canceled", -1, tail)
    return RunnerOutcome(str(runner.status), int(runner.rc if runner.rc is not None else -1), tail)


def _kill_leftovers(*dirs: Path, timeout: float = 5.0) -> None:
    """SIGKILL every process whose command line names one of this run's directories."""
    markers = [str(d).encode() for d in dirs]
    deadline = time.monotonic() + timeout
    while True:
        pids = [pid for pid in _pids_mentioning(markers) if pid != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            logger.warning("processes %s of run %s survived SIGKILL", pids, dirs[0])
            return
        time.sleep(0.05)


def _pids_mentioning(markers: list[bytes]) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                cmdline = handle.read()
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        zombie = stat[stat.rindex(b")") + 2 :][:1] == b"Z"
        if not zombie and any(m in cmdline for m in markers):
            pids.append(int(entry.name))
    return pids
