"""The access gateway: the only way in from outside to the stack's Prefect server.

Every API request is authenticated against fleetflow's users (`name:password` in the
basic-auth header the Prefect UI and clients already send), allowed or refused by the
policy table, checked where the table says, audited when it changes something, and
forwarded with the server's internal credential, which callers never see. The UI's
static files need no login (Prefect serves them without one too).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import anyio
import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from fleetflow.access._checks import (
    SERVICE_ROLE,
    Principal,
    Refused,
    apply_check,
    parse_object,
)
from fleetflow.access._policy import Check, Need, Rule, match, match_websocket
from fleetflow.access._store import SERVICE_ACCOUNT, AuditEntry, Login
from fleetflow.engine.secrets import mask_parameters

__all__ = ["Gateway", "GatewayConfig", "LoginStore"]

log = logging.getLogger(__name__)
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host", "authorization", "content-length"}
)  # fmt: skip
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LOGIN_MESSAGES = {
    "bad": (401, "wrong user name or password"),
    "disabled": (401, "this account is disabled"),
    "locked": (429, "too many failed logins: locked out for a while; an admin can clear it "
                    "with `fleetflow users unlock`"),
}  # fmt: skip
_DETAIL_CHARS = 4000
_WS_AUTH_SECONDS = 10.0
_PREFECT = Subprotocol("prefect")


class LoginStore(Protocol):
    def login(self, name: str, password: str, address: str) -> Login: ...

    def record(self, entry: AuditEntry) -> None: ...


@dataclass(frozen=True)
class GatewayConfig:
    upstream: str  # the Prefect server, e.g. http://127.0.0.1:4201 (no /api)
    internal_auth: str  # its user:password; also the workers' service account
    max_body_bytes: int = 16 * 1024 * 1024
    # A checked login is trusted this long without hashing again: argon2 on every
    # request of a UI page (dozens) would cost seconds. Disabling a user takes this long.
    login_cache_seconds: float = 30.0


class Gateway:
    def __init__(
        self, config: GatewayConfig, store: LoginStore,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:  # fmt: skip
        self.config, self.store = config, store
        self._transport = transport  # tests: an app standing in for the Prefect server
        self._upstream = config.upstream.rstrip("/")
        self._internal_header = "Basic " + base64.b64encode(config.internal_auth.encode()).decode()
        self._cache_key = secrets.token_bytes(32)
        self._logins: dict[bytes, tuple[Principal, float]] = {}
        self._client: httpx.AsyncClient | None = None

    # -- the app -------------------------------------------------------------------------

    def app(self) -> Starlette:
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        return Starlette(
            routes=[
                WebSocketRoute("/api/{path:path}", self.websocket),
                Route("/{path:path}", self.http, methods=methods),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        timeout = httpx.Timeout(300.0, connect=10.0)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(
            timeout=timeout, limits=limits, transport=self._transport
        ) as client:
            self._client = client
            yield
        self._client = None

    # -- HTTP ------------------------------------------------------------------------------

    async def http(self, request: Request) -> Response:
        try:
            path = _plain_path(request.scope["path"])
        except Refused as refused:
            return _refusal(refused)
        if path == "/api" or path.startswith("/api/"):
            return await self._api(request, path.removeprefix("/api") or "/")
        if request.method not in ("GET", "HEAD"):
            return _refusal(Refused(405, "only GET outside /api"))
        return await self._forward(request, path, b"", stream=True)  # the UI's files

    async def _api(self, request: Request, path: str) -> Response:
        rule = match(request.method, path)
        address = request.client.host if request.client else "-"
        who: Principal | None = None
        body = b""
        try:
            if rule is not None and rule.need == Need.PUBLIC:
                return await self._forward(request, "/api" + path, b"", stream=True)
            who = await self._authenticate(_basic_credentials(request), address)
            _authorize(who, rule, request.method, path)
            assert rule is not None  # _authorize refuses a request no rule matches
            body = await self._body(request)
            if rule.check != Check.NONE:
                body = await apply_check(
                    rule.check, who, path, query=request.query_params, body=body, read=self._read
                )
            response = await self._forward(request, "/api" + path, body, stream=rule.reads)
        except Refused as refused:
            if who is not None:  # failed logins were audited where they failed
                outcome = f"refused: {refused.message}"
                await self._audit(who, address, request.method, path, body=body,
                                  status=refused.status, outcome=outcome)  # fmt: skip
            return _refusal(refused)
        if not rule.reads and who.role != SERVICE_ROLE:
            outcome = "ok" if response.status_code < 400 else "failed"
            await self._audit(who, address, request.method, path, body=body,
                              status=response.status_code, outcome=outcome,
                              created=_created_id(response))  # fmt: skip
        return response

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Refused(413, f"request body over {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, f"request body over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _forward(self, request: Request, path: str, body: bytes, *, stream: bool) -> Response:
        assert self._client is not None, "the gateway's lifespan has not started"
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        if "accept-encoding" not in request.headers:
            # httpx would ask for gzip and the raw bytes would reach a caller that did not.
            headers.append(("accept-encoding", "identity"))
        if path.startswith("/api"):
            headers.append(("authorization", self._internal_header))
        upstream = self._client.build_request(
            request.method, self._upstream + path, params=request.url.query,
            headers=headers, content=body,
        )  # fmt: skip
        try:
            response = await self._client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            log.warning("upstream %s %s failed: %s", request.method, path, exc)
            return _refusal(Refused(502, "the Prefect server behind the gateway does not answer"))
        out_headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP}
        if stream:
            return StreamingResponse(
                response.aiter_raw(), status_code=response.status_code, headers=out_headers,
                background=BackgroundTask(response.aclose),
            )  # fmt: skip
        try:  # raw: the caller gets the encoding (gzip) the server answered in
            content = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        return Response(content, status_code=response.status_code, headers=out_headers)

    async def _read(self, path: str) -> dict[str, Any]:
        """A JSON object from the server, as the gateway (for the policy's checks)."""
        assert self._client is not None
        url = f"{self._upstream}/api{path}"
        try:
            response = await self._client.get(url, headers={"authorization": self._internal_header})
        except httpx.HTTPError as exc:
            raise Refused(502, "the Prefect server behind the gateway does not answer") from exc
        if response.status_code == 404:
            raise Refused(404, f"{path.split('/')[1].rstrip('s')} not found")
        if response.status_code != 200:
            raise Refused(502, f"the server answered {response.status_code} reading {path}")
        data = response.json()
        return data if isinstance(data, dict) else {}

    # -- who ---------------------------------------------------------------------------------

    async def _authenticate(self, credentials: str | None, address: str) -> Principal:
        if not credentials:
            raise Refused(401, "Unauthorized")
        if hmac.compare_digest(credentials.encode(), self.config.internal_auth.encode()):
            return Principal(SERVICE_ACCOUNT, SERVICE_ROLE, Need.ADMIN)
        key = hmac.new(self._cache_key, credentials.encode(), hashlib.sha256).digest()
        cached = self._logins.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        name, _, password = credentials.partition(":")
        login = await anyio.to_thread.run_sync(self.store.login, name, password, address)
        if login.outcome == "ok" and login.user is not None:
            user = login.user
            who = Principal(user.name, user.role.value, Need(user.role.rank))
            if len(self._logins) > 10_000:  # expired entries are never removed: start over
                self._logins.clear()
            self._logins[key] = (who, time.monotonic() + self.config.login_cache_seconds)
            return who
        status, message = _LOGIN_MESSAGES.get(login.outcome, (401, "Unauthorized"))
        failed = Principal(name[:100] or "-", "-", Need.PUBLIC)
        await self._audit(
            failed, address, "LOGIN", "", body=b"", status=status, outcome=f"login {login.outcome}"
        )
        raise Refused(status, message)

    async def _audit(
        self, who: Principal, address: str, method: str, path: str, *, body: bytes, status: int,
        outcome: str, created: str = "",
    ) -> None:  # fmt: skip
        targets = ",".join(dict.fromkeys([*_UUID.findall(path), *([created] if created else [])]))
        entry = AuditEntry(
            at=datetime.now(UTC), actor=who.name, role=who.role, address=address,
            method=method, route=f"/api{path}" if path else "", targets=targets,
            detail=_detail(body), status=status, outcome=outcome,
        )  # fmt: skip
        try:
            await anyio.to_thread.run_sync(self.store.record, entry)
        except Exception:  # the audit store down must be loud, and refuse nothing already done
            log.exception("could not write the audit record of %s %s by %s", method, path, who.name)

    # -- websockets ----------------------------------------------------------------------------

    async def websocket(self, websocket: WebSocket) -> None:
        """Prefect's websockets authenticate in their first message: check the caller's
        `name:password` there and send the internal credential upstream instead."""
        try:
            path = _plain_path(websocket.scope["path"]).removeprefix("/api")
        except Refused:
            await websocket.close(code=1008, reason="bad path")
            return
        if "prefect" not in websocket.scope.get("subprotocols", []):
            await websocket.close(code=1008, reason="'prefect' subprotocol required")
            return
        await websocket.accept(subprotocol="prefect")
        address = websocket.client.host if websocket.client else "-"
        try:
            with anyio.fail_after(_WS_AUTH_SECONDS):
                first = await websocket.receive_json()
            if not isinstance(first, dict) or first.get("type") != "auth":
                raise Refused(401, "expected an auth message first")
            who = await self._authenticate(str(first.get("token") or ""), address)
            _authorize(who, match_websocket(path), "WS", path)
        except Refused as refused:
            await websocket.close(code=1008, reason=refused.message[:120])
            return
        except (TimeoutError, WebSocketDisconnect, ValueError):
            with contextlib.suppress(RuntimeError):
                await websocket.close(code=1008, reason="expected an auth message first")
            return
        await self._pipe(websocket, path)

    async def _pipe(self, websocket: WebSocket, path: str) -> None:
        query = websocket.scope.get("query_string", b"").decode()
        url = (
            "ws"
            + self._upstream.removeprefix("http")
            + "/api"
            + path
            + (f"?{query}" if query else "")
        )
        try:
            async with connect(
                url, subprotocols=[Subprotocol("prefect")], max_size=None
            ) as upstream:
                await upstream.send(
                    json.dumps({"type": "auth", "token": self.config.internal_auth})
                )
                async with anyio.create_task_group() as pipes:
                    pipes.start_soon(_downstream, upstream, websocket, pipes.cancel_scope)
                    pipes.start_soon(_upstream_pipe, websocket, upstream, pipes.cancel_scope)
        except (OSError, ConnectionClosed) as exc:
            log.info("websocket %s ended: %s", path, exc)
        with contextlib.suppress(RuntimeError):
            await websocket.close()


async def _downstream(upstream: Any, websocket: WebSocket, scope: anyio.CancelScope) -> None:
    try:
        async for message in upstream:
            if isinstance(message, str):
                await websocket.send_text(message)
            else:
                await websocket.send_bytes(message)
    except (ConnectionClosed, WebSocketDisconnect, RuntimeError):
        pass
    scope.cancel()


async def _upstream_pipe(websocket: WebSocket, upstream: Any, scope: anyio.CancelScope) -> None:
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text") if message.get("text") is not None else message.get("bytes")
            if data is not None:
                await upstream.send(data)
    except (ConnectionClosed, WebSocketDisconnect, RuntimeError):
        pass
    scope.cancel()


def _plain_path(path: str) -> str:
    """The decoded path the policy judged, as the server will see it: no dot segments
    (httpx would resolve them into another route), and ?, # and % encoded again (else a
    decoded %3F would start a query the policy never saw)."""
    if any(segment in {".", ".."} for segment in path.split("/")):
        raise Refused(400, "a path with . or .. segments is refused")
    return quote(path, safe="/:@!$&'()*+,;=-._~")


def _authorize(who: Principal, rule: Rule | None, method: str, path: str) -> None:
    if rule is None:
        raise Refused(403, f"{method} /api{path} is not allowed through the gateway")
    if who.rank < rule.need:
        raise Refused(
            403,
            f"{who.name} ({who.role}) may not {method} /api{path}: "
            f"it needs the {rule.need.name.lower()} role",
        )


def _basic_credentials(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        return base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _refusal(refused: Refused) -> JSONResponse:
    # exception_message: what Prefect's own errors carry, so its clients show the reason.
    body = {"exception_message": refused.message, "detail": refused.message}
    return JSONResponse(body, status_code=refused.status)


def _created_id(response: Response) -> str:
    body = bytes(response.body)
    try:
        if response.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        data = json.loads(body)
    except (ValueError, OSError, EOFError):
        return ""
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and _UUID.fullmatch(value) else ""


def _detail(body: bytes) -> str:
    if not body:
        return ""
    try:
        data = parse_object(body)
    except Refused:
        return f"({len(body)} bytes, not JSON)"
    return json.dumps(mask_parameters(data), default=str)[:_DETAIL_CHARS]
