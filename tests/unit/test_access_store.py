"""The access store on SQLite: users and their rules, logins and lockouts, the audit."""

from __future__ import annotations

import sqlite3
import stat
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from fleetflow.access import (
    ADDRESS_FAILURE_LIMIT,
    SERVICE_ACCOUNT,
    USER_FAILURE_LIMIT,
    AccessStore,
    AuditEntry,
    Role,
    store_url,
)
from fleetflow.exceptions import AccessError

PASSWORD = "correct horse battery"
WRONG = "not the password at all"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "stack" / "access.db"


@pytest.fixture
def store(db: Path) -> AccessStore:
    made = AccessStore(f"sqlite:///{db}")
    made.create()
    made.create()  # idempotent
    return made


def _entry(actor: str = "alice", at: datetime | None = None, **kw: object) -> AuditEntry:
    fields: dict[str, object] = {
        "at": at or datetime.now(UTC), "actor": actor, "role": "operator", "address": "10.0.0.1",
        "method": "POST", "route": "/api/deployments/x/create_flow_run", "targets": "d1,r2",
        "detail": '{"parameters": {"limit": "web"}}', "status": 201, "outcome": "ok",
    }  # fmt: skip
    fields.update(kw)
    return AuditEntry(**fields)  # type: ignore[arg-type]


# Users


def test_the_file_is_private_and_holds_hashes_not_passwords(store: AccessStore, db: Path) -> None:
    store.add_user("alice", Role.OPERATOR, PASSWORD)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert PASSWORD.encode() not in db.read_bytes()
    with sqlite3.connect(db) as conn:
        (digest,) = conn.execute("SELECT password_hash FROM access_users").fetchone()
    assert digest.startswith("$argon2id$")


def test_add_list_and_change_users(store: AccessStore) -> None:
    added = store.add_user("bob", Role.VIEWER, PASSWORD)
    store.add_user("alice", Role.ADMIN, PASSWORD)
    assert (added.name, added.role, added.disabled) == ("bob", Role.VIEWER, False)
    assert [(u.name, u.role) for u in store.list_users()] == [
        ("alice", Role.ADMIN),
        ("bob", Role.VIEWER),
    ]
    store.set_role("bob", Role.APPROVER)
    store.disable("bob")
    bob = store.get_user("bob")
    assert bob is not None
    assert (bob.role, bob.disabled) == (Role.APPROVER, True)
    store.enable("bob")
    assert store.login("bob", PASSWORD, "10.0.0.1").outcome == "ok"

    before = bob.password_changed
    store.set_password("bob", "another long password")
    assert store.login("bob", PASSWORD, "10.0.0.1").outcome == "bad"
    assert store.login("bob", "another long password", "10.0.0.1").outcome == "ok"
    after = store.get_user("bob")
    assert after is not None and after.password_changed > before


@pytest.mark.parametrize(
    "name", ["Alice", "1alice", "", "al ice", "a" * 64, "alice;drop", "élise", SERVICE_ACCOUNT]
)
def test_names_outside_the_rule_and_the_service_account_are_refused(
    store: AccessStore, name: str
) -> None:
    with pytest.raises(AccessError):
        store.add_user(name, Role.VIEWER, PASSWORD)
    assert store.list_users() == []


def test_name_rule_accepts_its_whole_alphabet(store: AccessStore) -> None:
    store.add_user("a" + "z09._-" * 10 + "x", Role.VIEWER, PASSWORD)  # 62 after the first
    assert len(store.list_users()) == 1


def test_short_passwords_and_duplicates_are_refused_with_a_reason(store: AccessStore) -> None:
    with pytest.raises(AccessError, match="at least 12"):
        store.add_user("alice", Role.VIEWER, "x" * 11)
    store.add_user("alice", Role.VIEWER, "x" * 12)
    with pytest.raises(AccessError, match="'alice' exists"):
        store.add_user("alice", Role.ADMIN, PASSWORD)
    with pytest.raises(AccessError, match="at least 12"):
        store.set_password("alice", "short")
    with pytest.raises(AccessError, match="no user 'nobody'"):
        store.disable("nobody")


