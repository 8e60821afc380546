"""``fleetflow-engine``: what a process worker runs for each flow run (no Prefect import).

It asks the worker's warm launcher (FLEETFLOW_LAUNCHER_SOCKET) to fork a process that
already imported Prefect, fleetflow and ansible-runner, hands it this process's stdin,
stdout and stderr, forwards SIGTERM/SIGINT to it and ends the way it ended: with its exit
code, or killed by the same signal. Without a launcher it becomes
``python -m prefect.engine``, so any worker can run these pools.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import urllib.request
from types import FrameType

# Constants only: importing the seam loads no Prefect.
from fleetflow._prefect import ENGINE_MODULE, FLOW_RUN_ID_VARIABLE

__all__ = ["main"]

SOCKET_VARIABLE = "FLEETFLOW_LAUNCHER_SOCKET"
_STOPPING = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}


def _stock_engine() -> None:
    argv = [sys.executable, "-m", ENGINE_MODULE, *sys.argv[1:]]
    os.execv(sys.executable, argv)


def _connect() -> socket.socket | None:
    path = os.environ.get(SOCKET_VARIABLE)
    if not path:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def _request(sock: socket.socket) -> None:
    body = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv[1:]})
    data = body.encode()
    socket.send_fds(sock, [struct.pack("!I", len(data))], [0, 1, 2])
    sock.sendall(data)


def end_like_child(code: int) -> int:
    """End this process as the child ended; returns the exit status only if still alive.

    The launcher reports a child killed by signal N as -N. Exiting with -9 would make the
    status 247, which Prefect's worker explains as "terminated due to high memory usage";
    dying of the same signal gives the worker returncode -N, explained as what it was.
    """
    if code >= 0:
        return code
    signum = -code
    if signum not in signal.valid_signals():
        return 1
    if signum in _STOPPING:  # would stop, not end, this process: the worker would wait
        return 128 + signum
    with contextlib.suppress(OSError, ValueError):  # SIGKILL's handler cannot be set
        signal.signal(signum, signal.SIG_DFL)
    with contextlib.suppress(OSError, ValueError):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
        os.kill(os.getpid(), signum)
    # Still here: the signal does not kill by default (SIGCHLD, SIGURG): a shell's status.
    return 128 + signum


def main() -> int:
    code = _run()
    if code < 0 and not _FORWARDED:
        report_killed(-code)
    return end_like_child(code)


# Signals this process passed on to the run (the worker canceling it): then the run's
# end is Prefect's to report.
_FORWARDED: list[int] = []


def report_killed(signum: int, timeout: float = 10.0) -> bool:
    """Mark the flow run Crashed saying it was killed by `signum` from outside the run.

    The worker would otherwise explain a SIGKILL by guesses (memory limits, cancellation).
    Best effort: the worker still reports the run Crashed if this cannot reach the API
    (then the worker's proposal finds the run final and keeps this message).
    """
    run_id, api = os.environ.get(FLOW_RUN_ID_VARIABLE), os.environ.get("PREFECT_API_URL")
    if not run_id or not api:
        return False
    name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
    message = (
        f"the flow-run process was killed by {name} (signal {signum}) from outside the run "
        "(an operator, a supervisor or the kernel's out-of-memory killer); fleetflow's "
        "reaper stopped its ansible-playbook and SSH connections and removed its files on "
        f"worker {os.environ.get('FLEETFLOW_WORKER_NAME', '?')}. Rerun once the cause is known."
    )
    body = json.dumps({"state": {"type": "CRASHED", "name": "Crashed", "message": message}})
    request = urllib.request.Request(
        f"{api.rstrip('/')}/flow_runs/{run_id}/set_state", data=body.encode(), method="POST",
        headers={"Content-Type": "application/json", **_auth_header()},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bool(200 <= response.status < 300)
    except (OSError, ValueError):
        return False


def _auth_header() -> dict[str, str]:
    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    if not auth:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def _run() -> int:
    """The child's exit code as the launcher reports it (-N: killed by signal N)."""
    sock = _connect()
    if sock is None:
        _stock_engine()
        return 70  # not reached: execv replaced us
    with sock:
        _request(sock)
        replies = sock.makefile("r")
        first = json.loads(replies.readline() or "{}")
        if "pid" not in first:
            # Stale or refusing launcher: this run takes the stock path.
            sock.close()
            _stock_engine()
        child = int(first["pid"])

        def forward(signum: int, _frame: FrameType | None) -> None:
            _FORWARDED.append(signum)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        last = replies.readline()
    return int(json.loads(last)["exit"]) if last else 1


if __name__ == "__main__":
    sys.exit(main())
