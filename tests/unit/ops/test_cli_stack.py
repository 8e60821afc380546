"""How CLI commands find the stack (flags, then variables, then the stack's state), refuse
without one, turn API failures into one line, and take -v after the subcommand."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.exceptions import PrefectHTTPStatusError

from fleetflow.exceptions import ConfigurationError
from fleetflow.ops import cli
from fleetflow.ops._api import ApiConfig
from fleetflow.ops._errors import api_error_line

LABEL = "postgresql://ops:***@127.0.0.1:5432/fleetflow_x"


@pytest.fixture
def stack_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stack directory as `stack up` leaves it (port 4300, PostgreSQL), and a shell with
    no PREFECT_* or FLEETFLOW_* variable but FLEETFLOW_STACK_DIR."""
    for name in list(os.environ):
        if name.startswith(("PREFECT_API", "FLEETFLOW_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FLEETFLOW_STACK_DIR", str(tmp_path))
    state = {
        "api_url": "http://127.0.0.1:4300/api", "host": "127.0.0.1", "port": 4300,
        "server_url": None, "database": LABEL, "processes": [],
    }  # fmt: skip
    (tmp_path / "stack.json").write_text(json.dumps(state))
    (tmp_path / "api-auth").write_text("fleetflow:from-file\n")
    return tmp_path


class _Built(Exception):
    pass


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The arguments `fleetflow stack ...` builds its Stack with (then it stops)."""
    seen: dict[str, Any] = {}

    def record(directory: Path, project_dir: Path, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise _Built

    monkeypatch.setattr("fleetflow.stack.Stack", record)
    yield seen


@pytest.mark.usefixtures("stack_dir")
def test_status_without_flags_uses_the_running_stacks_port_and_database(
    built: dict[str, Any],
) -> None:
    with pytest.raises(_Built):
        cli.main(["stack", "status"])
    assert built["port"] == 4300 and built["host"] == "127.0.0.1"
    assert built["database_label"] == LABEL and built["database"] is None
    assert built["server_url"] is None


@pytest.mark.usefixtures("stack_dir")
def test_a_port_flag_or_variable_wins_over_the_state(
    built: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(_Built):
        cli.main(["stack", "status", "--port", "4400"])
    assert built["port"] == 4400 and built["database_label"] is None  # another server
    monkeypatch.setenv("FLEETFLOW_API_PORT", "4500")
    with pytest.raises(_Built):
        cli.main(["stack", "down"])
    assert built["port"] == 4500


def test_without_state_the_defaults_hold(
    tmp_path: Path, built: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEETFLOW_API_PORT", raising=False)
    monkeypatch.setenv("FLEETFLOW_STACK_DIR", str(tmp_path))
    with pytest.raises(_Built):
        cli.main(["stack", "status"])
    assert built["port"] == 4200 and built["database_label"] is None


def test_discover_reads_the_stack_and_its_credentials_file(stack_dir: Path) -> None:
    config = ApiConfig.discover(stack_dir, env={})
    assert config.url == "http://127.0.0.1:4300/api" and config.auth == "fleetflow:from-file"
    assert "from-file" not in repr(config)


def test_discover_prefers_the_environment(stack_dir: Path) -> None:
    env = {"PREFECT_API_URL": "http://other:4200/api", "PREFECT_API_AUTH_STRING": "a:b"}
    assert ApiConfig.discover(stack_dir, env=env).url == "http://other:4200/api"
    assert ApiConfig.discover(stack_dir, env=env).auth == "a:b"
    # Another server never gets the stack's credentials; FLEETFLOW_API_AUTH is used.
    assert ApiConfig.discover(stack_dir, env={"PREFECT_API_URL": "http://other/api"}).auth is None
    fleetflow_auth = {"PREFECT_API_URL": "http://other/api", "FLEETFLOW_API_AUTH": "c:d"}
    assert ApiConfig.discover(stack_dir, env=fleetflow_auth).auth == "c:d"
    same = {"PREFECT_API_URL": "http://127.0.0.1:4300/api/"}
    assert ApiConfig.discover(stack_dir, env=same).auth == "fleetflow:from-file"


def test_discover_without_url_or_stack_says_how(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        ApiConfig.discover(tmp_path, env={})
    message = str(refused.value)
    assert message.startswith("PREFECT_API_URL is not set") and "fleetflow stack up" in message
    assert "\n" not in message


@pytest.mark.parametrize("command", [["history"], ["history", "ux-01"], ["automations", "apply"]])
def test_reading_commands_without_a_stack_refuse_before_prefect_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("FLEETFLOW_STACK_DIR", str(tmp_path))

    def no_client(**_: Any) -> None:
        raise AssertionError("Prefect's client was asked for (an ephemeral server)")

    monkeypatch.setattr("prefect.client.orchestration.get_client", no_client)
    assert cli.main(command) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("fleetflow: error: PREFECT_API_URL is not set")


def test_history_uses_the_stacks_url_and_credentials(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_client(sync_client: bool = False) -> None:
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

        seen["url"], seen["auth"] = PREFECT_API_URL.value(), PREFECT_API_AUTH_STRING.value()
        raise httpx.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr("prefect.client.orchestration.get_client", fake_client)
    assert cli.main(["history"]) == 1
    auth = (
        seen["auth"].get_secret_value()
        if hasattr(seen["auth"], "get_secret_value")
        else seen["auth"]
    )
    assert seen["url"] == "http://127.0.0.1:4300/api" and auth == "fleetflow:from-file"


def _request() -> httpx.Request:
    return httpx.Request("POST", "http://user:pw@127.0.0.1:4300/api/flow_runs/filter?x=1")


def test_401_is_one_line_naming_what_to_set_and_no_secret() -> None:
    response = httpx.Response(401, json={"detail": "Unauthorized"}, request=_request())
    error = httpx.HTTPStatusError("401", request=_request(), response=response)
    line = api_error_line(error)
    assert line is not None and "\n" not in line
    assert line.startswith("the Prefect API at http://127.0.0.1:4300 refused the credentials")
    assert "PREFECT_API_AUTH_STRING" in line and "pw" not in line.replace("PREFECT", "")
    wrapped = PrefectHTTPStatusError.from_httpx_error(error)
    assert api_error_line(wrapped) == line


def test_connection_refused_is_one_line_through_any_wrapping() -> None:
    try:
        try:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=_request())
        except httpx.ConnectError as exc:
            raise RuntimeError("client failed") from exc
    except RuntimeError as outer:
        line = api_error_line(outer)
    assert line is not None and "\n" not in line
    assert "127.0.0.1:4300 is not answering ([Errno 111] Connection refused)" in line
    assert "fleetflow stack up" in line
    assert api_error_line(ValueError("a bug")) is None


def test_other_http_errors_name_the_request_and_the_servers_reason() -> None:
    response = httpx.Response(500, json={"detail": "boom"}, request=_request())
    error = httpx.HTTPStatusError("500", request=_request(), response=response)
    assert api_error_line(error) == (
        "the Prefect API at http://127.0.0.1:4300 answered HTTP 500 to POST "
        "/api/flow_runs/filter: boom"
    )


def test_main_prints_one_line_and_a_bug_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(_: Any) -> int:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=_request())

    monkeypatch.setattr(cli, "_check", refused)
    assert cli.main(["check"]) == 1
    assert capsys.readouterr().err.count("\n") == 1

    def bug(_: Any) -> int:
        raise KeyError("bug")

    monkeypatch.setattr(cli, "_check", bug)
    with pytest.raises(KeyError):
        cli.main(["check"])


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["lab", "up", "-v"], True),
        (["-v", "lab", "up"], True),
        (["lab", "up"], False),
        (["stack", "status", "--verbose"], True),
        (["history", "-v"], True),
        (["lab", "ssh", "ux-01", "ls", "-v"], False),  # the remote command's own -v
    ],
)
def test_verbose_before_or_after_the_subcommand(argv: list[str], verbose: bool) -> None:
    args = cli._parser().parse_args(argv)
    assert args.verbose is verbose
    if argv[:2] == ["lab", "ssh"]:
        assert args.command == ["ls", "-v"]
