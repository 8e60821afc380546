"""The host side of remote guarding (see engine/_guard.py): sent to each host as the
source of `python3 -c`, so it is stdlib only, Python 3.7+, and imports nothing of ours.

Every task of a run carries ``FLEETFLOW_RUN=<token>`` in its environment (set through the
play's `environment`, so it is inside su/sudo and survives pipelining), and so does every
process it starts, daemons included, unless the playbook clears it.

``fence TOKEN POLICY GUARD``: before the run works on the host. Processes marked with
another run's token are leftovers when no guard of that run lives: stop them (SIGTERM,
SIGKILL after 3 s) or, with POLICY "fail", fail with what was found. A leftover that cannot
be stopped fails too. Reports what earlier guards stopped. With GUARD "1", starts this
run's guard unless one lives. Prints one JSON object; exits 3 when the host must not be
used.

``guard TOKEN`` (daemon, FLEETFLOW_GUARD=<token>): waits for the run's beacon, then, when
no beacon is left (the controller's connection ended: run end, cancel, controller death;
or it went silent: network cut, machine death), stops every process marked with the token,
records them in its state dir for the next fence, and exits.

A beacon (engine/_guard.py) is a process the controller keeps on the host over the run's
SSH connection; it exits at the end of its input or after SILENCE s without a heartbeat.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import sys
import time
from typing import Any

RUN, GUARD = "FLEETFLOW_RUN", "FLEETFLOW_GUARD"
BEACON = "fleetflow-beacon"  # argv[-2] of a beacon; argv[-1] is its run's token
STATE = "FLEETFLOW_GUARD_DIR"
GRACE = 60.0  # seconds a new guard waits for its first beacon
TERM_WAIT = 3.0
POLL = 0.5


def _environ(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key in (RUN.encode(), GUARD.encode()):
            env[key.decode()] = value.decode("utf-8", "replace")
    return env


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            parts = handle.read().split(b"\0")
    except OSError:
        return []
    return parts[:-1] if parts and not parts[-1] else parts


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, start ticks, uid) or None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19]), uid


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _boot_time() -> int:
    with open("/proc/stat") as handle:
        for line in handle:
            if line.startswith("btime "):
                return int(line.split()[1])
    return 0


def _describe(pid: int, token: str) -> dict[str, Any] | None:
    stat = _stat(pid)
    if stat is None:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    started = _boot_time() + stat[1] // ticks
    try:
        user = pwd.getpwuid(stat[2]).pw_name
    except KeyError:
        user = str(stat[2])
    command = b" ".join(_cmdline(pid)).decode("utf-8", "replace").strip()[:160]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    return {"pid": pid, "run": token, "user": user, "started": stamp, "command": command}


def _scan(own: str) -> tuple[dict[int, str], set[str]]:
    """({pid: token} of processes marked by runs other than `own`, tokens with a guard)."""
    marked: dict[int, str] = {}
    guarded: set[str] = set()
    for pid in _pids():
        if pid == os.getpid():
            continue
        env = _environ(pid)
        stat = _stat(pid)
        if not env or stat is None or stat[0] == "Z":
            continue
        if env.get(GUARD):
            guarded.add(env[GUARD])
        elif env.get(RUN) and env[RUN] != own:
            marked[pid] = env[RUN]
    return marked, guarded


def _gone(pid: int) -> bool:
    return (_stat(pid) or ("Z",))[0] == "Z"


def _stop(tokens: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Stop every process marked with one of `tokens`: (stopped, refused).

    SIGSTOP first, rescanning until no new one shows up, so a loop cannot start another
    process behind our back; then SIGTERM + SIGCONT, and SIGKILL what is left after
    TERM_WAIT s.
    """
    frozen: dict[int, dict[str, Any]] = {}
    refused: dict[int, dict[str, Any]] = {}
    for _ in range(50):
        marked, _guarded = _scan("")
        new = {p: t for p, t in marked.items() if t in tokens and p not in frozen}
        new = {p: t for p, t in new.items() if p not in refused}
        if not new:
            break
        for pid, token in new.items():
            info = _describe(pid, token)
            if info is None:
                continue
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            except PermissionError:
                refused[pid] = info
                continue
            frozen[pid] = info
    for pid in frozen:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    deadline = time.monotonic() + TERM_WAIT
    while time.monotonic() < deadline and not all(_gone(p) for p in frozen):
        time.sleep(0.1)
    for pid in frozen:
        if not _gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return list(frozen.values()), list(refused.values())


