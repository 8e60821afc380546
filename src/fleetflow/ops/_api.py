"""The Prefect REST API over plain httpx, for commands that must start fast.

``import prefect`` costs a second or more (2.3 s measured on a loaded machine); a command
that only creates a flow run and reads its logs needs a handful of HTTP calls. The API is
found as the prefect CLI finds it, from the environment: PREFECT_API_URL,
PREFECT_API_AUTH_STRING ("user:pass", HTTP basic), PREFECT_API_SSL_CERT_FILE and
PREFECT_API_TLS_INSECURE_SKIP_VERIFY (off unless set: verification is never skipped
silently); without PREFECT_API_URL, from the state of the stack running on this machine
(`ApiConfig.discover`), never Prefect's ephemeral server.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fleetflow.exceptions import ConfigurationError, FleetflowError
from fleetflow.ops._stackfile import StackState

__all__ = ["ApiConfig", "ApiUnavailable", "api_client", "call", "detail"]

_TRUE = {"1", "true", "yes", "on"}
# Errors worth another try: the server restarting or busy, not a refusal.
_TRANSIENT_STATUS = {502, 503, 504}


class ApiUnavailable(FleetflowError):
    """The Prefect API did not answer usefully after a few tries."""


@dataclass(frozen=True)
class ApiConfig:
    """Where the API is and how to reach it; the auth string never appears in the repr."""

    url: str
    auth: str | None = None
    ui_url: str | None = None
    cert_file: str | None = None
    skip_verify: bool = False

    def __repr__(self) -> str:
        return f"ApiConfig(url={self.url!r}, auth={'***' if self.auth else None})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiConfig:
        env = os.environ if env is None else env
        url = env.get("PREFECT_API_URL", "").strip()
        if not url:
            raise ConfigurationError(
                "PREFECT_API_URL is not set: export PREFECT_API_URL=http://127.0.0.1:4200/api "
                "(`fleetflow stack status` prints it)"
            )
        return cls(
            url=url.rstrip("/"),
            auth=env.get("PREFECT_API_AUTH_STRING") or None,
            ui_url=(env.get("PREFECT_UI_URL") or "").rstrip("/") or None,
            cert_file=env.get("PREFECT_API_SSL_CERT_FILE") or None,
            skip_verify=env.get("PREFECT_API_TLS_INSECURE_SKIP_VERIFY", "").lower() in _TRUE,
        )

    @classmethod
    def discover(cls, stack_dir: Path, env: Mapping[str, str] | None = None) -> ApiConfig:
        """PREFECT_API_URL if set, else the stack whose state is in `stack_dir`.

        Credentials: PREFECT_API_AUTH_STRING, else FLEETFLOW_API_AUTH, else the stack's own
        file when the URL is the stack's. Without either URL this is a ConfigurationError:
        falling back to Prefect's ephemeral server would show another database's runs.
        """
        env = os.environ if env is None else env
        state = StackState.read(stack_dir)
        if not env.get("PREFECT_API_URL", "").strip():
            if state is None:
                raise ConfigurationError(
                    "PREFECT_API_URL is not set: export PREFECT_API_URL=http://HOST:PORT/api "
                    "(and PREFECT_API_AUTH_STRING=user:password), or start a stack here with "
                    f"`fleetflow stack up` (none is running in {stack_dir}; FLEETFLOW_STACK_DIR "
                    "says where to look)"
                )
            env = {**env, "PREFECT_API_URL": state.api_url}
        config = cls.from_env(env)
        ours = state is not None and state.api_url == config.url
        if ours and state is not None and state.tls_cert and not config.cert_file:
            # The stack's own gateway: trust the certificate it serves.
            config = dataclasses.replace(config, cert_file=str(state.tls_cert))
        if config.auth:
            return config
        auth = env.get("FLEETFLOW_API_AUTH") or None
        if auth is None and state is not None and state.api_url == config.url:
            auth = state.auth()
        return dataclasses.replace(config, auth=auth)

    def run_url(self, flow_run_id: str) -> str:
        """The flow run's page in the UI (PREFECT_UI_URL, else the API URL without /api)."""
        base = self.ui_url or self.url.removesuffix("/api")
        return f"{base}/runs/flow-run/{flow_run_id}"


def api_client(
    config: ApiConfig, *, transport: httpx.BaseTransport | None = None, timeout: float = 30
) -> httpx.Client:
    """A client for `config`'s API; `transport` lets tests answer instead of a server."""
    headers = {"Accept": "application/json"}
    if config.auth:
        token = base64.b64encode(config.auth.encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    verify: ssl.SSLContext | bool = True
    if config.skip_verify:
        verify = False
    elif config.cert_file:
        verify = ssl.create_default_context(cafile=config.cert_file)
    return httpx.Client(
        base_url=config.url + "/",
        headers=headers,
        verify=verify,
        timeout=timeout,
        transport=transport,
    )


def call(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    body: Any = None,
    tries: int = 4,
    pause: float = 1.0,
) -> httpx.Response:
    """One API request, tried again on transient failures (connection refused, 502-504).

    A POST is tried again only when it never reached the server (connect errors): a
    read timeout after a create may mean the run exists, and a second one must not.
    """
    for attempt in range(1, tries + 1):
        try:
            response = client.request(method, path, json=body)
        except httpx.TransportError as exc:
            retry = method == "GET" or path.endswith("/filter") or _not_sent(exc)
            if not retry or attempt == tries:
                raise ApiUnavailable(f"Prefect API at {client.base_url}: {exc!r}") from exc
        else:
            if response.status_code not in _TRANSIENT_STATUS or attempt == tries:
                return response
        time.sleep(pause * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _not_sent(exc: httpx.TransportError) -> bool:
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def detail(response: httpx.Response) -> str:
    """The server's reason for a refusal, on one line."""
    try:
        found = response.json().get("detail", response.text)
    except ValueError:
        found = response.text
    if isinstance(found, list):  # FastAPI's 422: a list of {loc, msg}
        found = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', '')}"
            if isinstance(d, dict)
            else str(d)
            for d in found
        )
    text = " ".join(str(found).split())
    return text if len(text) <= 400 else text[:400] + "..."
