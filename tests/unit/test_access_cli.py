"""`fleetflow users ...` and `fleetflow audit` on a stack without PostgreSQL (SQLite store):
passwords only from stdin or the terminal, and every change in the audit, without them."""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetflow.access import AccessStore, Role
from fleetflow.ops import _access_cli, cli

PASSWORD = "correct horse battery"


@pytest.fixture
def stack_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stack on SQLite as `stack up` leaves it, and no FLEETFLOW_* variable but its dir."""
    for name in list(os.environ):
        if name.startswith(("PREFECT_API", "FLEETFLOW_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FLEETFLOW_STACK_DIR", str(tmp_path))
    state = {
        "api_url": "http://127.0.0.1:4300/api", "host": "127.0.0.1", "port": 4300,
        "server_url": None, "database": f"sqlite:{tmp_path}/home/prefect.db", "processes": [],
    }  # fmt: skip
    (tmp_path / "stack.json").write_text(json.dumps(state))
    return tmp_path


def _run(monkeypatch: pytest.MonkeyPatch, argv: list[str], stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli.main(argv)


def _store(stack_dir: Path) -> AccessStore:
    return AccessStore(f"sqlite:///{stack_dir}/access.db")


def test_users_add_reads_the_password_from_stdin_and_the_user_can_log_in(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(monkeypatch, ["users", "add", "alice", "--role", "operator"], PASSWORD + "\n") == 0
    assert "users add alice: done" in capsys.readouterr().out
    login = _store(stack_dir).login("alice", PASSWORD, "10.0.0.1")
    assert login.outcome == "ok" and login.user is not None
    assert login.user.role is Role.OPERATOR


def test_a_password_is_never_taken_from_argv(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _run(monkeypatch, ["users", "add", "alice", "--role", "viewer", "--password", PASSWORD])
    # No stdin either: refused with one line, nothing added.
    assert _run(monkeypatch, ["users", "add", "alice", "--role", "viewer"], "") == 2
    assert "no password" in capsys.readouterr().err
    assert _store(stack_dir).list_users() == []


def test_refusals_are_one_line_and_nonzero(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(monkeypatch, ["users", "add", "alice", "--role", "viewer"], "short\n") == 2
    err = capsys.readouterr().err
    assert err.startswith("fleetflow: error: ") and err.count("\n") == 1
    assert _run(monkeypatch, ["users", "add", "fleetflow", "--role", "admin"], PASSWORD) == 2
    assert "service account" in capsys.readouterr().err
    assert _run(monkeypatch, ["users", "disable", "nobody"]) == 2
    assert _run(monkeypatch, ["users", "unlock"]) == 2


def test_list_passwd_role_disable_enable(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(monkeypatch, ["users", "add", "bob", "--role", "viewer"], PASSWORD + "\n")
    _run(monkeypatch, ["users", "role", "bob", "approver"])
    _run(monkeypatch, ["users", "disable", "bob"])
    capsys.readouterr()
    assert _run(monkeypatch, ["users", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "role", "state"]
    assert lines[1].split()[:3] == ["bob", "approver", "disabled"]

    _run(monkeypatch, ["users", "enable", "bob"])
    _run(monkeypatch, ["users", "passwd", "bob"], "a brand new password\n")
    store = _store(stack_dir)
    assert store.login("bob", PASSWORD, "10.0.0.1").outcome == "bad"
    assert store.login("bob", "a brand new password", "10.0.0.1").outcome == "ok"


def test_unlock_by_name_and_by_address(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(monkeypatch, ["users", "add", "alice", "--role", "viewer"], PASSWORD + "\n")
    store = _store(stack_dir)
    for _ in range(6):
        store.login("alice", "wrong wrong wrong", "10.0.0.7")
    assert store.login("alice", PASSWORD, "10.0.0.8").outcome == "locked"
    assert _run(monkeypatch, ["users", "unlock", "alice", "--address", "10.0.0.7"]) == 0
    # user: its lockout and 5 failures (the 6th try was refused unchecked); address: 5.
    assert "user:alice, address:10.0.0.7: 11 lockout and failure records" in (
        capsys.readouterr().out
    )
    assert store.login("alice", PASSWORD, "10.0.0.8").outcome == "ok"


def test_audit_shows_the_clis_own_changes_without_passwords(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(monkeypatch, ["users", "add", "alice", "--role", "operator"], PASSWORD + "\n")
    _run(monkeypatch, ["users", "passwd", "alice"], "second long password\n")
    _run(monkeypatch, ["users", "add", "alice", "--role", "admin"], "third long password\n")
    capsys.readouterr()
    assert _run(monkeypatch, ["audit", "--since", "5m"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "time", "actor", "role", "address", "method", "route", "status", "outcome", "targets"
    ]  # fmt: skip
    actor = lines[1].split()[2]
    assert actor.startswith("cli:")
    routes = [line.split("CLI", 1)[1].split() for line in lines[1:]]
    assert routes == [  # newest first; the refused add is recorded as refused
        ["users", "add", "alice", "1", "refused", "alice"],
        ["users", "passwd", "alice", "0", "ok", "alice"],
        ["users", "add", "alice", "0", "ok", "alice"],
    ]
    every = _store(stack_dir).audit()
    text = out + "".join(e.detail for e in every)
    for secret in (PASSWORD, "second long password", "third long password"):
        assert secret not in text
        assert secret.encode() not in (stack_dir / "access.db").read_bytes()
    assert every[2].detail == "role=operator"

    assert _run(monkeypatch, ["audit", "--user", actor, "--limit", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert _run(monkeypatch, ["audit", "--user", "nobody"]) == 0
    assert capsys.readouterr().out == "no audit entries match\n"


def test_since_takes_ages_and_iso_times() -> None:
    now = datetime.now(UTC)
    assert abs(_access_cli.parse_since("2h") - (now - timedelta(hours=2))) < timedelta(seconds=5)
    assert abs(_access_cli.parse_since("7d") - (now - timedelta(days=7))) < timedelta(seconds=5)
    assert _access_cli.parse_since("2026-01-02T03:04:05+00:00") == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    with pytest.raises(Exception, match="neither an age"):
        _access_cli.parse_since("yesterday")


def test_the_role_choices_are_the_stores_roles() -> None:
    assert [role.value for role in Role] == _access_cli._ROLES