def test_roles_are_ranked_and_cumulative() -> None:
    assert [r.rank for r in Role] == [0, 1, 2, 3]
    assert Role.ADMIN.rank > Role.APPROVER.rank > Role.OPERATOR.rank > Role.VIEWER.rank
    assert Role("approver") is Role.APPROVER


def test_messages_and_repr_never_show_the_database_password() -> None:
    store = AccessStore("postgresql+asyncpg://ops:s3cret-pw@127.0.0.1:1/nowhere")
    assert "s3cret-pw" not in repr(store)
    with pytest.raises(AccessError) as caught:
        store.list_users()
    assert "s3cret-pw" not in str(caught.value)
    with pytest.raises(AccessError) as bad:
        AccessStore("postgresql://ops:s3cret-pw@[::1")
    assert "s3cret-pw" not in str(bad.value)


# Logins


def test_login_outcomes(store: AccessStore) -> None:
    store.add_user("alice", Role.OPERATOR, PASSWORD)
    ok = store.login("alice", PASSWORD, "10.0.0.1")
    assert ok.outcome == "ok" and ok.user is not None and ok.user.role is Role.OPERATOR
    assert store.login("alice", WRONG, "10.0.0.1") == type(ok)("bad", None)
    assert store.login("nobody", PASSWORD, "10.0.0.1").outcome == "bad"
    assert store.login("Alice\x00", PASSWORD, "10.0.0.1").outcome == "bad"
    store.disable("alice")
    disabled = store.login("alice", PASSWORD, "10.0.0.1")
    assert disabled.outcome == "disabled" and disabled.user is not None
    assert store.login("alice", WRONG, "10.0.0.1").outcome == "bad"  # no hint it is disabled


def test_the_sixth_wrong_password_in_a_minute_is_locked_out_and_unlock_clears_it(
    store: AccessStore,
) -> None:
    store.add_user("alice", Role.OPERATOR, PASSWORD)
    outcomes = [store.login("alice", WRONG, f"10.0.0.{i}").outcome for i in range(6)]
    assert outcomes == ["bad"] * USER_FAILURE_LIMIT + ["locked"]
    # Locked: the right password is refused too, from anywhere.
    assert store.login("alice", PASSWORD, "10.9.9.9").outcome == "locked"
    # Another user is not affected.
    store.add_user("bob", Role.VIEWER, PASSWORD)
    assert store.login("bob", PASSWORD, "10.0.0.1").outcome == "ok"

    assert store.unlock("user:alice") == 1 + USER_FAILURE_LIMIT  # the lockout, the failures
    assert store.login("alice", PASSWORD, "10.0.0.1").outcome == "ok"
    assert store.unlock("user:alice") == 0
    with pytest.raises(AccessError, match="not a lockout subject"):
        store.unlock("alice")


def test_failures_older_than_the_window_do_not_count(store: AccessStore, db: Path) -> None:
    store.add_user("alice", Role.OPERATOR, PASSWORD)
    for _ in range(USER_FAILURE_LIMIT - 1):
        assert store.login("alice", WRONG, "10.0.0.1").outcome == "bad"
    with sqlite3.connect(db) as conn:  # those happened two minutes ago
        conn.execute("UPDATE access_login_failures SET at = at - 120")
    assert store.login("alice", WRONG, "10.0.0.1").outcome == "bad"
    assert store.login("alice", PASSWORD, "10.0.0.1").outcome == "ok"


