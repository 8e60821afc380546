"""The stack behind its gateway over HTTPS (a self-signed certificate made here): the
server listens on loopback only, users and the `prefect` CLI reach the API through the
gateway only with the certificate trusted, and a worker on "another machine" (a second
stack directory with --server-url) comes online through the gateway as the service
account."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..project import make_project
from .stacks import BIN, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLEETFLOW = str(BIN / "fleetflow")
PASSWORD = "viewer-password-0123"
CONFIG = """
work_pool: {name: fleetflow, queues: [{name: lab}]}
workers: [{name: %s, queues: [lab]}]
worker_poll_seconds: 1
"""


@dataclass
class TlsStack:
    env: dict[str, str]
    directory: Path
    cert: Path
    url: str  # https://127.0.0.1:PORT/api


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetflow test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        ), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def _run(
    env: dict[str, str], *argv: str, stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), env=env, input=stdin, capture_output=True, text=True, timeout=timeout,
        check=False, stdin=None if stdin is not None else subprocess.DEVNULL,
    )  # fmt: skip


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FLEETFLOW_"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    base = tmp_path_factory.mktemp("tls")
    cert, key = _certificate(base)
    directory = base / "stack"
    directory.mkdir()
    (directory / "stack.yaml").write_text(CONFIG % "worker-here")
    project = make_project(base / "project", {"lab": tmp_path_factory.mktemp("inventory")})
    port = free_port()
    env = _clean_env(
        FLEETFLOW_STACK_DIR=str(directory), FLEETFLOW_PROJECT_DIR=str(project),
        FLEETFLOW_API_PORT=str(port), HOME=str(base),
    )  # fmt: skip
    try:
        up = _run(env, FLEETFLOW, "stack", "up", "--config", str(directory / "stack.yaml"),
                  "--tls-cert", str(cert), "--tls-key", str(key))  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        yield TlsStack(env, directory, cert, f"https://127.0.0.1:{port}/api")
    finally:
        _run(env, FLEETFLOW, "stack", "down")


def test_the_api_answers_over_https_only_and_the_server_on_loopback_only(
    stack: TlsStack,
) -> None:
    trusted = ssl.create_default_context(cafile=str(stack.cert))
    assert httpx.get(f"{stack.url}/health", verify=trusted, timeout=10).status_code == 200
    with pytest.raises(httpx.ConnectError):  # the certificate is not trusted by default
        httpx.get(f"{stack.url}/health", timeout=10)
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on the gateway's port
        httpx.get(stack.url.replace("https:", "http:") + "/health", timeout=10)
    state = json.loads((stack.directory / "stack.json").read_text())
    internal = state["internal_port"]
    listening = Path("/proc/net/tcp").read_text().split("\n")[1:]
    # local_address is "0100007F:PORT" for 127.0.0.1; nothing else may listen on that port.
    sockets = [line.split() for line in listening if line.strip()]
    addresses = {
        fields[1] for fields in sockets
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == internal  # LISTEN
    }  # fmt: skip
    assert addresses == {f"0100007F:{internal:04X}"}


def test_status_from_a_new_shell_trusts_the_stacks_certificate(stack: TlsStack) -> None:
    env = _clean_env(FLEETFLOW_STACK_DIR=str(stack.directory), HOME=stack.env["HOME"])
    done = _run(env, FLEETFLOW, "stack", "status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"server:   {stack.url.removesuffix('/api')} (healthy)" in done.stdout


def test_a_user_and_the_prefect_cli_get_in_through_the_gateway(stack: TlsStack) -> None:
    added = _run(stack.env, FLEETFLOW, "users", "add", "vera", "--role", "viewer",
                 stdin=PASSWORD + "\n")  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    env = _clean_env(
        PREFECT_API_URL=stack.url, PREFECT_API_AUTH_STRING=f"vera:{PASSWORD}",
        PREFECT_API_SSL_CERT_FILE=str(stack.cert), HOME=stack.env["HOME"],
    )  # fmt: skip
    listed = _run(env, str(BIN / "prefect"), "work-pool", "ls")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "fleetflow" in listed.stdout
    # A viewer may look, not change.
    trusted = ssl.create_default_context(cafile=str(stack.cert))
    pause = httpx.patch(
        f"{stack.url}/work_pools/fleetflow", json={"is_paused": True}, verify=trusted,
        auth=("vera", PASSWORD), timeout=30,
    )  # fmt: skip
    assert pause.status_code == 403
    wrong = {**env, "PREFECT_API_AUTH_STRING": "vera:not-the-password"}
    refused = _run(wrong, str(BIN / "prefect"), "work-pool", "ls")
    assert refused.returncode != 0 and "fleetflow" not in refused.stdout


def test_a_worker_elsewhere_comes_online_through_the_gateway(stack: TlsStack) -> None:
    # A short path: the warm launcher's socket lives in the stack directory, and a
    # unix socket path may not exceed 107 bytes (pytest's tmp_path can).
    remote = Path(tempfile.mkdtemp(prefix="ff-remote-"))
    (remote / "stack.yaml").write_text(CONFIG % "worker-elsewhere")
    service = (stack.directory / "api-auth").read_text().strip()
    env = _clean_env(
        FLEETFLOW_STACK_DIR=str(remote), FLEETFLOW_PROJECT_DIR=stack.env["FLEETFLOW_PROJECT_DIR"],
        FLEETFLOW_API_AUTH=service, PREFECT_API_SSL_CERT_FILE=str(stack.cert),
        HOME=stack.env["HOME"],
    )  # fmt: skip
    try:
        up = _run(env, FLEETFLOW, "stack", "up", "--config", str(remote / "stack.yaml"),
                  "--server-url", stack.url.removesuffix("/api"))  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        assert "worker-elsewhere" in up.stdout and "ONLINE" in up.stdout
        worker_env = json.loads((remote / "stack.json").read_text())["processes"]
        (worker,) = [p for p in worker_env if p["role"] == "worker"]
        environ = Path(f"/proc/{worker['pid']}/environ").read_bytes().split(b"\0")
        assert f"PREFECT_API_URL={stack.url}".encode() in environ  # through the gateway
    finally:
        _run(env, FLEETFLOW, "stack", "down")
        shutil.rmtree(remote, ignore_errors=True)
