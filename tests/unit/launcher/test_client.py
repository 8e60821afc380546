"""fleetflow-engine ends the way the flow-run child the launcher forked ended."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetflow.launcher.client import SOCKET_VARIABLE, end_like_child


@pytest.fixture
def bystander() -> Iterator[int]:
    """A process to name as the forked child: fleetflow-engine forwards signals to it."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _fake_launcher(path: Path, child: int, exit_code: int) -> threading.Thread:
    """Answers one request as the launcher does: the child's pid, then its exit code."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
        with conn:
            header, fds, _flags, _addr = socket.recv_fds(conn, 4, 3)
            for fd in fds:
                os.close(fd)
            (size,) = struct.unpack("!I", header)
            body = b""
            while len(body) < size:
                body += conn.recv(size - len(body))
            assert "argv" in json.loads(body)
            conn.sendall(json.dumps({"pid": child}).encode() + b"\n")
            conn.sendall(json.dumps({"exit": exit_code}).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("reported", [-9, -15, 0, 3])
def test_engine_returncode_is_the_childs(tmp_path: Path, bystander: int, reported: int) -> None:
    """Regression: a SIGKILLed run exited 247, which Prefect called high memory usage."""
    sock = tmp_path / "launcher.sock"
    launcher = _fake_launcher(sock, bystander, reported)
    env = {**os.environ, SOCKET_VARIABLE: str(sock)}
    done = subprocess.run(
        [sys.executable, "-m", "fleetflow.launcher.client", "--flow-run-id", "x"],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    launcher.join(10)
    assert done.returncode == reported, done.stderr


def test_exit_codes_pass_through() -> None:
    assert end_like_child(0) == 0
    assert end_like_child(3) == 3


def test_signals_that_would_stop_or_not_exist_become_a_status() -> None:
    assert end_like_child(-int(signal.SIGSTOP)) == 128 + signal.SIGSTOP
    assert end_like_child(-10_000) == 1


def test_a_signal_that_does_not_kill_becomes_the_shells_status() -> None:
    previous = signal.getsignal(signal.SIGURG)
    try:
        assert end_like_child(-int(signal.SIGURG)) == 128 + signal.SIGURG
    finally:
        signal.signal(signal.SIGURG, previous)


def test_a_killed_run_is_reported_crashed_with_what_killed_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue #18: a SIGKILLed run was reported as "terminated due to high memory usage"."""
    import base64
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from fleetflow.launcher.client import report_killed

    seen: list[tuple[str, dict[str, object], str]] = []

    class Api(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body, self.headers.get("Authorization", "")))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            del args

    server = HTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "1234")
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{server.server_port}/api")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "u:p")
    monkeypatch.setenv("FLEETFLOW_WORKER_NAME", "w-1")
    try:
        assert report_killed(signal.SIGKILL)
    finally:
        thread.join(10)
        server.server_close()
    path, body, auth = seen[0]
    assert path == "/api/flow_runs/1234/set_state"
    state = body["state"]
    assert isinstance(state, dict) and state["type"] == "CRASHED"
    assert "killed by SIGKILL (signal 9)" in str(state["message"]) and "w-1" in str(
        state["message"]
    )
    assert auth == "Basic " + base64.b64encode(b"u:p").decode()


def test_without_a_flow_run_nothing_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetflow.launcher.client import report_killed

    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    assert not report_killed(signal.SIGKILL)
