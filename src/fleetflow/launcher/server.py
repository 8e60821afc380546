"""The warm launcher: a process that has imported Prefect, fleetflow and ansible-runner
once and forks a ready flow-run process for each request from ``fleetflow-engine``.

A stock process worker starts ``python -m prefect.engine`` per run, which spends seconds
importing before the flow begins; a fork of this process starts in milliseconds. It
costs one idle process per worker (its memory is shared copy-on-write with the runs).

Forking is only safe because this process never starts a thread or an event loop: it
imports, then loops on accept/waitpid. Each child takes the request's environment,
working directory and stdio, refreshes Prefect's settings from that environment, and
runs Prefect's engine entry point as ``python -m prefect.engine`` would. When the
fleetflow sources change on disk the launcher answers "use the stock path" until its
runs are done, then re-executes itself, so it never runs stale code.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from fleetflow._prefect import ENGINE_MODULE, ENGINE_PRELOAD

__all__ = ["Request", "main"]

log = logging.getLogger("fleetflow.launcher")
# Not ENGINE_MODULE itself: each child runs it afresh as __main__.
_PRELOAD = (
    *ENGINE_PRELOAD,
    "fleetflow.engine.run",
    "fleetflow.engine._runner",
    "fleetflow.flowkit.summary",
    "fleetflow.flowkit.params",
)
# The whole fleetflow package: a change anywhere in it restarts the launcher.
_SOURCES = Path(__file__).resolve().parents[2]
_MODULE = "fleetflow.launcher.server"
# A run whose fleetflow-engine was SIGKILLed gets this long after SIGTERM to finish.
_ORPHAN_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Request:
    env: dict[str, str]
    cwd: str
    argv: list[str]
    stdio: list[int]
    conn: socket.socket


def _code_stamp() -> float:
    return max(p.stat().st_mtime for p in _SOURCES.rglob("*.py"))


def _receive(conn: socket.socket) -> Request:
    header, fds, _flags, _addr = socket.recv_fds(conn, 4, 3)
    if len(header) != 4 or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("malformed launch request")
    (size,) = struct.unpack("!I", header)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("launch request cut short")
        body += chunk
    data = json.loads(body)
    return Request(data["env"], data["cwd"], data["argv"], fds, conn)


def _reply(conn: socket.socket, message: dict[str, object]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message).encode() + b"\n")


class Launcher:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.children: dict[int, socket.socket] = {}
        self.stamp = _code_stamp()
        self.stale = False
        self.stopping = False
        self.pid = os.getpid()

    def serve(self) -> Request | None:
        """Accept and fork until stopped. Returns only in a forked child, with its request."""
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        os.chmod(self.path, 0o600)  # requests carry the worker's environment
        listener.listen(64)
        signal.signal(signal.SIGTERM, self._stop)
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not self.stopping:
                if selector.select(timeout=0.2):
                    request = self._accept(listener)
                    if request is not None and os.getpid() != self.pid:
                        listener.close()
                        return request
                self._reap()
                if self.stale and not self.children:
                    listener.close()
                    self.path.unlink(missing_ok=True)
                    os.execv(sys.executable, [sys.executable, "-m", _MODULE, str(self.path)])
        listener.close()
        self.path.unlink(missing_ok=True)
        return None

    def _stop(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def _accept(self, listener: socket.socket) -> Request | None:
        conn, _ = listener.accept()
        try:
            request = _receive(conn)
        except (OSError, ValueError) as exc:
            log.warning("bad launch request: %s", exc)
            conn.close()
            return None
        if self.stale or _code_stamp() != self.stamp:
            self.stale = True
            log.warning("fleetflow sources changed: stock start until the launcher restarts")
            _reply(conn, {"fallback": "stale"})
            self._close_request(request)
            return None
        pid = os.fork()
        if pid == 0:
            for other in self.children.values():
                other.close()
            return request
        for fd in request.stdio:
            os.close(fd)
        _reply(conn, {"pid": pid})
        self.children[pid] = conn
        return None

    @staticmethod
    def _close_request(request: Request) -> None:
        for fd in request.stdio:
            os.close(fd)
        request.conn.close()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                _reply(conn, {"exit": os.waitstatus_to_exitcode(status)})
                conn.close()


def _watch_client(conn: socket.socket) -> None:
    """If fleetflow-engine dies (the worker killed it), end this run as if it had been."""

    def watch() -> None:
        while True:
            try:
                if not conn.recv(1):
                    break
            except OSError:
                break
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(_ORPHAN_GRACE_SECONDS)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="fleetflow-launch-watch", daemon=True).start()


def run_child(request: Request) -> None:
    """Become the flow-run process the worker asked for (raises SystemExit when done)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    for target, fd in enumerate(request.stdio):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    from fleetflow._prefect import refresh_global_settings_context

    refresh_global_settings_context()
    _watch_client(request.conn)
    sys.argv = [ENGINE_MODULE, *request.argv]
    with warnings.catch_warnings():
        # Prefect's package imports prefect.engine itself; running it as __main__ is intended.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
        runpy.run_module(ENGINE_MODULE, run_name="__main__", alter_sys=True)


def main() -> None:
    # Our own handler, not the root logger's: forked runs keep Prefect's logging as is.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    path = Path(sys.argv[1])
    started = time.monotonic()
    for module in _PRELOAD:
        importlib.import_module(module)
    if threading.active_count() != 1:
        # A fork would copy locks held by those threads; refuse rather than hang runs.
        raise SystemExit(f"preloading started threads: {threading.enumerate()}")
    log.info("warm in %.1f s; serving %s", time.monotonic() - started, path)
    request = Launcher(path).serve()
    if request is not None:
        run_child(request)


if __name__ == "__main__":
    main()
