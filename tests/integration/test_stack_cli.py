"""The stack's commands from a new shell: the UI's API URL on a port other than 4200, the
stack found from its own state without flags or PREFECT_* variables, and one line (no
traceback, no ephemeral server) when the API refuses or is not there."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .stacks import BIN, RunningStack, free_port, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLEETFLOW = str(BIN / "fleetflow")
ONE_WORKER = """
work_pool:
  name: fleetflow
  queues: [{name: lab}]
workers:
  - {name: worker-lab, queues: [lab]}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    inventory = tmp_path_factory.mktemp("inventory")
    with running_stack(tmp_path_factory.mktemp("stack"), str(inventory), ONE_WORKER) as running:
        yield running


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A new shell: no PREFECT_* and no FLEETFLOW_* variable but those given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FLEETFLOW_"))}
    return {**env, "HOME": str(home), **extra}


def _fleetflow(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLEETFLOW, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _port(stack: RunningStack) -> int:
    return int(stack.env["FLEETFLOW_API_PORT"])


def test_ui_settings_give_the_stacks_own_api_url(stack: RunningStack) -> None:
    port = _port(stack)
    assert port != 4200
    user, password = stack.env["FLEETFLOW_API_AUTH"].split(":", 1)
    settings = httpx.get(
        f"http://127.0.0.1:{port}/ui-settings", auth=(user, password), timeout=30
    ).json()
    assert settings["api_url"] == f"http://127.0.0.1:{port}/api"
    # running_stack exports the right PREFECT_API_URL, from which Prefect would derive the
    # same answer: the server must be given it whatever the caller's shell holds.
    state = json.loads((stack.directory / "stack.json").read_text())
    (server,) = [p for p in state["processes"] if p["role"] == "server"]
    environ = Path(f"/proc/{server['pid']}/environ").read_bytes().split(b"\0")
    assert f"PREFECT_UI_API_URL=http://127.0.0.1:{port}/api".encode() in environ


def test_status_in_a_new_shell_finds_the_stack(stack: RunningStack, tmp_path: Path) -> None:
    env = _clean_env(tmp_path, FLEETFLOW_STACK_DIR=str(stack.directory))
    done = _fleetflow(stack.project, env, "stack", "status")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    port = _port(stack)
    assert f"server:   http://127.0.0.1:{port} (healthy)" in out
    assert "database: postgresql" in out and stack.database in out
    workers = [
        line.split() for line in out.splitlines() if line.split()[:2] == ["worker", "worker-lab"]
    ]
    assert len(workers) == 1 and workers[0][-2:] == ["running", "ONLINE"], out
    assert f"export PREFECT_API_URL=http://127.0.0.1:{port}/api" in out
    # The credentials are named (a file to read), never printed.
    assert stack.env["FLEETFLOW_API_AUTH"].split(":", 1)[1] not in out + done.stderr


def test_history_in_a_new_shell_reads_the_stacks_runs(stack: RunningStack, tmp_path: Path) -> None:
    flow = stack.api("POST", "/flows/", {"name": "cli-probe"})
    run = stack.api("POST", "/flow_runs/", {"flow_id": flow["id"], "name": "probe-from-api"})
    stack.api("POST", f"/flow_runs/{run['id']}/set_state", {"state": {"type": "COMPLETED"}})
    env = _clean_env(tmp_path, FLEETFLOW_STACK_DIR=str(stack.directory))
    done = _fleetflow(stack.project, env, "history", "--limit", "50")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "probe-from-api" in done.stdout
    assert not (tmp_path / ".prefect" / "prefect.db").exists()


@pytest.mark.parametrize("command", [["history"], ["automations", "apply", "--dry-run"]])
def test_wrong_credentials_give_one_line(
    stack: RunningStack, tmp_path: Path, command: list[str]
) -> None:
    env = _clean_env(
        tmp_path,
        PREFECT_API_URL=stack.env["PREFECT_API_URL"],
        PREFECT_API_AUTH_STRING="fleetflow:not-the-password",
    )
    done = _fleetflow(stack.project, env, *command)
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "refused the credentials (HTTP 401)" in lines[0]
    assert "PREFECT_API_AUTH_STRING" in lines[0] and "not-the-password" not in lines[0]


def test_run_with_wrong_credentials_gives_one_line(stack: RunningStack, tmp_path: Path) -> None:
    env = _clean_env(
        tmp_path,
        PREFECT_API_URL=stack.env["PREFECT_API_URL"],
        PREFECT_API_AUTH_STRING="fleetflow:not-the-password",
    )
    done = _fleetflow(stack.project, env, "run", "playbook/lab")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "401" in done.stderr


def test_a_port_where_nothing_answers_gives_one_line(tmp_path: Path) -> None:
    env = _clean_env(tmp_path, PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api")
    done = _fleetflow(tmp_path, env, "history")
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not answering" in lines[0], done.stderr
    assert "fleetflow stack up" in lines[0]


def test_no_stack_and_no_url_is_refused_without_an_ephemeral_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = _clean_env(home, FLEETFLOW_STACK_DIR=str(tmp_path / "no-stack"))
    for command in (["history"], ["run", "playbook/lab"], ["automations", "apply"]):
        done = _fleetflow(tmp_path, env, *command)
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            "fleetflow: error: PREFECT_API_URL is not set"
        ), done.stderr
        assert "fleetflow stack up" in lines[0]
    assert not (home / ".prefect" / "prefect.db").exists()
    assert not list(home.rglob("*.db"))


def test_apply_without_a_channel_refuses_unless_asked(stack: RunningStack, tmp_path: Path) -> None:
    specs = tmp_path / "automations"
    specs.mkdir()
    (specs / "crashed.yaml").write_text(
        "name: fleetflow/cli-probe-crashed\n"
        "enabled: true\n"
        "trigger: {type: event, posture: Reactive, match: {prefect.resource.id: "
        "prefect.flow-run.*}, expect: [prefect.flow-run.Crashed], threshold: 1, within: 0}\n"
        "notify: {channels: [fleetflow-webhook], subject: s, body: b}\n"
    )
    env = _clean_env(tmp_path, FLEETFLOW_STACK_DIR=str(stack.directory))
    refused = _fleetflow(stack.project, env, "automations", "apply", "--dir", str(specs))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "would alert no one" in refused.stderr and "--no-channel" in refused.stderr
    names = [a["name"] for a in stack.api("POST", "/automations/filter", {})]
    assert "fleetflow/cli-probe-crashed" not in names

    done = _fleetflow(
        stack.project, env, "automations", "apply", "--dir", str(specs), "--no-channel"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 automations alert nowhere" in done.stdout
    created = [
        a for a in stack.api("POST", "/automations/filter", {})
        if a["name"] == "fleetflow/cli-probe-crashed"
    ]  # fmt: skip
    assert len(created) == 1 and created[0]["actions"] == []
