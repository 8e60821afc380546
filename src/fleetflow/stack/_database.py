"""The server's metadata database: PostgreSQL created on demand, or Prefect's SQLite."""

from __future__ import annotations

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from fleetflow.exceptions import StackError

__all__ = ["database_url", "ensure_database", "masked"]


def database_url(text: str) -> URL:
    """Parse a PostgreSQL URL and give it the asyncpg driver Prefect's server needs."""
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise StackError("FLEETFLOW_DATABASE_URL is not a database URL") from exc
    if url.get_backend_name() != "postgresql":
        raise StackError(
            f"FLEETFLOW_DATABASE_URL must be a PostgreSQL URL, got {url.get_backend_name()!r}; "
            "unset it to use Prefect's embedded SQLite"
        )
    if not url.database:
        raise StackError("FLEETFLOW_DATABASE_URL names no database (…/DBNAME)")
    return url.set(drivername="postgresql+asyncpg")


def masked(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def ensure_database(url: URL) -> bool:
    """Create the database if it does not exist; True if it was created."""
    name = url.database
    if not name:
        raise StackError(f"{masked(url)} names no database")
    try:
        conn = psycopg2.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname="postgres",
            connect_timeout=10,
        )
    except psycopg2.Error as exc:
        raise StackError(f"cannot connect to PostgreSQL at {masked(url)}: {exc}") from exc
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    except psycopg2.Error as exc:
        raise StackError(f"cannot create database {name!r}: {exc}") from exc
    finally:
        conn.close()
