"""Users, roles, the audit trail and login lockouts of the access gateway.

One store per stack: PostgreSQL (schema ``fleetflow_access`` in the stack's database) or,
for a stack on SQLite, a 0600 SQLite file in the stack directory. The ``fleetflow users``
commands administer it; the gateway opens it with ``as_gateway=True`` and then, on
PostgreSQL, can only read users, append to the audit and record login failures.

Passwords are argon2id hashes (argon2-cffi's defaults); a password never leaves `login`
or the admin calls, and no message or repr carries it or the database's password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fleetflow.access._connection import Connection, Cursor
from fleetflow.access._schema import AUDIT_DETAIL_LIMIT, create_postgresql, create_sqlite
from fleetflow.exceptions import AccessError

__all__ = [
    "ADDRESS_FAILURE_LIMIT",
    "FAILURE_WINDOW",
    "LOCKOUT",
    "MIN_PASSWORD_LENGTH",
    "SERVICE_ACCOUNT",
    "USER_FAILURE_LIMIT",
    "AccessStore",
    "AuditEntry",
    "Login",
    "Role",
    "User",
]

# The stack's own credential is `fleetflow:<token>`: no person may be called that.
SERVICE_ACCOUNT = "fleetflow"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{0,62}$")
MIN_PASSWORD_LENGTH = 12
# Failed logins within FAILURE_WINDOW that lock a subject out for LOCKOUT: 5 per user
# (the 6th try is refused unchecked), 20 per address (one address guessing many users).
USER_FAILURE_LIMIT = 5
ADDRESS_FAILURE_LIMIT = 20
FAILURE_WINDOW = timedelta(seconds=60)
LOCKOUT = timedelta(minutes=15)
_SUBJECT = re.compile(r"^(user|address):\S{1,200}$")


class Role(StrEnum):
    """What a user may do; each role may do everything the ones below it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """0 (viewer) .. 3 (admin): a request needing role R is allowed if rank >= R.rank."""
        return _RANKS[self]


_RANKS = {role: rank for rank, role in enumerate(Role)}


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    disabled: bool
    created: datetime
    password_changed: datetime


@dataclass(frozen=True)
class AuditEntry:
    """One request that changed something (or tried to), or one admin change by the CLI.

    `targets`: comma-separated ids (flow runs, deployments); `detail`: already masked by
    the caller, stored up to 4000 characters.
    """

    at: datetime
    actor: str
    role: str
    address: str
    method: str
    route: str
    targets: str
    detail: str
    status: int
    outcome: str


@dataclass(frozen=True)
class Login:
    """What `login` found. `user` is set for "ok" and "disabled" (for the audit)."""

    outcome: Literal["ok", "bad", "locked", "disabled"]
    user: User | None


_USER_COLUMNS = "name, role, disabled, created, password_changed"


