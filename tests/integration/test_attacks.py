"""Issue #18: whoever may trigger a run sends data, never code.

An attacker holding what every operator holds (the stack's API credential) tries each
way in that was found open, through `prefect deployment run`, the HTTP API and events,
against a real stack (server on PostgreSQL, a worker with its launcher, the lab). Each
case ends one of two ways: refused when the run is created (no flow run exists), or run
with the input taken literally. Never a marker file on the controller or a host, and
never the vault password (or a transformation of it) in anything the run left.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetflow.lab import Lab

from .faults import host_lines, wait_on_host, wait_state
from .stacks import BIN, RunningStack, commands_naming, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = """
work_pool: {name: fleetflow, queues: [{name: lab}]}
workers: [{name: worker-attacks, queues: [lab]}]
worker_poll_seconds: 1
"""
VAULT_SECRET = "attack-vault"
VAULT_PASSWORD = "Vault-" + uuid.uuid4().hex[:16]
PWNED = "/tmp/ff-pwned"  # every attack below tries to create a file starting with this


def _pipe(tag: str) -> str:
    """A template that would run a command on the controller if it were ever rendered."""
    return f"{{{{ lookup('pipe', 'touch {PWNED}-{tag}; echo 127.0.0.1') }}}}"


@pytest.fixture(scope="module")
def stack(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    directory = tmp_path_factory.mktemp("attacks")
    with pytest.MonkeyPatch.context() as patch:
        # The worker's environment: the vault password as the Secret block's CI stand-in.
        patch.setenv("FLEETFLOW_SECRET_ATTACK_VAULT", VAULT_PASSWORD)
        more = {"other": lab.inventory_dir}  # a real environment, not the deployment's
        with running_stack(directory, str(lab.inventory_dir), CONFIG, more) as running:
            yield running


def _run_count(stack: RunningStack) -> int:
    # A schedule's future runs are the server's, made whenever its scheduler loops.
    return int(stack.query("SELECT count(*) FROM flow_run WHERE NOT auto_scheduled")[0][0])


def _no_marker(lab: Lab, tag: str = "") -> None:
    leftovers = sorted(str(p) for p in Path("/tmp").glob(f"ff-pwned{'-' + tag if tag else ''}*"))
    assert leftovers == [], leftovers
    for host in lab.hosts():
        found = lab.ssh(host.name, f"ls -d {PWNED}* 2>/dev/null || true").stdout.strip()
        assert found == "", (host.name, found)


def _post_run(stack: RunningStack, deployment: str, body: dict[str, Any]) -> httpx.Response:
    flow_name, name = deployment.split("/")
    found = stack.api("GET", f"/deployments/name/{flow_name}/{name}")
    user, password = stack.env["FLEETFLOW_API_AUTH"].split(":", 1)
    return httpx.post(
        f"{stack.env['PREFECT_API_URL']}/deployments/{found['id']}/create_flow_run",
        json=body, auth=(user, password), timeout=60,
    )  # fmt: skip


REFUSED_AT_TRIGGER = {
    "absolute playbook path": ("playbook/lab", {"playbook": "/tmp/evil.yml"}),
    "relative playbook path": ("playbook/lab", {"playbook": "../../../tmp/evil2.yml"}),
    "inventory path": ("playbook/lab", {"playbook": "ping", "inventory": "/tmp/evil-inv"}),
    "inventory not the deployment's": ("playbook/lab", {"playbook": "ping", "inventory": "other"}),
    "ansible_connection": (
        "playbook/lab",
        {"playbook": "ping", "extra_vars": {"ansible_connection": "local"}},
    ),
    "ssh ProxyCommand": (
        "playbook/lab",
        {
            "playbook": "ping",
            "extra_vars": {"ansible_ssh_common_args": f'-o ProxyCommand="touch {PWNED}-proxy"'},
        },
    ),
    "templated ansible_host": (
        "playbook/lab",
        {"playbook": "ping", "extra_vars": {"ansible_host": _pipe("host")}},
    ),
    "magic variable": ("playbook/lab", {"playbook": "ping", "extra_vars": {"hostvars": "x"}}),
    "undeclared role input": (
        "playbook/lab",
        {
            "playbook": "health_check",
            "extra_vars": {"app_name": f"../usr/bin/touch {PWNED}-x {PWNED}-y"},
        },
    ),
    "declared variable of the wrong shape": (
        "playbook/lab",
        {"playbook": "deploy_app", "extra_vars": {"app_version": "1; touch x"}},
    ),
    "unknown parameter": ("playbook/lab", {"playbook": "ping", "timeout": 5}),
    "time limit above the maximum": ("playbook/lab", {"playbook": "ping", "time_limit": 10**6}),
    "script path": ("run_script/lab", {"script": "../../bin/sh"}),
    "runbook step path": ("runbook/lab", {"steps": [{"playbook": "/tmp/evil.yml"}]}),
    "runbook step undeclared variable": (
        "runbook/lab",
        {"steps": [{"playbook": "ping", "extra_vars": {"ansible_connection": "local"}}]},
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED_AT_TRIGGER))
def test_refused_by_the_cli_with_no_flow_run(stack: RunningStack, lab: Lab, case: str) -> None:
    deployment, params = REFUSED_AT_TRIGGER[case]
    before = _run_count(stack)
    code, run_id, output = stack.trigger(deployment, **params)
    assert code != 0 and run_id == "", output
    reasons = ("Validation failed", "not valid", "not one of", "not found on the deployment")
    assert any(reason in output for reason in reasons), output
    if case == "absolute playbook path":  # the refusal names what may be chosen
        assert "ping" in output and "site" in output, output
    assert _run_count(stack) == before
    _no_marker(lab)


API_REFUSALS = {
    "unknown parameter": {"parameters": {"playbook": "ping", "timeout": 5}},
    "NUL in a parameter": {"parameters": {"playbook": "ping", "limit": "web\u0000"}},
    "NUL in a variable": {"parameters": {"playbook": "write_file", "extra_vars": {
        "path": "/var/tmp/x", "content": "a\u0000b"}}},
    "escape sequence in a name": {"parameters": {"playbook": "ping", "approvers": ["\u001b[2J"]}},
    "200,000-character playbook": {"parameters": {"playbook": "p" * 200_000}},
    "nested variables": {"parameters": {"playbook": "write_file", "extra_vars": {
        "path": "/var/tmp/x", "content": {"deep": ["{{ 7 * 7 }}"]}}}},
    "job variable command": {"parameters": {"playbook": "ping"},
                             "job_variables": {"command": f"touch {PWNED}-job"}},
    "job variable env": {"parameters": {"playbook": "ping"},
                         "job_variables": {"env": {"FLEETFLOW_PROJECT_DIR": "/tmp"}}},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(API_REFUSALS))
def test_refused_by_the_api_with_a_client_error(stack: RunningStack, lab: Lab, case: str) -> None:
    before = _run_count(stack)
    response = _post_run(stack, "playbook/lab", API_REFUSALS[case])
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert _run_count(stack) == before
    _no_marker(lab)


def test_templates_in_declared_variables_arrive_as_text(stack: RunningStack, lab: Lab) -> None:
    tag = uuid.uuid4().hex[:8]
    host = lab.hosts()[0].name
    path = f"/var/tmp/ff-literal-{tag}"
    content = f"{_pipe(tag)} {{% for x in range(3) %}}{{{{ x }}}}{{% endfor %}}"
    code, run_id, output = stack.trigger(
        "playbook/lab", watch=True, playbook="write_file", limit=host,
        extra_vars={"path": path, "content": content},
    )  # fmt: skip
    assert code == 0, output
    assert lab.ssh(host, f"cat {path}").stdout == content + "\n"
    args = [_pipe(f"{tag}-args"), "{% raw %}x{% endraw %}"]
    run_id = stack.create_run("run_script/lab", script="service_check.sh", hosts=host, args=args)
    wait_state(stack, run_id, "COMPLETED")
    _no_marker(lab, tag)
    lab.ssh(host, f"rm -f {path}")


def test_a_server_told_to_skip_its_check_still_runs_nothing(stack: RunningStack, lab: Lab) -> None:
    """The API lets a caller turn the server's schema check off for one run: the flow
    checks the same before touching any host, and fails with the reason."""
    cases = {
        "/tmp/evil.yml": {"playbook": "/tmp/evil.yml"},
        "ansible_connection": {"playbook": "ping", "extra_vars": {"ansible_connection": "local"}},
        "app_name": {"playbook": "health_check", "extra_vars": {"app_name": "../bin/x"}},
    }
    runs = {}
    for needle, params in cases.items():
        response = _post_run(
            stack, "playbook/lab", {"parameters": params, "enforce_parameter_schema": False}
        )
        assert response.status_code < 300, response.text
        runs[needle] = response.json()["id"]
    for needle, run_id in runs.items():
        wait_state(stack, run_id, "FAILED")
        message = stack.state(run_id)[2] + "\n".join(stack.logs(run_id))
        assert needle in message, message[-2000:]
        assert not any("ansible-playbook started" in line for line in stack.logs(run_id))
    _no_marker(lab)


def test_event_payloads_follow_the_same_rules(stack: RunningStack, lab: Lab) -> None:
    tag, good = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    host = lab.hosts()[1].name
    bad = {"playbook": "/tmp/evil3.yml", "inventory": "lab", "limit": f"{host},x{tag}"}
    _emit(stack, f"release.evil.{tag}", bad)
    _emit(
        stack,
        f"release.evil.{tag}a",
        {
            "playbook": "ping",
            "limit": f"{host},x{tag}",
            "extra_vars": {"ansible_connection": "local"},
        },
    )
    # A good event after them: once its run exists, the bad ones were acted on too.
    _emit(stack, f"release.good.{good}", {"playbook": "ping", "limit": f"{host},x{good}"})
    deadline = time.monotonic() + 120
    while not _runs_with(stack, good):
        assert time.monotonic() < deadline, "the good event started no run"
        time.sleep(1)
    time.sleep(3)
    assert _runs_with(stack, tag) == []
    _no_marker(lab)


def _emit(stack: RunningStack, resource_id: str, payload: dict[str, Any]) -> None:
    done = stack.cli(
        str(BIN / "prefect"), "events", "emit", "fleetflow.release.ready",
        "--resource-id", resource_id, "--payload", json.dumps(payload),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _runs_with(stack: RunningStack, tag: str) -> list[str]:
    rows = stack.query("SELECT id::text, parameters::text FROM flow_run")
    return [run_id for run_id, params in rows if tag in params]


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, secret.lower(), secret.upper(), base64.b64encode(raw).decode().rstrip("="),
            urllib.parse.quote(secret, safe=""), raw.hex()]  # fmt: skip


def _files_holding(roots: list[Path], needles: list[str]) -> list[str]:
    found = []
    encoded = [n.encode() for n in needles]
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else []:
            try:
                if path.is_symlink() or not path.is_file() or path.stat().st_size > 20 << 20:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            if any(n in data for n in encoded):
                found.append(str(path))
    return found


def test_the_vault_password_cannot_be_taken_out(stack: RunningStack, lab: Lab) -> None:
    host = lab.hosts()[2].name
    tag = uuid.uuid4().hex[:8]
    path = f"/var/tmp/ff-exfil-{tag}"
    attempts = [
        "{{ lookup('file', lookup('env', 'ANSIBLE_VAULT_PASSWORD_FILE')) | b64encode }}",
        "{{ lookup('env', 'FLEETFLOW_SECRET_ATTACK_VAULT') }}",
        "{{ lookup('env', 'PREFECT_API_AUTH_STRING') | upper }}",
    ]
    for number, attempt in enumerate(attempts):
        run_id = stack.create_run(
            "playbook/lab", playbook="write_file", limit=host, vault_password_secret=VAULT_SECRET,
            extra_vars={"path": f"{path}-{number}", "content": attempt},
        )  # fmt: skip
        wait_state(stack, run_id, "COMPLETED")
        assert lab.ssh(host, f"cat {path}-{number}").stdout == attempt + "\n"
    secrets = [*_forms(VAULT_PASSWORD), *_forms(stack.env["FLEETFLOW_API_AUTH"].split(":")[1])]
    stored = stack.query(
        "SELECT string_agg(message, ' ') FROM log UNION ALL "
        "SELECT string_agg(coalesce(data::text, '') || coalesce(description, ''), ' ') "
        "FROM artifact UNION ALL SELECT string_agg(coalesce(message, ''), ' ') "
        "FROM flow_run_state UNION ALL SELECT string_agg(coalesce(message, ''), ' ') "
        "FROM task_run_state UNION ALL SELECT string_agg(payload::text, ' ') FROM events"
    )
    text = " ".join(str(row[0] or "") for row in stored)
    assert VAULT_PASSWORD not in text
    assert [s for s in secrets if s in text] == []
    roots = [Path("/tmp"), stack.directory, Path.home() / ".ansible", stack.project]
    assert _files_holding(roots, secrets[:6]) == []
    for number in range(len(attempts)):
        lab.ssh(host, f"rm -f {path}-{number}")


def test_ansible_sees_no_credential_and_a_killed_run_leaves_nothing(
    stack: RunningStack, lab: Lab
) -> None:
    """While a deployed run plays, its private dir holds runner's command file: it must
    not hold the API credential or the database URL. SIGKILL the flow-run process: the
    reaper stops the playbook and removes the private dir; the run says it was killed."""
    host, tag = lab.hosts()[0].name, uuid.uuid4().hex[:8]
    run_id = stack.create_run(
        "playbook/lab", playbook="hold", limit=host, extra_vars={"tag": tag, "seconds": 120}
    )
    wait_on_host(lab, host, "/var/tmp/ff-hold.log", f"start {tag}")
    private = _private_dir_of(tag)
    command = (private / "artifacts" / "run" / "command").read_text()
    for leaked in ("PREFECT_API_AUTH_STRING", stack.env["FLEETFLOW_API_AUTH"], "DATABASE_URL",
                   "FLEETFLOW_SECRET", VAULT_PASSWORD):  # fmt: skip
        assert leaked not in command
    assert not (private / "env" / "passwords").exists()
    assert not (private / "env" / "extravars").exists()
    pid = int(private.name.split("-")[2])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while private.exists() or commands_naming(str(private)):
        assert time.monotonic() < deadline, "the killed run's private dir or processes remain"
        time.sleep(0.5)
    wait_state(stack, run_id, "CRASHED", timeout=300)
    message = stack.state(run_id)[2]
    assert "high memory usage" not in message and "SIGKILL" in message, message
    time.sleep(3)
    assert not any(f"end {tag}" in line for line in host_lines(lab, host, "/var/tmp/ff-hold.log"))


def _private_dir_of(tag: str, timeout: float = 60) -> Path:
    """The private dir (ff-run-<pid>-*) of the run whose variables carry `tag`."""
    deadline = time.monotonic() + timeout
    while True:
        for candidate in Path("/tmp").glob("ff-run-*"):
            try:
                if tag in (candidate / "secrets" / "extra_vars.yml").read_text():
                    return candidate
            except OSError:
                continue
        assert time.monotonic() < deadline, f"no private dir for the run tagged {tag}"
        time.sleep(0.5)


def test_conditions_only_reach_the_inventorys_hosts(stack: RunningStack, lab: Lab) -> None:
    """A trigger's port or HTTP condition must not make the worker probe its network (the
    API itself here); a host of the inventory may be waited for."""
    api = stack.env["PREFECT_API_URL"]
    probes = [
        {"kind": "http", "url": f"{api}/health", "timeout": 5},
        {"kind": "port", "host": "127.0.0.1", "port": 5432, "timeout": 5},
    ]
    refused = [stack.create_run("wait_then_run/lab", playbook="ping", conditions=[probe])
               for probe in probes]  # fmt: skip
    for run_id in refused:
        wait_state(stack, run_id, "FAILED")
        assert "is not a host of inventory lab" in stack.state(run_id)[2]
    host = lab.hosts()[1]  # not the host of the killed run above: its lock lapses in 120 s
    fine = {"kind": "port", "host": host.address, "port": 22, "timeout": 60}
    run_id = stack.create_run("wait_then_run/lab", playbook="ping", limit=host.name,
                              conditions=[fine])  # fmt: skip
    wait_state(stack, run_id, "COMPLETED")
