"""The access store on the machine's PostgreSQL: create() is idempotent and safe when run
at once; the gateway's connection may only read users, append to the audit and keep
lockouts; the audit refuses changes from everyone, the database owner included."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg2
import pytest
from psycopg2 import errors, sql

from fleetflow.access import USER_FAILURE_LIMIT, AccessStore, AuditEntry, Role
from fleetflow.access._connection import Cursor
from fleetflow.exceptions import AccessError

pytestmark = pytest.mark.integration

PG = "postgresql://postgres@127.0.0.1:5432"
PASSWORD = "correct horse battery"


def _admin(dbname: str = "postgres") -> psycopg2.extensions.connection:
    conn = psycopg2.connect(f"{PG}/{dbname}", connect_timeout=10)
    conn.autocommit = True
    return conn


@pytest.fixture
def database() -> Iterator[str]:
    """A throwaway database, dropped after the test whatever happened."""
    name = f"fleetflow_test_access_{secrets.token_hex(4)}"
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))  # fmt: skip
        conn.close()


@pytest.fixture
def store(database: str) -> Iterator[AccessStore]:
    made = AccessStore(database)
    made.create()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def gateway(store: AccessStore, database: str) -> Iterator[AccessStore]:
    made = AccessStore(database, as_gateway=True)
    try:
        yield made
    finally:
        made.close()


def _entry(actor: str = "alice") -> AuditEntry:
    return AuditEntry(
        datetime.now(UTC), actor, "operator", "10.0.0.1", "POST", "/api/flow_runs/x/set_state",
        "r1", "{}", 201, "ok",
    )  # fmt: skip


def _sql_as(store: AccessStore, statement: str) -> None:
    """`statement` on the store's own connection (the one its methods use)."""

    def run(cur: Cursor) -> None:
        cur.execute(statement)

    store._db.run(run)


def test_create_is_idempotent_and_safe_from_two_threads_at_once(database: str) -> None:
    stores = [AccessStore(database) for _ in range(2)]
    start = threading.Barrier(len(stores))
    failures: list[BaseException] = []

    def create(store: AccessStore) -> None:
        start.wait()
        try:
            store.create()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    stores[0].create()  # and once more, after
    stores[0].add_user("alice", Role.ADMIN, PASSWORD)
    stores[1].create()  # keeps what is there
    assert [u.name for u in stores[1].list_users()] == ["alice"]
    for store in stores:
        store.close()


def test_the_gateway_connection_runs_as_the_restricted_role(
    store: AccessStore, gateway: AccessStore
) -> None:
    def whoami(cur: Cursor) -> str:
        cur.execute("SELECT current_user")
        return str(cur.fetchone()[0])

    assert gateway._db.run(whoami) == "fleetflow_gateway"
    store.add_user("alice", Role.OPERATOR, PASSWORD)
    gateway.record(_entry())  # what it may do
    assert [u.name for u in gateway.list_users()] == ["alice"]
    refused = [
        "UPDATE fleetflow_access.audit SET actor = 'mallory'",
        "DELETE FROM fleetflow_access.audit",
        "TRUNCATE fleetflow_access.audit",
        "INSERT INTO fleetflow_access.users VALUES ('mallory', 'admin', 'x', false, now(), now())",
        "UPDATE fleetflow_access.users SET role = 'admin'",
        "DELETE FROM fleetflow_access.users",
        "DELETE FROM fleetflow_access.lockouts",
    ]
    for statement in refused:
        with pytest.raises(AccessError, match="permission denied") as caught:
            _sql_as(gateway, statement)
        assert isinstance(caught.value.__cause__, errors.InsufficientPrivilege), statement
    with pytest.raises(AccessError, match="permission denied"):
        gateway.add_user("mallory", Role.ADMIN, PASSWORD)
    with pytest.raises(AccessError, match="permission denied"):
        gateway.set_role("alice", Role.ADMIN)
    assert [(e.actor, e.route) for e in store.audit()] == [("alice", "/api/flow_runs/x/set_state")]
    assert [(u.name, u.role) for u in store.list_users()] == [("alice", Role.OPERATOR)]


def test_the_audit_refuses_changes_from_the_database_owner_too(
    store: AccessStore, database: str
) -> None:
    store.record(_entry())
    conn = _admin(database.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            for statement in ("UPDATE fleetflow_access.audit SET actor = 'x'",
                              "DELETE FROM fleetflow_access.audit",
                              "TRUNCATE fleetflow_access.audit"):  # fmt: skip
                with pytest.raises(errors.RaiseException, match="append-only"):
                    cur.execute(statement)
    finally:
        conn.close()
    assert [e.actor for e in store.audit()] == ["alice"]


def test_gateway_logins_and_lockout(store: AccessStore, gateway: AccessStore) -> None:
    store.add_user("alice", Role.APPROVER, PASSWORD)
    ok = gateway.login("alice", PASSWORD, "10.0.0.1")
    assert ok.outcome == "ok" and ok.user is not None and ok.user.role is Role.APPROVER
    outcomes = [gateway.login("alice", "wrong wrong wrong", "10.0.0.1").outcome for _ in range(6)]
    assert outcomes == ["bad"] * USER_FAILURE_LIMIT + ["locked"]
    assert gateway.login("alice", PASSWORD, "10.0.0.2").outcome == "locked"
    with pytest.raises(AccessError, match="permission denied"):
        gateway.unlock("user:alice")  # an admin's job
    assert store.unlock("user:alice") == 1 + USER_FAILURE_LIMIT
    assert gateway.login("alice", PASSWORD, "10.0.0.1").outcome == "ok"
    store.disable("alice")
    assert gateway.login("alice", PASSWORD, "10.0.0.1").outcome == "disabled"


def test_a_dropped_connection_is_reopened_once(store: AccessStore) -> None:
    store.add_user("alice", Role.VIEWER, PASSWORD)

    def pid(cur: Cursor) -> int:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])

    first = store._db.run(pid)
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (first,))
    finally:
        conn.close()
    assert [u.name for u in store.list_users()] == ["alice"]
    assert store._db.run(pid) != first
