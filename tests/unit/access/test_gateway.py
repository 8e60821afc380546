"""The gateway in process, in front of an app standing in for the Prefect server: who gets
through, what the server receives, what is refused and what the audit records."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fleetflow.access import AccessStore, Role
from fleetflow.access._gateway import Gateway, GatewayConfig

with warnings.catch_warnings():
    # Starlette 1.10 would rather its test client used httpx2; httpx is what we have.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

INTERNAL = "fleetflow:internal-secret-value"
PASSWORD = "correct horse battery"
RUN = "0f0e2c4a-1111-4222-8333-444455556666"
DEPLOYMENT = "1f0e2c4a-1111-4222-8333-444455556666"


@dataclass
class Upstream:
    """What the stand-in server received."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    run_state: str = "PAUSED"

    async def handle(self, request: Request) -> JSONResponse:
        body = await request.body()
        self.seen.append({
            "method": request.method, "path": request.url.path, "query": request.url.query,
            "auth": request.headers.get("authorization", ""), "body": body,
        })  # fmt: skip
        path = request.url.path
        if request.method == "GET" and path == f"/api/deployments/{DEPLOYMENT}":
            schema: dict[str, Any] = {"properties": {"playbook": {}, "inventory": {}}}
            return JSONResponse(
                {"id": DEPLOYMENT, "name": "lab", "parameter_openapi_schema": schema}
            )
        if request.method == "GET" and path == f"/api/flow_runs/{RUN}":
            state = {"type": self.run_state}
            return JSONResponse({"id": RUN, "parameters": {"approvers": ["alice"]}, "state": state})
        if path.endswith("/create_flow_run"):
            return JSONResponse({"id": RUN}, status_code=201)
        return JSONResponse({"ok": True})

    def app(self) -> Starlette:
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        # Compressed like Prefect's answers: the audit must still find a created run's id.
        gzip = Middleware(GZipMiddleware, minimum_size=1)
        return Starlette(
            routes=[Route("/{path:path}", self.handle, methods=methods)], middleware=[gzip]
        )


