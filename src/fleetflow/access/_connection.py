"""One database connection for the access store, PostgreSQL or SQLite, shared by threads.

The gateway calls the store from worker threads; one connection behind a lock is enough
for its load (a login is one argon2 verify, done outside the lock, and two short
transactions) and keeps the number of server connections fixed. SQL is written once with
``%s`` placeholders and ``{table}`` names; this module turns them into each backend's.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import psycopg2
import psycopg2.extensions
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from fleetflow.exceptions import AccessError

__all__ = ["GATEWAY_ROLE", "SCHEMA", "Backend", "Connection", "Cursor"]

SCHEMA = "fleetflow_access"
# The PostgreSQL role the gateway's connection takes: only the grants create() gives it.
GATEWAY_ROLE = "fleetflow_gateway"
_TABLES = ("users", "audit", "login_failures", "lockouts")

Backend = Literal["postgresql", "sqlite"]
T = TypeVar("T")


class Cursor(Protocol):
    """What both drivers' cursors offer and the store uses."""

    rowcount: int

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchone(self) -> Any: ...


class Connection:
    """A lazily opened connection to `url`; `run(work)` runs `work` in one transaction."""

    def __init__(self, url: str, *, as_gateway: bool) -> None:
        self._url = _parse(url)
        self.backend: Backend = (
            "sqlite" if self._url.get_backend_name() == "sqlite" else "postgresql"
        )
        self._as_gateway = as_gateway and self.backend == "postgresql"
        self._lock = threading.Lock()
        self._conn: Any = None
        # Table names as the SQL writes them: {users} -> fleetflow_access.users / access_users.
        prefix = f"{SCHEMA}." if self.backend == "postgresql" else "access_"
        self._names = {name: prefix + name for name in _TABLES}

    @property
    def label(self) -> str:
        """The URL without its password, for messages."""
        return self._url.render_as_string(hide_password=True)

    def sql(self, text: str) -> str:
        """`text` with {table} names and this backend's placeholders."""
        text = text.format(**self._names)
        return text.replace("%s", "?") if self.backend == "sqlite" else text

    def stamp(self, when: datetime) -> Any:
        """A time as this backend stores it (SQLite: UTC seconds, ordered as numbers)."""
        return when.timestamp() if self.backend == "sqlite" else when

    def time(self, value: Any) -> datetime:
        """A stored time back as an aware UTC datetime."""
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.fromtimestamp(float(value), UTC)

    def run(self, work: Callable[[Cursor], T]) -> T:
        """`work(cursor)` in one transaction, committed if it returns. A connection found
        dropped (server restart, idle timeout) is reopened and `work` tried once more."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._transaction(work)
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    if attempt == 2 or not self._dropped():
                        raise AccessError(self._says(exc)) from exc
                    self._close()
                except (psycopg2.Error, sqlite3.Error) as exc:
                    raise AccessError(self._says(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            self._close()

    # -- internals -----------------------------------------------------------------------

    def _transaction(self, work: Callable[[Cursor], T]) -> T:
        conn = self._open()
        if self.backend == "sqlite":
            # IMMEDIATE: take the write lock first, so read-then-write (a login's lockout)
            # never fails to upgrade while another process writes.
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn.cursor())
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            return result
        with conn, conn.cursor() as cur:  # psycopg2: commit on success, rollback on error
            return work(cur)

    def _open(self) -> Any:
        if self._conn is not None:
            return self._conn
        if self.backend == "sqlite":
            self._conn = _open_sqlite(Path(self._url.database or ""))
            return self._conn
        url = self._url
        options = f"-c role={GATEWAY_ROLE}" if self._as_gateway else None
        try:
            self._conn = psycopg2.connect(
                host=url.host or "127.0.0.1",
                port=url.port or 5432,
                user=url.username,
                password=url.password,
                dbname=url.database,
                connect_timeout=10,
                options=options,
                application_name="fleetflow-access",
            )
        except psycopg2.Error as exc:
            raise AccessError(f"cannot connect to {self.label}: {self._says(exc)}") from exc
        return self._conn

    def _dropped(self) -> bool:
        return self._conn is not None and bool(getattr(self._conn, "closed", 0))

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _says(self, exc: BaseException) -> str:
        """The driver's message on one line, never the password (drivers may echo a DSN)."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        password = self._url.password
        return text.replace(str(password), "***") if password else text


def _parse(text: str) -> URL:
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        # Not chained: sqlalchemy's message quotes the URL, password included (a bad port
        # is a ValueError).
        raise AccessError("the access store's URL is not a database URL") from None
    backend = url.get_backend_name()
    if backend == "postgresql":
        if not url.database:
            raise AccessError(f"{url.render_as_string(hide_password=True)} names no database")
        return url.set(drivername="postgresql")  # psycopg2 whatever driver the URL named
    if backend == "sqlite" and url.database and Path(url.database).is_absolute():
        return url
    raise AccessError(
        f"the access store needs postgresql://… or sqlite:////absolute/path, got {backend!r}"
    )


def _open_sqlite(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 before SQLite opens it: it holds password hashes. SQLite gives its
    # journal files the database file's mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn
