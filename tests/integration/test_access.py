"""The access gateway on a real stack: roles x routes, the operator's and approver's
checks, brute force, the `prefect` CLI and websockets through it, and the server behind it.

One stack for the module: users are added with the real `fleetflow users add` (password on
stdin); every request goes through the gateway at the stack's public URL with the user's
`name:password`, and what reached the server is read from its database.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from fleetflow.lab import Lab

from .faults import CONFIG, new_tag
from .stacks import AUTH, BIN, RunningStack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROLES = ("viewer", "operator", "approver", "admin")
# approver-b is an approver not named in the approval run's approvers; locky is for the
# brute-force test only (a login that succeeded is cached and would skip the lockout).
USERS = {**{role: role for role in ROLES}, "approver-b": "approver", "locky": "viewer"}
PASSWORDS = {name: secrets.token_urlsafe(18) for name in USERS}
SECRET_VALUE = f"s3cr3t-{secrets.token_hex(12)}"
SECRET_BLOCK = "access-secret"
# Runs made for the matrix wait until 2100: nothing executes them.
LATER = {"type": "SCHEDULED", "state_details": {"scheduled_time": "2100-01-01T00:00:00Z"}}


@dataclass(frozen=True)
class Access:
    stack: RunningStack
    deployment: str  # playbook/lab's id
    flow: str  # the playbook flow's id
    run: str  # a run with a log line and an artifact, scheduled for 2100
    secret_block: str  # a Secret block's id, holding SECRET_VALUE

    @property
    def url(self) -> str:
        return self.stack.env["PREFECT_API_URL"]  # the gateway's

    def client(self, user: str | None, password: str | None = None) -> httpx.Client:
        auth = (user, password or PASSWORDS[user]) if user else None
        return httpx.Client(base_url=self.url, auth=auth, timeout=60)

    def runs_of_deployment(self) -> int:
        rows = self.stack.query(
            "SELECT count(*) FROM flow_run WHERE deployment_id::text = %s", self.deployment
        )
        return int(rows[0][0])

    def later_run(self) -> str:
        """A fresh run of playbook/lab scheduled for 2100, made by the service account."""
        body = {"parameters": {"playbook": "step"}, "state": LATER}
        run = self.stack.api("POST", f"/deployments/{self.deployment}/create_flow_run", body)
        return str(run["id"])

    def tags(self, run_id: str) -> list[str]:
        rows = self.stack.query("SELECT tags FROM flow_run WHERE id::text = %s", run_id)
        return list(rows[0][0])

    def audit(self, actor: str) -> list[tuple[str, str, str, int, str]]:
        """(method, route, targets, status, outcome) of `actor`'s audit entries, oldest first."""
        rows = self.stack.query(
            "SELECT method, route, targets, status, outcome FROM fleetflow_access.audit "
            "WHERE actor = %s ORDER BY id",
            actor,
        )
        return [(str(m), str(r), str(t), int(s), str(o)) for m, r, t, s, o in rows]


def _fleetflow(
    stack: RunningStack, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "fleetflow"), *args], cwd=stack.project, env=stack.env, input=stdin,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _secret_block(stack: RunningStack) -> str:
    """A Secret block made through the gateway by the admin user."""
    with httpx.Client(base_url=stack.env["PREFECT_API_URL"], timeout=30) as admin:
        admin.auth = ("admin", PASSWORDS["admin"])
        block_type = admin.get("/block_types/slug/secret").raise_for_status().json()
        schemas = admin.post(
            "/block_schemas/filter",
            json={"block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}},
        ).raise_for_status()
        made = admin.post(
            "/block_documents/",
            json={
                "name": SECRET_BLOCK, "block_type_id": block_type["id"],
                "block_schema_id": schemas.json()[0]["id"], "data": {"value": SECRET_VALUE},
            },
        )  # fmt: skip
        assert made.status_code == 201, made.text
        return str(made.json()["id"])


@pytest.fixture(scope="module")
def access(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Access]:
    directory = tmp_path_factory.mktemp("access")
    with running_stack(directory, str(lab.inventory_dir), CONFIG) as stack:
        for name, role in USERS.items():
            added = _fleetflow(stack, "users", "add", name, "--role", role,
                               stdin=PASSWORDS[name] + "\n")  # fmt: skip
            assert added.returncode == 0, added.stdout + added.stderr
        deployment = stack.api("GET", "/deployments/name/playbook/lab")
        run = stack.api(
            "POST", f"/deployments/{deployment['id']}/create_flow_run",
            {"parameters": {"playbook": "step"}, "state": LATER},
        )  # fmt: skip
        line = {"name": "access", "level": 20, "timestamp": datetime.now(UTC).isoformat(),
                "message": "access-log-line", "flow_run_id": run["id"]}  # fmt: skip
        stack.api("POST", "/logs/", [line])
        stack.api("POST", "/artifacts/", {"key": "access-artifact", "type": "markdown",
                                          "data": "access", "flow_run_id": run["id"]})  # fmt: skip
        yield Access(
            stack, str(deployment["id"]), str(deployment["flow_id"]), str(run["id"]),
            _secret_block(stack),
        )  # fmt: skip


# -- 1. roles x routes ---------------------------------------------------------------------

Case = Callable[[Access, str, bool], None]


def _refused(response: httpx.Response, role: str) -> None:
    assert response.status_code == 403, (response.status_code, response.text)
    assert role in response.json()["detail"], response.text


def _list_runs(access: Access, role: str, allowed: bool) -> None:
    with access.client(role) as client:
        response = client.post("/flow_runs/filter", json={"limit": 200})
    assert response.status_code == 200, response.text
    assert access.run in {run["id"] for run in response.json()}


def _open_run(access: Access, role: str, allowed: bool) -> None:
    with access.client(role) as client:
        response = client.get(f"/flow_runs/{access.run}")
    assert response.status_code == 200 and response.json()["id"] == access.run, response.text


def _logs(access: Access, role: str, allowed: bool) -> None:
    with access.client(role) as client:
        response = client.post(
            "/logs/filter", json={"logs": {"flow_run_id": {"any_": [access.run]}}}
        )
    assert response.status_code == 200, response.text
    assert [log["message"] for log in response.json()] == ["access-log-line"]


def _artifacts(access: Access, role: str, allowed: bool) -> None:
    with access.client(role) as client:
        response = client.post(
            "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [access.run]}}}
        )
    assert response.status_code == 200, response.text
    assert [a["key"] for a in response.json()] == ["access-artifact"]


def _blocks(access: Access, role: str, allowed: bool) -> None:
    with access.client(role) as client:
        response = client.post("/block_documents/filter", json={})
    assert response.status_code == 200, response.text
    assert SECRET_BLOCK in {block["name"] for block in response.json()}
    assert SECRET_VALUE not in response.text  # obfuscated without include_secrets


def _blocks_with_secrets(access: Access, role: str, allowed: bool) -> None:
    with access.client(role) as client:
        listed = client.post("/block_documents/filter", json={"include_secrets": True})
        one = client.get(f"/block_documents/{access.secret_block}?include_secrets=true")
    for response in (listed, one):
        if allowed:
            assert response.status_code == 200 and SECRET_VALUE in response.text, response.text
        else:
            _refused(response, role)
            assert SECRET_VALUE not in response.text


def _create_run(access: Access, role: str, allowed: bool) -> None:
    before = access.runs_of_deployment()
    with access.client(role) as client:
        response = client.post(
            f"/deployments/{access.deployment}/create_flow_run",
            json={"parameters": {"playbook": "step"}, "state": LATER},
        )
    if allowed:
        assert response.status_code == 201, response.text
        assert f"by:{role}" in access.tags(response.json()["id"])
        assert access.runs_of_deployment() == before + 1
    else:
        _refused(response, role)
        assert access.runs_of_deployment() == before


def _cancel(access: Access, role: str, allowed: bool) -> None:
    run = access.later_run()
    with access.client(role) as client:
        response = client.post(
            f"/flow_runs/{run}/set_state", json={"state": {"type": "CANCELLING"}}
        )
    if allowed:
        # The server cancels a run that is only scheduled at once (its answer: REJECT
        # CANCELLING, the run CANCELLED).
        assert response.status_code == 201, response.text
        assert access.stack.state(run)[0] in {"CANCELLING", "CANCELLED"}
    else:
        _refused(response, role)
        assert access.stack.state(run)[0] == "SCHEDULED"


def _resume(access: Access, role: str, allowed: bool) -> None:
    run = access.later_run()  # not paused: the server answers, and refuses to resume it
    with access.client(role) as client:
        response = client.post(
            f"/flow_runs/{run}/resume", json={"run_input": {"decision": "approve"}}
        )
    if allowed:
        assert response.status_code in (200, 201), response.text
        assert response.json()["status"] == "ABORT", response.text  # the server's own answer
    else:
        _refused(response, role)
    assert access.stack.state(run)[0] == "SCHEDULED"
    if not allowed:  # refused changes are audited too
        assert (f"/api/flow_runs/{run}/resume", 403) in {(e[1], e[3]) for e in access.audit(role)}


def _deploy(access: Access, role: str, allowed: bool) -> None:
    name = f"matrix-{role}"
    with access.client(role) as client:
        response = client.post(
            "/deployments/",
            json={"name": name, "flow_id": access.flow, "work_pool_name": "fleetflow",
                  "entrypoint": "flows/playbook.py:playbook"},
        )  # fmt: skip
    rows = access.stack.query("SELECT count(*) FROM deployment WHERE name = %s", name)
    if allowed:
        assert response.status_code in (200, 201), response.text
        assert rows == [(1,)]
    else:
        _refused(response, role)
        assert rows == [(0,)]


def _automation(access: Access, role: str, allowed: bool) -> None:
    name = f"matrix-{role}"
    body = {
        "name": name,
        "trigger": {"type": "event", "expect": ["matrix.never"], "posture": "Reactive",
                    "threshold": 1, "within": 0},
        "actions": [{"type": "do-nothing"}],
    }  # fmt: skip
    with access.client(role) as client:
        response = client.post("/automations/", json=body)
    rows = access.stack.query("SELECT count(*) FROM automation WHERE name = %s", name)
    if allowed:
        assert response.status_code == 201, response.text
        assert rows == [(1,)]
    else:
        _refused(response, role)
        assert rows == [(0,)]


def _work_pool(access: Access, role: str, allowed: bool) -> None:
    wanted = f"changed by {role}"
    with access.client(role) as client:
        response = client.patch("/work_pools/fleetflow", json={"description": wanted})
    rows = access.stack.query("SELECT description FROM work_pool WHERE name = 'fleetflow'")
    if allowed:
        assert response.status_code == 204, response.text
        assert rows == [(wanted,)]
    else:
        _refused(response, role)
        assert rows != [(wanted,)]


def _unknown_routes(access: Access, role: str, allowed: bool) -> None:
    with access.client(role) as client:
        for method, path in (("GET", "/nonexistent"), ("DELETE", "/nonexistent/x"),
                             ("POST", "/graphql")):  # fmt: skip
            response = client.request(method, path)
            assert response.status_code == 403, (method, path, response.text)
            assert "is not allowed through the gateway" in response.json()["detail"]


# case: (the least role allowed, None for no one; what to do and check)
CASES: dict[str, tuple[str | None, Case]] = {
    "list runs": ("viewer", _list_runs),
    "open a run": ("viewer", _open_run),
    "logs": ("viewer", _logs),
    "artifacts": ("viewer", _artifacts),
    "read blocks": ("viewer", _blocks),
    "read Secret values": ("admin", _blocks_with_secrets),
    "create a run": ("operator", _create_run),
    "cancel": ("operator", _cancel),
    "resume": ("approver", _resume),
    "deploy": ("admin", _deploy),
    "apply automations": ("admin", _automation),
    "update the work pool": ("admin", _work_pool),
    "unknown routes": (None, _unknown_routes),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("role", ROLES)
def test_role_route_matrix(access: Access, role: str, case: str) -> None:
    least, check = CASES[case]
    check(access, role, least is not None and ROLES.index(role) >= ROLES.index(least))


def test_no_or_wrong_credentials_are_401_and_reach_nothing(access: Access) -> None:
    before = access.runs_of_deployment()
    create = f"/deployments/{access.deployment}/create_flow_run"
    with access.client(None) as anonymous:
        assert anonymous.post("/flow_runs/filter", json={}).status_code == 401
        assert anonymous.post(create, json={}).status_code == 401
        assert anonymous.get("/health").status_code == 200  # the probes stay public
    with access.client("admin", "not-the-password") as wrong:
        response = wrong.post(create, json={"parameters": {"playbook": "step"}, "state": LATER})
    assert response.status_code == 401, response.text
    assert access.runs_of_deployment() == before


def test_encoded_dot_segments_do_not_lead_past_the_policy(access: Access) -> None:
    """A path the policy reads as a viewer's route must not reach another route upstream."""
    with access.client("viewer") as viewer:
        deploy = viewer.post(
            "/ui/%2E%2E/deployments/",
            json={"name": "dotdot-viewer", "flow_id": access.flow, "work_pool_name": "fleetflow"},
        )
        secret = viewer.get(f"/flows/%2E%2E/block_documents/{access.secret_block}",
                            params={"include_secrets": "true"})  # fmt: skip
    assert SECRET_VALUE not in secret.text, "a viewer read a Secret value"
    assert secret.status_code in (400, 403, 404), secret.text
    rows = access.stack.query("SELECT count(*) FROM deployment WHERE name = 'dotdot-viewer'")
    assert rows == [(0,)], "a viewer created a deployment"
    assert deploy.status_code in (400, 403, 404), deploy.text


@pytest.mark.parametrize("spelling", ["true", "TRUE", "1", "on", "t", "y", "Y", " yes"])
def test_no_spelling_of_include_secrets_shows_a_viewer_secret_values(
    access: Access, spelling: str
) -> None:
    """Prefect (pydantic) reads each of these as true in a query string."""
    with access.client("viewer") as viewer:
        one = viewer.get(
            f"/block_documents/{access.secret_block}", params={"include_secrets": spelling}
        )
        of_type = viewer.get(
            "/block_types/slug/secret/block_documents", params={"include_secrets": spelling}
        )
    for response in (one, of_type):
        assert SECRET_VALUE not in response.text, f"include_secrets={spelling} leaked it"
        _refused(response, "viewer")


# -- 2. the operator's runs ----------------------------------------------------------------


def test_operator_creates_runs_only_within_the_deployments_schema(access: Access) -> None:
    create = f"/deployments/{access.deployment}/create_flow_run"
    before = access.runs_of_deployment()
    refused = {  # what the refusal must name: the body it refuses
        "job_variables": {"parameters": {"playbook": "step"}, "job_variables": {"command": "id"}},
        "work_queue_name": {"parameters": {"playbook": "step"}, "work_queue_name": "staging"},
        "evil": {"parameters": {"playbook": "step", "evil": "1"}},
        "Scheduled": {"parameters": {"playbook": "step"}, "state": {"type": "RUNNING"}},
    }
    with access.client("operator") as operator:
        for named, body in refused.items():
            response = operator.post(create, json=body)
            assert response.status_code == 403, (named, response.text)
            assert named in response.json()["detail"], (named, response.text)
        assert access.runs_of_deployment() == before
        made = operator.post(
            create,
            json={"parameters": {"playbook": "step"}, "state": LATER,
                  "tags": ["mine", "by:admin", "failed:web"]},
        )  # fmt: skip
    assert made.status_code == 201, made.text
    tags = access.tags(made.json()["id"])
    assert "by:operator" in tags and "mine" in tags, tags
    assert [tag for tag in tags if tag.startswith(("by:", "failed:"))] == ["by:operator"], tags
    with access.client("viewer") as viewer:
        response = viewer.post(create, json={"parameters": {"playbook": "step"}})
    assert response.status_code == 403
    assert "viewer" in response.json()["detail"] and "operator" in response.json()["detail"]
    assert access.runs_of_deployment() == before + 1


# -- 3. approval ---------------------------------------------------------------------------


def _approval_artifact(stack: RunningStack, run_id: str) -> str:
    rows = stack.query(
        "SELECT data FROM artifact WHERE flow_run_id::text = %s AND key = 'approval' "
        "ORDER BY created DESC LIMIT 1",
        run_id,
    )
    assert rows, "no approval artifact"
    data = rows[0][0]
    return str(json.loads(data) if isinstance(data, str) and data.startswith('"') else data)


def test_approval_is_recorded_under_the_login_and_only_listed_approvers_resume(
    access: Access, lab: Lab
) -> None:
    stack, tag = access.stack, new_tag()
    parameters = {
        "playbook": "write_file", "inventory": "lab", "limit": lab.hosts()[0].name,
        "extra_vars": {"path": f"/var/tmp/ff-access-{tag}", "content": tag},
        "approval": True, "approvers": ["approver"],
    }  # fmt: skip
    with access.client("operator") as operator:
        made = operator.post(
            f"/deployments/{access.deployment}/create_flow_run", json={"parameters": parameters}
        )
    assert made.status_code == 201, made.text
    run_id = made.json()["id"]
    stack.wait_state(run_id, "PAUSED")

    answer = {"run_input": {"decision": "approve", "approver": "someone-else", "comment": tag}}
    for user in ("operator", "approver-b"):
        with access.client(user) as client:
            response = client.post(f"/flow_runs/{run_id}/resume", json=answer)
        assert response.status_code == 403, (user, response.text)
        assert user in response.json()["detail"]
    assert stack.state(run_id)[0] == "PAUSED"

    with access.client("approver") as approver:
        response = approver.post(f"/flow_runs/{run_id}/resume", json=answer)
    assert response.status_code in (200, 201) and response.json()["status"] == "ACCEPT"
    stack.wait_state(run_id, "COMPLETED")
    decision = _approval_artifact(stack, run_id)
    assert "**approved**" in decision and tag in decision
    assert re.search(r"\|\s*approver\s*\|\s*approver\s*\|", decision), decision
    assert "someone-else" not in decision

    audit = _fleetflow(stack, "audit", "--user", "approver")
    assert audit.returncode == 0, audit.stderr
    resumed = [line for line in audit.stdout.splitlines() if f"/flow_runs/{run_id}/resume" in line]
    assert len(resumed) == 1 and " ok " in f"{resumed[0]} ", audit.stdout
    refused = _fleetflow(stack, "audit", "--user", "approver-b").stdout
    assert f"/api/flow_runs/{run_id}/resume" in refused and "refused" in refused
    everything = _fleetflow(stack, "audit", "--limit", "100000")
    assert everything.returncode == 0
    for password in [*PASSWORDS.values(), AUTH.split(":", 1)[1]]:
        assert password not in everything.stdout + everything.stderr


# -- 4. brute force ------------------------------------------------------------------------


def test_sixth_login_after_five_failures_is_locked_out_until_unlocked(access: Access) -> None:
    for attempt in range(5):
        with access.client("locky", f"wrong-{attempt}") as client:
            assert client.post("/flow_runs/filter", json={}).status_code == 401
    with access.client("locky") as client:
        locked = client.post("/flow_runs/filter", json={})
    assert locked.status_code == 429, locked.text
    assert "fleetflow users unlock" in locked.json()["detail"]

    audit = _fleetflow(access.stack, "audit", "--user", "locky").stdout.splitlines()
    assert sum("LOGIN" in line and "login bad" in line for line in audit) == 5, audit
    assert sum("login locked" in line for line in audit) == 1, audit

    unlocked = _fleetflow(access.stack, "users", "unlock", "locky")
    assert unlocked.returncode == 0, unlocked.stdout + unlocked.stderr
    with access.client("locky") as client:
        assert client.post("/flow_runs/filter", json={}).status_code == 200


# -- 5. the prefect CLI through the gateway ------------------------------------------------


def _as(access: Access, user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**access.stack.env, "PREFECT_API_AUTH_STRING": f"{user}:{PASSWORDS[user]}"}
    return subprocess.run(
        list(argv), cwd=access.stack.project, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def _deployment_run(access: Access, user: str) -> tuple[int, str, str]:
    params = json.dumps({"playbook": "step"})
    done = _as(access, user, str(BIN / "prefect"), "deployment", "run", "playbook/lab",
               "--params", params, "--start-in", "1 day")  # fmt: skip
    output = done.stdout + done.stderr
    found = re.search(r"UUID: ([0-9a-f-]{36})", output)
    return done.returncode, found[1] if found else "", output


def test_prefect_deployment_run_through_the_gateway(access: Access) -> None:
    code, run_id, output = _deployment_run(access, "operator")
    assert code == 0 and run_id, output
    assert "by:operator" in access.tags(run_id)
    before = access.runs_of_deployment()
    code, run_id, output = _deployment_run(access, "viewer")
    assert code != 0 and not run_id, output
    assert access.runs_of_deployment() == before


def test_deploy_through_the_gateway_needs_admin(access: Access) -> None:
    for user, works in (("admin", True), ("operator", False)):
        script = (
            "from prefect import flow\n"
            "flow.from_source(source='.', entrypoint='flows/playbook.py:playbook').deploy(\n"
            f"    name='cli-{user}', work_pool_name='fleetflow', work_queue_name='lab',\n"
            "    build=False, push=False, print_next_steps=False)\n"
        )
        done = _as(access, user, sys.executable, "-c", script)
        rows = access.stack.query("SELECT count(*) FROM deployment WHERE name = %s", f"cli-{user}")
        assert (done.returncode == 0) == works, done.stdout + done.stderr
        assert rows == [(1 if works else 0,)]


# -- 6. websockets -------------------------------------------------------------------------


def _ws_url(access: Access, path: str) -> str:
    return "ws" + access.url.removeprefix("http") + path


async def _closed_after_auth(url: str, token: str) -> ConnectionClosed:
    async with connect(url, subprotocols=[Subprotocol("prefect")]) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        try:
            message = await asyncio.wait_for(ws.recv(), 15)
        except ConnectionClosed as closed:
            return closed
    raise AssertionError(f"not closed after auth; got {message!r}")


async def _streamed(url: str, token: str, emit: Callable[[str], None]) -> dict[str, Any]:
    resource = f"fleetflow.test.access.{uuid.uuid4()}"
    async with connect(url, subprotocols=[Subprotocol("prefect")]) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 15)) == {"type": "auth_success"}
        # `until` defaults to the filter's own time: the stream would match nothing later.
        now = datetime.now(UTC)
        occurred = {"since": (now - timedelta(minutes=1)).isoformat(),
                    "until": (now + timedelta(hours=1)).isoformat()}  # fmt: skip
        wanted = {"resource": {"id": [resource]}, "occurred": occurred}
        await ws.send(json.dumps({"type": "filter", "filter": wanted}))
        await asyncio.to_thread(emit, resource)
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message.get("type") == "event":
                return dict(message["event"])


def test_websockets_through_the_gateway(access: Access) -> None:
    def emit(resource: str) -> None:
        event = {
            "id": str(uuid.uuid4()), "occurred": datetime.now(UTC).isoformat(),
            "event": "fleetflow.test.access", "resource": {"prefect.resource.id": resource},
        }  # fmt: skip
        access.stack.api("POST", "/events", [event])

    viewer = f"viewer:{PASSWORDS['viewer']}"
    event = asyncio.run(_streamed(_ws_url(access, "/events/out"), viewer, emit))
    assert event["event"] == "fleetflow.test.access", event

    refused = asyncio.run(_closed_after_auth(_ws_url(access, "/events/in"), viewer))
    assert refused.rcvd is not None and refused.rcvd.code == 1008
    assert "admin" in refused.rcvd.reason, refused.rcvd
    bad = asyncio.run(_closed_after_auth(_ws_url(access, "/events/out"), "viewer:wrong-password"))
    assert bad.rcvd is not None and bad.rcvd.code == 1008
    assert "wrong user name or password" in bad.rcvd.reason, bad.rcvd


# -- 7. the server behind the gateway ------------------------------------------------------


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* print them) listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_the_prefect_server_listens_on_loopback_and_takes_only_the_internal_credential(
    access: Access,
) -> None:
    state = json.loads((access.stack.directory / "stack.json").read_text())
    internal = int(state["internal_port"])
    assert internal != int(access.stack.env["FLEETFLOW_API_PORT"])
    assert _listening(internal) == {"0100007F"}  # 127.0.0.1, and nothing on IPv6
    url = f"http://127.0.0.1:{internal}/api/flow_runs/filter"
    user = httpx.post(url, json={}, auth=("admin", PASSWORDS["admin"]), timeout=30)
    assert user.status_code == 401, user.text
    assert httpx.post(url, json={}, timeout=30).status_code == 401
    name, password = AUTH.split(":", 1)
    assert httpx.post(url, json={}, auth=(name, password), timeout=30).status_code == 200


# -- 8. body limit -------------------------------------------------------------------------


def test_bodies_over_the_limit_are_refused_unread(access: Access) -> None:
    before = access.runs_of_deployment()
    filler = b"a" * (16 * 1024 * 1024 + 1)
    body = b'{"parameters": {"playbook": "step", "limit": "' + filler + b'"}, "state": null}'
    create = f"/deployments/{access.deployment}/create_flow_run"
    with access.client("admin") as admin:
        declared = admin.post(create, content=body, headers={"content-type": "application/json"})
        assert declared.status_code == 413, declared.text

        def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
            for start in range(0, len(body), 1 << 20):
                yield body[start : start + (1 << 20)]

        streamed = admin.post(
            create, content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413, streamed.text
    assert access.runs_of_deployment() == before
