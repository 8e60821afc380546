"""The stack remembers itself: its state file says where its server answers and on what
database, and its credentials stay in its private file, never in the state."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fleetflow.exceptions import StackError
from fleetflow.ops._stackfile import StackState
from fleetflow.stack import StackConfig
from fleetflow.stack._stack import Stack

URL = "postgresql://ops:s3cr%40t-pw@db.example:5432/fleetflow"


def test_saved_state_reads_back_with_port_and_masked_database(tmp_path: Path) -> None:
    stack = Stack(tmp_path, tmp_path, port=4300, database=URL, auth="fleetflow:pw-in-file")
    stack._save([])
    text = (tmp_path / "stack.json").read_text()
    assert "s3cr" not in text and "pw-in-file" not in text
    state = StackState.read(tmp_path)
    assert state is not None
    assert (state.api_url, state.host, state.port) == (
        "http://127.0.0.1:4300/api",
        "127.0.0.1",
        4300,
    )
    assert state.database.startswith("postgresql") and "db.example:5432/fleetflow" in state.database
    assert state.server_url is None


def test_no_state_is_none_and_garbage_is_an_error(tmp_path: Path) -> None:
    assert StackState.read(tmp_path) is None
    (tmp_path / "stack.json").write_text("{not json")
    with pytest.raises(StackError, match="unreadable stack state"):
        StackState.read(tmp_path)
    (tmp_path / "stack.json").write_text("[]")
    with pytest.raises(StackError, match="no api_url"):
        StackState.read(tmp_path)


def test_a_state_from_before_ports_were_recorded_takes_the_port_from_the_url(
    tmp_path: Path,
) -> None:
    (tmp_path / "stack.json").write_text(
        json.dumps({"api_url": "http://127.0.0.1:4311/api", "database": "x", "processes": []})
    )
    state = StackState.read(tmp_path)
    assert state is not None and state.port == 4311 and state.host == "127.0.0.1"


def test_remembered_database_is_what_status_reports(tmp_path: Path) -> None:
    label = "postgresql://ops:***@db.example:5432/fleetflow"
    assert Stack(tmp_path, tmp_path, database_label=label).database_label == label
    # A database given now wins over the remembered one.
    given = Stack(tmp_path, tmp_path, database="postgresql://a@b/c", database_label=label)
    assert given.database_label.endswith("@b/c")
    assert Stack(tmp_path, tmp_path).database_label.startswith("sqlite:")


def test_server_gets_its_own_api_url_for_the_ui(tmp_path: Path) -> None:
    """Regression: /ui-settings said :4200 for a server on --port 4300, so the UI had no API."""
    env = Stack(tmp_path, tmp_path, port=4300, auth="u:p")._server_env(StackConfig())
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4300/api"


def test_given_credentials_are_kept_in_the_private_file(tmp_path: Path) -> None:
    Stack(tmp_path, tmp_path, auth="fleetflow:first")._keep_given_auth()
    auth_file = tmp_path / "api-auth"
    assert auth_file.read_text() == "fleetflow:first\n"
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    Stack(tmp_path, tmp_path, auth="fleetflow:second")._keep_given_auth()
    assert auth_file.read_text() == "fleetflow:second\n"
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    state_dir_stack = Stack(tmp_path, tmp_path)  # none given: the file is left alone
    state_dir_stack._keep_given_auth()
    assert auth_file.read_text() == "fleetflow:second\n"