def test_one_address_guessing_many_users_is_locked_out(store: AccessStore) -> None:
    store.add_user("alice", Role.OPERATOR, PASSWORD)
    attacker = "203.0.113.9"
    outcomes = [
        store.login(f"user{i}", WRONG, attacker).outcome for i in range(ADDRESS_FAILURE_LIMIT)
    ]
    assert outcomes == ["bad"] * ADDRESS_FAILURE_LIMIT
    assert store.login("alice", PASSWORD, attacker).outcome == "locked"
    assert store.login("alice", PASSWORD, "10.0.0.1").outcome == "ok"  # only that address
    assert store.unlock(f"address:{attacker}") == 1 + ADDRESS_FAILURE_LIMIT
    assert store.login("alice", PASSWORD, attacker).outcome == "ok"


def test_an_unknown_user_costs_one_verify_like_a_known_one(
    store: AccessStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add_user("alice", Role.OPERATOR, PASSWORD)
    verified: list[str] = []
    real = PasswordHasher.verify

    def counting(self: PasswordHasher, digest: str | bytes, password: str | bytes) -> bool:
        verified.append(str(digest).split("$")[1])
        return real(self, digest, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    store.login("alice", WRONG, "10.0.0.1")
    store.login("nobody", WRONG, "10.0.0.2")
    assert verified == ["argon2id", "argon2id"]


def test_an_unknown_user_takes_about_as_long_as_a_known_one(store: AccessStore) -> None:
    """Coarse (a ratio, medians of 5): an unknown name that skipped the hash would answer
    ~100 times faster than a known one."""
    store.add_user("alice", Role.OPERATOR, PASSWORD)

    def took(name: str, address: str) -> float:
        started = time.perf_counter()
        assert store.login(name, WRONG, address).outcome == "bad"
        return time.perf_counter() - started

    store.login("warm-up", WRONG, "10.1.0.0")  # makes the dummy hash, once per process
    known = statistics.median(took("alice", f"10.1.0.{i}") for i in range(4))
    store.unlock("user:alice")
    unknown = statistics.median(took(f"ghost{i}", f"10.2.0.{i}") for i in range(4))
    assert 1 / 3 < unknown / known < 3


# Audit


def test_the_audit_is_append_only(store: AccessStore, db: Path) -> None:
    store.record(_entry())
    with sqlite3.connect(db) as conn:
        for statement in ("UPDATE access_audit SET actor = 'x'", "DELETE FROM access_audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
    assert [e.actor for e in store.audit()] == ["alice"]


def test_audit_reads_newest_first_with_filters(store: AccessStore) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    store.record(_entry("alice", now - timedelta(hours=3), route="/old"))
    store.record(_entry("bob", now - timedelta(hours=1), route="/bob"))
    store.record(_entry("alice", now, route="/new", detail="x" * 5000))
    assert [e.route for e in store.audit()] == ["/new", "/bob", "/old"]
    assert [e.route for e in store.audit(user="alice")] == ["/new", "/old"]
    assert [e.route for e in store.audit(since=now - timedelta(hours=2))] == ["/new", "/bob"]
    assert [e.route for e in store.audit(user="alice", limit=1)] == ["/new"]
    newest = store.audit(limit=1)[0]
    assert newest == _entry("alice", now, route="/new", detail="x" * 4000)  # cut to 4000


def test_store_url_prefers_the_variable_then_a_usable_state_then_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEETFLOW_DATABASE_URL", raising=False)
    assert store_url(tmp_path, None) == f"sqlite:///{tmp_path}/access.db"
    assert store_url(tmp_path, "sqlite:/x/home/prefect.db") == f"sqlite:///{tmp_path}/access.db"
    plain = "postgresql+asyncpg://postgres@127.0.0.1:5432/fleetflow"
    assert store_url(tmp_path, plain) == plain
    with pytest.raises(AccessError, match="FLEETFLOW_DATABASE_URL"):
        store_url(tmp_path, "postgresql+asyncpg://ops:***@127.0.0.1:5432/fleetflow")
    monkeypatch.setenv("FLEETFLOW_DATABASE_URL", "postgresql://ops:pw@db/fleetflow")
    assert store_url(tmp_path, None) == "postgresql://ops:pw@db/fleetflow"