def state_dir() -> str:
    """Where guards leave their records: root's in /run, another user's in /tmp, 0700."""
    uid = os.getuid()
    path = "/run/fleetflow" if uid == 0 else f"/tmp/fleetflow-{uid}"
    path = os.environ.get(STATE, path)  # tests: a directory of their own
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if info.st_uid != uid or (info.st_mode & 0o077) or not os.path.isdir(path):
        raise OSError(f"unsafe state dir {path}")
    return path


def _records(own: str) -> list[dict[str, Any]]:
    """What earlier guards stopped (their record files are removed once read)."""
    found: list[dict[str, Any]] = []
    directory = state_dir()
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json") or name.startswith(own + "."):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path) as handle:
                found.extend(json.load(handle))
            os.unlink(path)
        except (OSError, ValueError):
            continue
    return found


def _start_guard(token: str) -> None:
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 1 << 16)
    env = {"PATH": os.environ.get("PATH", os.defpath), GUARD: token}
    if STATE in os.environ:
        env[STATE] = os.environ[STATE]
    os.chdir("/")
    source = _cmdline(os.getpid())[2]  # python3 -c SOURCE ...
    argv = [sys.executable.encode(), b"-c", source, b"guard", token.encode()]
    os.execve(sys.executable, argv, env)


def fence(token: str, policy: str, guard: bool) -> int:
    marked, guarded = _scan(token)
    ghosts = {t for t in marked.values() if t not in guarded}
    out: dict[str, Any] = {"stopped": [], "found": [], "records": _records(token)}
    if ghosts and policy == "fail":
        found = [_describe(p, t) for p, t in sorted(marked.items()) if t in ghosts]
        out["found"] = [info for info in found if info]
        out["reason"] = "leftovers of earlier runs are running (FLEETFLOW_GHOST_POLICY is fail)"
    elif ghosts:
        out["stopped"], out["found"] = _stop(ghosts)
        if out["found"]:
            out["reason"] = "cannot stop leftovers of earlier runs (not permitted)"
    if not out.get("reason") and guard and token not in guarded:
        _start_guard(token)
    print(json.dumps(out))  # noqa: T201 - the task result, read by the collector
    return 3 if out.get("reason") else 0


def _beacons(token: str, pids: list[int]) -> list[int]:
    """Which of `pids` are this run's beacons (matched by command line: any user may
    run them, and the guard may not read their environment)."""
    wanted = [BEACON.encode(), token.encode()]
    return [p for p in pids if _cmdline(p)[-2:] == wanted]


def run_guard(token: str) -> int:
    """Wait while a beacon of the run lives; then stop the run's processes."""
    deadline = time.monotonic() + GRACE
    beacons: list[int] = []
    seen = False
    while True:
        # The known beacons' command lines first: a full /proc scan only when they are gone.
        beacons = _beacons(token, beacons) or _beacons(token, _pids())
        seen = seen or bool(beacons)
        if not beacons and (seen or time.monotonic() > deadline):
            break
        time.sleep(POLL)
    why = "the run's connection to the host ended" if seen else "no beacon from the controller"
    stopped, _refused = _stop({token})
    if stopped:
        for info in stopped:
            info["why"] = why
        path = os.path.join(state_dir(), f"{token}.{os.getpid()}.json")
        with open(path, "w") as handle:
            json.dump(stopped, handle)
    return 0


def main(argv: list[str]) -> int:
    mode, token = argv[0], argv[1]
    if mode == "fence":
        return fence(token, argv[2], argv[3] == "1")
    return run_guard(token)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
