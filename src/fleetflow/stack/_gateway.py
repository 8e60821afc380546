"""The stack's access gateway process: the public port, in front of a loopback server."""

from __future__ import annotations

import socket
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from fleetflow.exceptions import StackError
from fleetflow.stack._procs import ServiceProcess, spawn, tail_file

__all__ = [
    "GATEWAY_START_SECONDS",
    "Tls",
    "answers",
    "free_loopback_port",
    "port_open",
    "start_gateway",
    "wait_answering",
]

GATEWAY_START_SECONDS = 60.0
STORE_VARIABLE = "FLEETFLOW_ACCESS_STORE"  # read by python -m fleetflow.access


@dataclass(frozen=True)
class Tls:
    """The gateway's certificate chain and key (PEM files): it serves HTTPS with them."""

    cert: Path
    key: Path

    def trust(self) -> ssl.SSLContext:
        """A client context that trusts this certificate (self-signed or a private CA's)."""
        return ssl.create_default_context(cafile=str(self.cert))

    def checked(self) -> Tls:
        for what, path in (("certificate", self.cert), ("key", self.key)):
            if not path.is_file():
                raise StackError(f"TLS {what} {path} is not a readable file")
        return Tls(self.cert.resolve(), self.key.resolve())


def free_loopback_port() -> int:
    """A port nothing listens on now, for the server behind the gateway."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway(
    *, upstream: str, auth_file: Path, host: str, port: int, tls: Tls | None,
    env: dict[str, str], store_url: str, log: Path, cwd: Path, health_url: str,
) -> ServiceProcess:  # fmt: skip
    argv = [
        sys.executable, "-m", "fleetflow.access", "--upstream", upstream,
        "--auth-file", str(auth_file), "--host", host, "--port", str(port),
    ]  # fmt: skip
    if tls is not None:
        argv += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    gateway = spawn(
        "gateway", "access-gateway", argv, env={**env, STORE_VARIABLE: store_url}, log=log, cwd=cwd
    )
    deadline = time.monotonic() + GATEWAY_START_SECONDS
    verify = tls.trust() if tls else True
    while time.monotonic() < deadline:
        if not gateway.alive():
            raise StackError(f"the access gateway exited:\n{tail_file(log)}")
        if answers(health_url, verify):
            return gateway
        time.sleep(0.3)
    raise StackError(f"the access gateway did not answer at {health_url}:\n{tail_file(log)}")


def answers(url: str, verify: ssl.SSLContext | bool) -> bool:
    try:
        return httpx.get(url, timeout=2, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def wait_answering(process: ServiceProcess, url: str, seconds: float) -> None:
    """Until `url` answers 200 (loopback, plain HTTP), or StackError with the process's
    last log lines if it exits or stays silent for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not process.alive():
            raise StackError(f"{process.name} exited:\n{tail_file(Path(process.log))}")
        if answers(url, True):
            return
        time.sleep(0.5)
    raise StackError(f"{process.name} did not answer {url} in {seconds:.0f} s")
