"""The route table: every route of Prefect's API is in it, reads are open to viewers,
changes need their role, and what the table does not know is refused."""

from __future__ import annotations

import re

import pytest
from prefect.server.api.server import create_api_app

from fleetflow.access._policy import POLICY, Check, Need, match, match_websocket


def _prefect_routes() -> list[tuple[str, str]]:
    spec = create_api_app().openapi()
    # Fill path parameters with a value, as a real request would.
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "0f0e2c4a-1111-4222-8333-444455556666", path))
        for path, operations in spec["paths"].items()
        for method in operations
    ]


def test_every_route_of_prefects_api_has_a_rule() -> None:
    routes = _prefect_routes()
    assert len(routes) > 150
    assert [r for r in routes if match(*r) is None] == []


@pytest.mark.parametrize(
    ("method", "path", "need"),
    [
        ("GET", "/health", Need.PUBLIC),
        ("GET", "/flow_runs/abc", Need.VIEWER),
        ("POST", "/flow_runs/filter", Need.VIEWER),
        ("POST", "/flow_runs/count", Need.VIEWER),
        ("POST", "/ui/flow_runs/history", Need.VIEWER),
        ("POST", "/logs/filter", Need.VIEWER),
        ("POST", "/artifacts/latest/filter", Need.VIEWER),
        ("POST", "/work_pools/fleetflow/workers/filter", Need.VIEWER),
        ("GET", "/admin/version", Need.VIEWER),
        ("POST", "/deployments/abc/create_flow_run", Need.OPERATOR),
        ("POST", "/flow_runs/abc/set_state", Need.OPERATOR),
        ("POST", "/flow_runs/abc/resume", Need.APPROVER),
        ("POST", "/deployments/", Need.ADMIN),
        ("PATCH", "/deployments/abc", Need.ADMIN),
        ("POST", "/automations/", Need.ADMIN),
        ("POST", "/block_documents/", Need.ADMIN),
        ("GET", "/admin/settings", Need.VIEWER),  # every UI page; secrets obfuscated
        ("PUT", "/admin/storage", Need.ADMIN),
        ("POST", "/flow_runs/", Need.ADMIN),  # a run not from a deployment: any code
        ("POST", "/events", Need.ADMIN),  # events fire automations
        ("POST", "/variables/", Need.ADMIN),
        ("POST", "/work_pools/fleetflow/get_scheduled_flow_runs", Need.ADMIN),
        ("POST", "/deployments/abc/create_flow_run/bulk", Need.ADMIN),
        ("DELETE", "/flow_runs/abc", Need.ADMIN),
        ("POST", "/flow_runs/abc/input", Need.ADMIN),
    ],
)
def test_each_route_needs_its_role(method: str, path: str, need: Need) -> None:
    rule = match(method, path)
    assert rule is not None and rule.need == need


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nonexistent"),
        ("TRACE", "/flow_runs/abc"),
        ("GET", ""),
        ("GET", "/flow_runsx/abc"),
        ("GET", "/v2/nothing"),
    ],
)
def test_what_the_table_does_not_know_is_refused(method: str, path: str) -> None:
    # (Dot segments never reach the table: the gateway refuses them first.)
    assert match(method, path) is None


def test_a_viewer_never_gets_secrets_without_the_check() -> None:
    for method, path in [
        ("GET", "/block_documents/abc"),
        ("GET", "/block_types/slug/secret/block_documents"),
        ("GET", "/block_types/slug/secret/block_documents/name/db"),
        ("POST", "/block_documents/filter"),
        ("POST", "/block_documents/count"),
    ]:
        rule = match(method, path)
        assert rule is not None and rule.check in {Check.SECRETS_QUERY, Check.SECRETS_BODY}


def test_reads_are_marked_and_changes_are_not() -> None:
    assert all(rule.reads == (rule.need <= Need.VIEWER) for rule in POLICY)


def test_websockets_need_their_role() -> None:
    assert match_websocket("/events/out").need == Need.VIEWER  # type: ignore[union-attr]
    assert match_websocket("/logs/out").need == Need.VIEWER  # type: ignore[union-attr]
    assert match_websocket("/events/in").need == Need.ADMIN  # type: ignore[union-attr]
    assert match_websocket("/work_pools/p/workers/connect").need == Need.ADMIN  # type: ignore[union-attr]
    assert match_websocket("/events/other") is None
