"""``fleetflow-engine``: what a process worker runs for each flow run (stdlib only).

It asks the worker's warm launcher (FLEETFLOW_LAUNCHER_SOCKET) to fork a process that
already imported Prefect, fleetflow and ansible-runner, hands it this process's stdin,
stdout and stderr, forwards SIGTERM/SIGINT to it and exits with its exit code. Without
a launcher it becomes ``python -m prefect.engine``, so any worker can run these pools.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
from types import FrameType

__all__ = ["main"]

SOCKET_VARIABLE = "FLEETFLOW_LAUNCHER_SOCKET"


def _stock_engine() -> None:
    argv = [sys.executable, "-m", "prefect.engine", *sys.argv[1:]]
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


def main() -> int:
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
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        last = replies.readline()
    return int(json.loads(last)["exit"]) if last else 1


if __name__ == "__main__":
    sys.exit(main())