@dataclass
class Rig:
    client: TestClient
    upstream: Upstream
    store: AccessStore
    logins: list[str]

    def call(self, method: str, path: str, who: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            credentials = who if ":" in who else f"{who}:{PASSWORD}"
            headers["authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        response: httpx.Response = self.client.request(
            method, f"/api{path}", headers=headers, **kwargs
        )
        return response

    def audit(self) -> list[Any]:
        return self.store.audit()


class CountingStore(AccessStore):
    calls: list[str]

    def login(self, name: str, password: str, address: str) -> Any:
        self.calls.append(name)
        return super().login(name, password, address)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    store = CountingStore(f"sqlite:///{tmp_path / 'access.db'}")
    store.calls = []
    store.create()
    for name, role in [("vera", Role.VIEWER), ("otto", Role.OPERATOR), ("alice", Role.APPROVER),
                       ("bob", Role.APPROVER), ("ada", Role.ADMIN)]:  # fmt: skip
        store.add_user(name, role, PASSWORD)
    upstream = Upstream()
    config = GatewayConfig(upstream="http://prefect", internal_auth=INTERNAL, max_body_bytes=4096)
    gateway = Gateway(config, store, transport=httpx.ASGITransport(upstream.app()))
    with TestClient(gateway.app()) as client:
        yield Rig(client, upstream, store, store.calls)
    store.close()


def _internal_header() -> str:
    return "Basic " + base64.b64encode(INTERNAL.encode()).decode()


def test_no_or_wrong_credentials_get_401_and_reach_nothing(rig: Rig) -> None:
    assert rig.call("POST", "/flow_runs/filter").status_code == 401
    assert rig.call("POST", "/flow_runs/filter", "vera:wrong password!").status_code == 401
    assert rig.call("POST", "/flow_runs/filter", "nobody").status_code == 401
    assert rig.upstream.seen == []
    outcomes = [(e.actor, e.outcome, e.status) for e in rig.audit()]
    assert ("vera", "login bad", 401) in outcomes and ("nobody", "login bad", 401) in outcomes


def test_a_user_is_forwarded_with_the_internal_credential_only(rig: Rig) -> None:
    response = rig.call("POST", "/flow_runs/filter", "vera", json={"limit": 1})
    assert response.status_code == 200, response.text
    [seen] = rig.upstream.seen
    assert seen["auth"] == _internal_header() and PASSWORD.encode() not in seen["body"]
    assert rig.audit() == []  # a read is not audited


def test_a_checked_login_is_not_hashed_again_for_every_request(rig: Rig) -> None:
    for _ in range(5):
        assert rig.call("GET", f"/flow_runs/{RUN}", "vera").status_code == 200
    assert rig.logins == ["vera"]


def test_a_role_below_the_route_gets_403_with_the_reason_and_nothing_is_sent(rig: Rig) -> None:
    response = rig.call("POST", f"/deployments/{DEPLOYMENT}/create_flow_run", "vera", json={})
    assert response.status_code == 403
    assert "vera (viewer)" in response.json()["exception_message"]
    assert "operator" in response.json()["exception_message"]
    assert rig.upstream.seen == []
    [entry] = rig.audit()
    assert (entry.actor, entry.status, entry.targets) == ("vera", 403, DEPLOYMENT)
    assert entry.outcome.startswith("refused")


def test_unknown_routes_are_refused_even_to_admins(rig: Rig) -> None:
    assert rig.call("GET", "/nonexistent", "ada").status_code == 403
    # The client resolves a plain ../ itself (to POST /deployments/: admin only) ...
    assert rig.call("POST", "/flow_runs/filter/../../deployments/", "vera").status_code == 403
    # ... an encoded one reaches the gateway, which refuses dot segments.
    dotted = "/flow_runs/filter/%2e%2e/%2e%2e/deployments/"
    assert rig.call("POST", dotted, "vera").status_code == 400
    assert rig.upstream.seen == []


def test_an_encoded_question_mark_cannot_smuggle_a_query_past_the_policy(rig: Rig) -> None:
    response = rig.call("GET", f"/block_documents/{RUN}%3Finclude_secrets=true", "vera")
    assert response.status_code == 200
    [seen] = rig.upstream.seen
    assert seen["query"] == ""  # the ? stayed part of the path: Prefect finds no such block


def test_secret_values_need_admin(rig: Rig) -> None:
    assert (
        rig.call("GET", f"/block_documents/{RUN}?include_secrets=true", "otto").status_code == 403
    )
    body = {"include_secrets": True}
    assert rig.call("POST", "/block_documents/filter", "vera", json=body).status_code == 403
    assert rig.call("POST", "/block_documents/filter", "ada", json=body).status_code == 200
    assert rig.call("POST", "/block_documents/filter", "vera", json={}).status_code == 200
    assert len(rig.upstream.seen) == 2


def test_an_operators_run_carries_their_name_and_only_allowed_fields(rig: Rig) -> None:
    # As the UI's run form sends it: empty job variables, the schema check asked for.
    body = {"parameters": {"playbook": "site"}, "tags": ["nightly", "by:ada", "failed:h1"],
            "job_variables": {}, "context": {}, "empirical_policy": {"retries": None},
            "enforce_parameter_schema": True}  # fmt: skip
    response = rig.call("POST", f"/deployments/{DEPLOYMENT}/create_flow_run", "otto", json=body)
    assert response.status_code == 201, response.text
    sent = json.loads(rig.upstream.seen[-1]["body"])
    assert sent["tags"] == ["nightly", "by:otto"]
    assert sent["enforce_parameter_schema"] is True
    assert "job_variables" not in sent and "context" not in sent
    [entry] = rig.audit()
    assert (entry.actor, entry.role, entry.outcome, entry.status) == ("otto", "operator", "ok", 201)
    assert RUN in entry.targets and "site" in entry.detail


@pytest.mark.parametrize(
    "body",
    [
        {"job_variables": {"command": "id"}},
        {"job_variables": {"env": {"GIT_SSH_COMMAND": "id"}}},
        {"job_variables": {"env": {"PATH": "/tmp"}}},
        {"work_queue_name": "prod"},
        {"parameters": {"playbook": "site", "ansible_ssh_common_args": "-o ProxyCommand=id"}},
        {"state": {"type": "RUNNING"}},
        {"infrastructure_document_id": RUN},
        {"labels": {"x": "y"}},
        {"enforce_parameter_schema": False, "parameters": {"undeclared": 1}},
    ],
)
def test_an_operator_cannot_change_how_or_where_a_run_executes(
    rig: Rig, body: dict[str, Any]
) -> None:
    response = rig.call("POST", f"/deployments/{DEPLOYMENT}/create_flow_run", "otto", json=body)
    assert response.status_code == 403, response.text
    assert not any(s["path"].endswith("create_flow_run") for s in rig.upstream.seen)


def test_operators_cancel_and_retry_finished_runs_only(rig: Rig) -> None:
    cancel = {"state": {"type": "CANCELLING"}}
    assert rig.call("POST", f"/flow_runs/{RUN}/set_state", "otto", json=cancel).status_code == 200
    retry = {"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True}
    assert rig.call("POST", f"/flow_runs/{RUN}/set_state", "otto", json=retry).status_code == 403
    rig.upstream.run_state = "FAILED"
    assert rig.call("POST", f"/flow_runs/{RUN}/set_state", "otto", json=retry).status_code == 200
    done = {"state": {"type": "COMPLETED"}}
    assert rig.call("POST", f"/flow_runs/{RUN}/set_state", "otto", json=done).status_code == 403
    assert rig.call("POST", f"/flow_runs/{RUN}/set_state", "ada", json=done).status_code == 200


def test_an_approval_carries_the_login_not_what_the_form_says(rig: Rig) -> None:
    answer = {"run_input": {"decision": "approve", "approver": "the-cfo", "comment": "ok"}}
    assert rig.call("POST", f"/flow_runs/{RUN}/resume", "otto", json=answer).status_code == 403
    refused = rig.call("POST", f"/flow_runs/{RUN}/resume", "bob", json=answer)
    assert refused.status_code == 403 and "approvers (alice)" in refused.json()["detail"]
    assert rig.call("POST", f"/flow_runs/{RUN}/resume", "alice", json=answer).status_code == 200
    resumed = [s for s in rig.upstream.seen if s["path"].endswith("/resume")]
    assert len(resumed) == 1
    assert json.loads(resumed[0]["body"])["run_input"]["approver"] == "alice"
    actors = [(e.actor, e.status) for e in rig.audit()]
    assert ("alice", 200) in actors and ("bob", 403) in actors and ("otto", 403) in actors


def test_the_service_credential_is_admin_and_not_audited(rig: Rig) -> None:
    assert rig.call("POST", "/deployments/", INTERNAL, json={"name": "x"}).status_code == 200
    assert rig.logins == [] and rig.audit() == []


def test_a_body_over_the_limit_is_refused_before_the_server(rig: Rig) -> None:
    big = {"parameters": {"playbook": "x" * 5000}}
    response = rig.call("POST", f"/deployments/{DEPLOYMENT}/create_flow_run", "otto", json=big)
    assert response.status_code == 413
    assert rig.upstream.seen == []


def test_the_sixth_wrong_password_in_a_minute_is_locked_out(rig: Rig) -> None:
    for _ in range(5):
        assert rig.call("GET", f"/flow_runs/{RUN}", "vera:not her password").status_code == 401
    locked = rig.call("GET", f"/flow_runs/{RUN}", "vera")  # the right password, now locked
    assert locked.status_code == 429 and "unlock" in locked.json()["detail"]
    assert [e.outcome for e in rig.audit()].count("login locked") == 1
    assert rig.store.unlock("user:vera") > 0
    assert rig.call("GET", f"/flow_runs/{RUN}", "vera").status_code == 200


def test_the_ui_files_need_no_login_and_cannot_be_posted(rig: Rig) -> None:
    assert rig.client.get("/runs").status_code == 200
    assert rig.upstream.seen[-1]["auth"] == ""  # no credential is sent with them
    assert rig.client.post("/runs").status_code == 405


def test_health_needs_no_login(rig: Rig) -> None:
    assert rig.call("GET", "/health").status_code == 200


@pytest.mark.parametrize(
    "query", ["t", "y", "Y", "on", "1", "yes", "TRUE", "false&include_secrets=t"]
)
def test_every_spelling_of_true_asks_for_secrets(rig: Rig, query: str) -> None:
    response = rig.call("GET", f"/block_documents/{RUN}?include_secrets={query}", "vera")
    assert response.status_code == 403
    assert rig.upstream.seen == []


def test_false_spellings_are_a_plain_read(rig: Rig) -> None:
    for spelling in ("false", "0", "f", "n", "off", "No"):
        response = rig.call("GET", f"/block_documents/{RUN}?include_secrets={spelling}", "vera")
        assert response.status_code == 200
