"""The access store's tables, for PostgreSQL and SQLite, and what the gateway may do to them.

PostgreSQL: schema ``fleetflow_access`` in the stack's database, and a NOLOGIN role
``fleetflow_gateway`` (cluster-wide) that the gateway's connection takes: it reads users,
appends to the audit and keeps the login failures and lockouts, nothing else. The audit
is append-only for everyone, owner included, through triggers. SQLite (a stack without
PostgreSQL): the same tables prefixed ``access_``, the same triggers; there the file's
mode (0600) is the only boundary.
"""

from __future__ import annotations

from psycopg2 import errors

from fleetflow.access._connection import GATEWAY_ROLE, SCHEMA, Cursor

__all__ = ["create_postgresql", "create_sqlite"]

_ROLES = "('viewer', 'operator', 'approver', 'admin')"
AUDIT_DETAIL_LIMIT = 4000

_POSTGRESQL = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.users (
        name text PRIMARY KEY,
        role text NOT NULL CHECK (role IN {_ROLES}),
        password_hash text NOT NULL,
        disabled boolean NOT NULL DEFAULT false,
        created timestamptz NOT NULL DEFAULT now(),
        password_changed timestamptz NOT NULL DEFAULT now())""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.audit (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        actor text NOT NULL, role text NOT NULL, address text NOT NULL,
        method text NOT NULL, route text NOT NULL, targets text NOT NULL,
        detail text NOT NULL CHECK (length(detail) <= {AUDIT_DETAIL_LIMIT}),
        status integer NOT NULL, outcome text NOT NULL)""",
    f"CREATE INDEX IF NOT EXISTS audit_at ON {SCHEMA}.audit (at)",
    f"CREATE INDEX IF NOT EXISTS audit_actor_at ON {SCHEMA}.audit (actor, at)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.login_failures (
        subject text NOT NULL, at timestamptz NOT NULL DEFAULT now())""",
    f"""CREATE INDEX IF NOT EXISTS login_failures_subject_at
        ON {SCHEMA}.login_failures (subject, at)""",
    f"CREATE INDEX IF NOT EXISTS login_failures_at ON {SCHEMA}.login_failures (at)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.lockouts (
        subject text PRIMARY KEY, until timestamptz NOT NULL)""",
    f"""CREATE OR REPLACE FUNCTION {SCHEMA}.audit_is_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{SCHEMA}.audit is append-only: % refused', TG_OP;
        END $$""",
    f"""CREATE OR REPLACE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON {SCHEMA}.audit
        FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.audit_is_append_only()""",
    f"""CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON {SCHEMA}.audit
        FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.audit_is_append_only()""",
    # Exactly these grants, whatever an earlier version gave.
    f"REVOKE ALL ON ALL TABLES IN SCHEMA {SCHEMA} FROM {GATEWAY_ROLE}",
    f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {SCHEMA} FROM {GATEWAY_ROLE}",
    f"GRANT USAGE ON SCHEMA {SCHEMA} TO {GATEWAY_ROLE}",
    f"GRANT SELECT ON {SCHEMA}.users TO {GATEWAY_ROLE}",
    f"GRANT INSERT ON {SCHEMA}.audit TO {GATEWAY_ROLE}",
    f"GRANT USAGE ON SEQUENCE {SCHEMA}.audit_id_seq TO {GATEWAY_ROLE}",
    # DELETE: a failed login prunes failures older than the window, so the table stays small.
    f"GRANT SELECT, INSERT, DELETE ON {SCHEMA}.login_failures TO {GATEWAY_ROLE}",
    # UPDATE: a lockout is an upsert (INSERT ... ON CONFLICT DO UPDATE).
    f"GRANT SELECT, INSERT, UPDATE ON {SCHEMA}.lockouts TO {GATEWAY_ROLE}",
]

_SQLITE = [
    f"""CREATE TABLE IF NOT EXISTS access_users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN {_ROLES}),
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        password_changed REAL NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS access_audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL, role TEXT NOT NULL, address TEXT NOT NULL,
        method TEXT NOT NULL, route TEXT NOT NULL, targets TEXT NOT NULL,
        detail TEXT NOT NULL CHECK (length(detail) <= {AUDIT_DETAIL_LIMIT}),
        status INTEGER NOT NULL, outcome TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS access_audit_at ON access_audit (at)",
    "CREATE INDEX IF NOT EXISTS access_audit_actor_at ON access_audit (actor, at)",
    "CREATE TABLE IF NOT EXISTS access_login_failures (subject TEXT NOT NULL, at REAL NOT NULL)",
    """CREATE INDEX IF NOT EXISTS access_login_failures_subject_at
        ON access_login_failures (subject, at)""",
    "CREATE INDEX IF NOT EXISTS access_login_failures_at ON access_login_failures (at)",
    "CREATE TABLE IF NOT EXISTS access_lockouts (subject TEXT PRIMARY KEY, until REAL NOT NULL)",
    """CREATE TRIGGER IF NOT EXISTS access_audit_no_update BEFORE UPDATE ON access_audit
        BEGIN SELECT RAISE(ABORT, 'access_audit is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS access_audit_no_delete BEFORE DELETE ON access_audit
        BEGIN SELECT RAISE(ABORT, 'access_audit is append-only: DELETE refused'); END""",
]


def create_sqlite(cur: Cursor) -> None:
    for statement in _SQLITE:
        cur.execute(statement)


def create_postgresql(cur: Cursor) -> None:
    """Everything, idempotent. create() calls from several processes on one database wait
    for each other (an advisory lock: CREATE ... IF NOT EXISTS alone races); the role is
    the cluster's, so a create() in another database may make it first: tolerated."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{SCHEMA}.create",))
    _ensure_gateway_role(cur)
    for statement in _POSTGRESQL:
        cur.execute(statement)


def _ensure_gateway_role(cur: Cursor) -> None:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (GATEWAY_ROLE,))
    if cur.fetchone() is None:
        cur.execute("SAVEPOINT gateway_role")
        try:
            cur.execute(f"CREATE ROLE {GATEWAY_ROLE} NOLOGIN")
        except (errors.DuplicateObject, errors.UniqueViolation):
            cur.execute("ROLLBACK TO SAVEPOINT gateway_role")  # made by another database's
        cur.execute("RELEASE SAVEPOINT gateway_role")
    if _member(cur):
        return
    # So that a session of this user may take the role (the gateway's `-c role=`).
    cur.execute("SAVEPOINT gateway_grant")
    try:
        cur.execute(f"GRANT {GATEWAY_ROLE} TO CURRENT_USER")
    except (errors.UniqueViolation, errors.InternalError_):  # "tuple concurrently updated"
        cur.execute("ROLLBACK TO SAVEPOINT gateway_grant")
        if not _member(cur):
            raise
    cur.execute("RELEASE SAVEPOINT gateway_grant")


def _member(cur: Cursor) -> bool:
    cur.execute(
        """SELECT 1 FROM pg_auth_members m
           JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
           WHERE r.rolname = %s AND u.rolname = CURRENT_USER""",
        (GATEWAY_ROLE,),
    )
    return cur.fetchone() is not None
