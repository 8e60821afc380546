"""Sensors without a lab or server: parameter checks, the port and HTTP sensors against
sockets and an HTTP server opened here, timeouts and their messages."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from fleetflow import ConfigurationError, SensorTimeout
from fleetflow.flowkit.sensors import (
    Condition,
    EventCondition,
    FileCondition,
    HttpCondition,
    PortCondition,
    wait_for_event,
    wait_for_file,
    wait_for_http,
    wait_for_port,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: wait_for_port.fn("127.0.0.1", 80, timeout=0), "timeout must be more than 0"),
        (lambda: wait_for_port.fn("127.0.0.1", 80, timeout=-1), "timeout must be more than 0"),
        (lambda: wait_for_port.fn("h", 80, timeout=1, poll_interval=0), "poll_interval must be"),
        (lambda: wait_for_port.fn("h", 80, timeout=1, poll_interval=2), "is longer than the"),
        (lambda: wait_for_port.fn("h", 0, timeout=1), "between 1 and 65535, got 0"),
        (lambda: wait_for_port.fn("h", 65536, timeout=1), "between 1 and 65535, got 65536"),
        (lambda: wait_for_port.fn(" ", 80, timeout=1), "needs a host"),
        (lambda: wait_for_http.fn("ftp://h/x", timeout=1), "invalid URL 'ftp://h/x'"),
        (lambda: wait_for_http.fn("not a url", timeout=1), "invalid URL"),
        (lambda: wait_for_http.fn("http://", timeout=1), "invalid URL"),
        (lambda: wait_for_http.fn("http://h", status=700, timeout=1), "status must be"),
        (lambda: wait_for_http.fn("http://h", status=[], timeout=1), "status must be"),
        (lambda: wait_for_file.fn("tmp/x", inventory="lab", timeout=1), "absolute path"),
        (lambda: wait_for_file.fn("/x", inventory="lab", timeout=0), "timeout must be"),
        (lambda: wait_for_event.fn("*", timeout=1), "needs an event name"),
    ],
)
def test_bad_parameters_are_refused_before_any_wait(call: Any, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match=message):
        call()
    assert time.monotonic() - started < 0.5


def test_port_sensor_waits_until_the_port_opens() -> None:
    port = _free_port()
    server = socket.socket()
    opened = threading.Event()

    def listen_later() -> None:
        time.sleep(0.8)
        server.bind(("127.0.0.1", port))
        server.listen()
        opened.set()

    thread = threading.Thread(target=listen_later)
    thread.start()
    try:
        seen = wait_for_port.fn("127.0.0.1", port, timeout=10, poll_interval=0.1)
        # It returned because the port opened, not before (a busy machine may start the
        # sensor late, so how long it waited is no measure of that).
        assert opened.is_set()
    finally:
        thread.join()
        server.close()
    assert (seen.host, seen.port) == ("127.0.0.1", port)
    assert seen.waited_seconds < 8


def test_port_sensor_times_out_naming_the_port_and_the_refusal() -> None:
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(SensorTimeout) as caught:
        wait_for_port.fn("127.0.0.1", port, timeout=0.6, poll_interval=0.2)
    assert 0.5 <= time.monotonic() - started < 3
    assert str(caught.value) == (
        f"TCP port 127.0.0.1:{port}: not seen within 0.6 s (last seen: connection refused)"
    )


class _Flaky(BaseHTTPRequestHandler):
    """503 until `ready_at` (monotonic), then 200; counts the requests."""

    ready_at = 0.0
    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        status = 200 if time.monotonic() >= self.ready_at else 503
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def flaky() -> Iterator[tuple[str, type[_Flaky]]]:
    handler = type("Handler", (_Flaky,), {"ready_at": time.monotonic() + 0.8, "requests": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_sensor_waits_through_503_until_200(flaky: tuple[str, type[_Flaky]]) -> None:
    url, handler = flaky
    seen = wait_for_http.fn(url, timeout=10, poll_interval=0.1)
    assert (seen.url, seen.status) == (url, 200)
    # It returned once the server turned ready, after seeing it not ready (how long it
    # waited depends on when a busy machine started the test).
    assert time.monotonic() >= handler.ready_at
    assert handler.requests >= 2 and seen.waited_seconds < 8


def test_http_sensor_accepts_any_of_several_statuses(flaky: tuple[str, type[_Flaky]]) -> None:
    url, _ = flaky
    seen = wait_for_http.fn(url, status=[503, 200], timeout=5, poll_interval=0.1)
    assert seen.status == 503 and seen.waited_seconds < 1


def test_http_sensor_times_out_with_the_last_status(flaky: tuple[str, type[_Flaky]]) -> None:
    url, _ = flaky
    with pytest.raises(SensorTimeout) as caught:
        wait_for_http.fn(url, status=204, timeout=1.2, poll_interval=0.2)
    expected = f"{url} answering HTTP 204: not seen within 1.2 s (last seen: HTTP 200)"
    assert str(caught.value) == expected


def test_http_sensor_counts_refused_connections_as_not_yet() -> None:
    url = f"http://127.0.0.1:{_free_port()}/"
    with pytest.raises(SensorTimeout, match=r"not seen within 0.5 s \(last seen: ConnectError"):
        wait_for_http.fn(url, timeout=0.5, poll_interval=0.1)


def test_conditions_are_told_apart_by_kind_and_checked() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(list[Condition])
    parsed = adapter.validate_python(
        [
            {"kind": "file", "path": "/var/tmp/ready"},
            {"kind": "port", "host": "db-01", "port": 5432, "timeout": 60},
            {"kind": "http", "url": "https://x/health", "status": [200, 204]},
            {"kind": "event", "event": "fleetflow.release.ready", "payload": {"app": "a"}},
        ]
    )
    kinds = [FileCondition, PortCondition, HttpCondition, EventCondition]
    assert [type(c) for c in parsed] == kinds
    assert parsed[0].timeout == 600 and parsed[0].poll_interval is None and parsed[0].present
    for bad in (
        {"kind": "port", "host": "h", "port": 70000},
        {"kind": "port", "host": "h", "port": 80, "timeout": 1, "poll_interval": 2},
        {"kind": "file", "path": "relative"},
        {"kind": "http", "url": "ftp://x"},
        {"kind": "disk", "path": "/"},
        {"kind": "event", "event": "e", "extra": 1},
    ):
        with pytest.raises(ValidationError):
            adapter.validate_python([bad])