class AccessStore:
    """The access tables at `url`: ``postgresql[+driver]://…/db`` or
    ``sqlite:////absolute/path/access.db``. Thread-safe; opens its connection on first use.

    `as_gateway`: on PostgreSQL, connect as the restricted ``fleetflow_gateway`` role
    (``create()`` and the admin calls then fail with permission denied). It narrows what
    the gateway's code can do by mistake; it is not a boundary against code that can run
    ``RESET ROLE`` on that connection.
    """

    def __init__(self, url: str, *, as_gateway: bool = False) -> None:
        self._db = Connection(url, as_gateway=as_gateway)
        self._as_gateway = as_gateway
        self._hasher = PasswordHasher()

    def __repr__(self) -> str:
        return f"AccessStore({self._db.label!r}, as_gateway={self._as_gateway})"

    @property
    def label(self) -> str:
        """Where the store is, password masked."""
        return self._db.label

    def close(self) -> None:
        self._db.close()

    def create(self) -> None:
        """Make the tables (and on PostgreSQL the gateway role and its grants); idempotent,
        and safe when several processes call it at once."""
        if self._db.backend == "sqlite":
            self._db.run(create_sqlite)
        else:
            self._db.run(create_postgresql)

    # -- users (the CLI) -----------------------------------------------------------------

    def add_user(self, name: str, role: Role, password: str) -> User:
        _check_name(name)
        _check_password(password)
        digest = self._hasher.hash(password)
        now = _now()
        stamp = self._db.stamp(now)

        def insert(cur: Cursor) -> None:
            cur.execute(self._db.sql("SELECT 1 FROM {users} WHERE name = %s"), (name,))
            if cur.fetchone() is not None:
                raise AccessError(f"user {name!r} exists: `users passwd` or `users role` change it")
            cur.execute(
                self._db.sql(
                    "INSERT INTO {users} (name, role, password_hash, disabled, created, "
                    "password_changed) VALUES (%s, %s, %s, %s, %s, %s)"
                ),
                (name, Role(role).value, digest, False, stamp, stamp),
            )

        self._db.run(insert)
        return User(name, Role(role), disabled=False, created=now, password_changed=now)

    def set_password(self, name: str, password: str) -> None:
        _check_password(password)
        digest = self._hasher.hash(password)
        self._update(
            name, "password_hash = %s, password_changed = %s", (digest, self._db.stamp(_now()))
        )

    def set_role(self, name: str, role: Role) -> None:
        self._update(name, "role = %s", (Role(role).value,))

    def disable(self, name: str) -> None:
        self._update(name, "disabled = %s", (True,))

    def enable(self, name: str) -> None:
        self._update(name, "disabled = %s", (False,))

    def list_users(self) -> list[User]:
        def select(cur: Cursor) -> list[Any]:
            cur.execute(self._db.sql(f"SELECT {_USER_COLUMNS} FROM {{users}} ORDER BY name"))
            return cur.fetchall()

        return [self._user(row) for row in self._db.run(select)]

    def get_user(self, name: str) -> User | None:
        row = self._db.run(lambda cur: self._user_row(cur, name))
        return None if row is None else self._user(row[:5])

    def unlock(self, subject: str) -> int:
        """Clear the lockout and failures of "user:NAME" or "address:IP"; rows removed."""
        if not _SUBJECT.match(subject):
            raise AccessError(f"not a lockout subject: {subject!r} (user:NAME or address:IP)")

        def delete(cur: Cursor) -> int:
            removed = 0
            for table in ("{lockouts}", "{login_failures}"):
                cur.execute(self._db.sql(f"DELETE FROM {table} WHERE subject = %s"), (subject,))
                removed += max(cur.rowcount, 0)
            return removed

        return self._db.run(delete)

    # -- audit ---------------------------------------------------------------------------

    def record(self, entry: AuditEntry) -> None:
        """Append `entry` (detail cut to 4000 characters)."""
        values = (
            self._db.stamp(entry.at), entry.actor, entry.role, entry.address, entry.method,
            entry.route, entry.targets, entry.detail[:AUDIT_DETAIL_LIMIT], entry.status,
            entry.outcome,
        )  # fmt: skip
        statement = self._db.sql(
            "INSERT INTO {audit} (at, actor, role, address, method, route, targets, detail, "
            "status, outcome) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        )
        self._db.run(lambda cur: cur.execute(statement, values))

    def audit(
        self, user: str | None = None, since: datetime | None = None, limit: int = 200
    ) -> list[AuditEntry]:
        """Entries newest first, of `user` (the actor) and from `since` if given."""
        where, params = [], []
        if user is not None:
            where.append("actor = %s")
            params.append(user)
        if since is not None:
            where.append("at >= %s")
            params.append(self._db.stamp(since))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        statement = self._db.sql(
            "SELECT at, actor, role, address, method, route, targets, detail, status, outcome "
            f"FROM {{audit}} {clause} ORDER BY at DESC, id DESC LIMIT %s"
        )

        def select(cur: Cursor) -> list[Any]:
            cur.execute(statement, (*params, max(0, limit)))
            return cur.fetchall()

        return [self._entry(row) for row in self._db.run(select)]

    # -- login (the gateway) -------------------------------------------------------------

    def login(self, name: str, password: str, address: str) -> Login:
        """Check `name`'s password, refusing while the user or the address is locked out.

        An unknown name costs one argon2 verify like a known one (against a fixed dummy
        hash), so the time taken does not tell whether a user exists.
        """
        now = _now()
        subjects = (f"user:{_printable(name)}", f"address:{_printable(address)}")
        # A name no user can have is looked up as no one (it may hold bytes SQL refuses).
        lookup = name if NAME_PATTERN.match(name) else ""
        found = self._db.run(lambda cur: self._before_login(cur, lookup, subjects, now))
        if found == "locked":
            return Login("locked", None)
        row = found
        # Outside the store's lock: a verify takes tens of milliseconds.
        if not self._verify(row[5] if row else _dummy_hash(), password) or row is None:
            self._db.run(lambda cur: self._failed(cur, subjects, now))
            return Login("bad", None)
        user = self._user(row[:5])
        if user.disabled:
            return Login("disabled", user)
        self._rehash_if_needed(name, row[5], password)
        return Login("ok", user)

    # -- internals -----------------------------------------------------------------------

    def _update(self, name: str, assignments: str, values: tuple[Any, ...]) -> None:
        statement = self._db.sql(f"UPDATE {{users}} SET {assignments} WHERE name = %s")

        def update(cur: Cursor) -> None:
            cur.execute(statement, (*values, name))
            if cur.rowcount == 0:
                raise AccessError(f"no user {name!r} (`fleetflow users list` shows them)")

        self._db.run(update)

    def _user_row(self, cur: Cursor, name: str) -> Any:
        cur.execute(
            self._db.sql(f"SELECT {_USER_COLUMNS}, password_hash FROM {{users}} WHERE name = %s"),
            (name,),
        )
        return cur.fetchone()

    def _user(self, row: Any) -> User:
        name, role, disabled, created, changed = row
        time = self._db.time
        return User(name, Role(role), bool(disabled), time(created), time(changed))

    def _entry(self, row: Any) -> AuditEntry:
        at, actor, role, address, method, route, targets, detail, status, outcome = row
        return AuditEntry(
            self._db.time(at), actor, role, address, method, route, targets, detail,
            int(status), outcome,
        )  # fmt: skip

    def _before_login(
        self, cur: Cursor, name: str, subjects: tuple[str, str], now: datetime
    ) -> Any:
        """ "locked", or the user's row (None if there is no such user)."""
        cur.execute(
            self._db.sql("SELECT 1 FROM {lockouts} WHERE subject IN (%s, %s) AND until > %s"),
            (*subjects, self._db.stamp(now)),
        )
        if cur.fetchone() is not None:
            return "locked"
        return self._user_row(cur, name)

    def _failed(self, cur: Cursor, subjects: tuple[str, str], now: datetime) -> None:
        """Count the failure for the user and the address; lock out whichever is over."""
        start = self._db.stamp(now - FAILURE_WINDOW)
        cur.execute(self._db.sql("DELETE FROM {login_failures} WHERE at < %s"), (start,))
        limits = (USER_FAILURE_LIMIT, ADDRESS_FAILURE_LIMIT)
        for subject, limit in zip(subjects, limits, strict=True):
            cur.execute(
                self._db.sql("INSERT INTO {login_failures} (subject, at) VALUES (%s, %s)"),
                (subject, self._db.stamp(now)),
            )
            cur.execute(
                self._db.sql(
                    "SELECT count(*) FROM {login_failures} WHERE subject = %s AND at >= %s"
                ),
                (subject, start),
            )
            if int(cur.fetchone()[0]) >= limit:
                cur.execute(
                    self._db.sql(
                        "INSERT INTO {lockouts} (subject, until) VALUES (%s, %s) "
                        "ON CONFLICT (subject) DO UPDATE SET until = excluded.until"
                    ),
                    (subject, self._db.stamp(now + LOCKOUT)),
                )

    def _verify(self, digest: str, password: str) -> bool:
        try:
            return self._hasher.verify(digest, password)
        except (VerificationError, InvalidHashError):
            return False

    def _rehash_if_needed(self, name: str, digest: str, password: str) -> None:
        """A hash made with weaker parameters than today's defaults is replaced at the next
        login. Not by the gateway on PostgreSQL: its role may not write users (the hash
        is then replaced by the next `users passwd`)."""
        if self._as_gateway and self._db.backend == "postgresql":
            return
        if not self._hasher.check_needs_rehash(digest):
            return
        fresh = self._hasher.hash(password)
        self._db.run(
            lambda cur: cur.execute(
                self._db.sql("UPDATE {users} SET password_hash = %s WHERE name = %s"),
                (fresh, name),
            )
        )


@cache
def _dummy_hash() -> str:
    """A hash of nothing anyone knows, made with today's parameters (so verifying against
    it costs what verifying a real user's does); once per process."""
    import secrets

    return PasswordHasher().hash(secrets.token_urlsafe(32))


def _now() -> datetime:
    return datetime.now(UTC)


def _printable(text: str) -> str:
    """`text` fit for a lockout subject: bounded, no control characters or spaces."""
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in text[:200]) or "?"


def _check_name(name: str) -> None:
    if name == SERVICE_ACCOUNT:
        raise AccessError(f"{SERVICE_ACCOUNT!r} is the stack's service account, not a user name")
    if not NAME_PATTERN.match(name):
        raise AccessError(
            f"bad user name {name[:80]!r}: a lower-case letter, then up to 62 of a-z 0-9 . _ -"
        )


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccessError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
