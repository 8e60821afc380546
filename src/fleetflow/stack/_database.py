"""The server's metadata database: PostgreSQL created on demand, or Prefect's SQLite."""

from __future__ import annotations

import importlib.util
import re
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from fleetflow._progress import phase
from fleetflow.exceptions import StackError

__all__ = [
    "DatabaseSecrets",
    "database_secrets",
    "database_url",
    "ensure_database",
    "head_revisions",
    "heads_in",
    "masked",
    "migrate",
    "schema_revisions",
]

_REVISION = re.compile(r'^revision = "([0-9a-f]+)"$', re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision = (.+)$", re.MULTILINE)
_REVISION_ID = re.compile(r'"([0-9a-f]+)"')


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
        conn = _connect(url, "postgres")
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


def head_revisions(dialect: str) -> frozenset[str] | None:
    """The schema revisions Prefect's installed migrations end at, for "postgresql" or
    "sqlite"; None if a migration file does not read as expected (then migrate anyway).

    Read from the files' text, not through alembic: that imports every migration (and
    Prefect's server), seconds of a `stack up` that had nothing to migrate.
    """
    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        return None
    return heads_in(Path(spec.origin).parent / "server/database/_migrations/versions" / dialect)


def heads_in(versions: Path) -> frozenset[str] | None:
    """The revisions no other migration in `versions` builds on (see head_revisions)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        text = path.read_text()
        revision, down = _REVISION.search(text), _DOWN_REVISION.search(text)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        parents.update(_REVISION_ID.findall(down.group(1)))
    heads = frozenset(revisions - parents)
    return heads or None


def schema_revisions(url: URL | None, sqlite_file: Path) -> frozenset[str]:
    """The revisions the database's schema is at (alembic's table); empty if none yet."""
    try:
        if url is None:
            if not sqlite_file.exists():
                return frozenset()
            with sqlite3.connect(f"file:{sqlite_file}?mode=ro", uri=True) as conn:
                rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        else:
            rows = _postgresql_revisions(url)
    except (sqlite3.Error, psycopg2.Error):
        return frozenset()  # no table yet (or unreadable): the migration will say why
    return frozenset(str(row[0]) for row in rows)


def _postgresql_revisions(url: URL) -> list[tuple[str]]:
    conn = _connect(url, url.database or "postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version_num FROM alembic_version")
            return list(cur.fetchall())
    finally:
        conn.close()


def _connect(url: URL, dbname: str) -> psycopg2.extensions.connection:
    return psycopg2.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=dbname,
        connect_timeout=10,
    )


@dataclass(frozen=True)
class DatabaseSecrets:
    exact: frozenset[str]  # a variable holding only this is dropped (PGPASSWORD)
    inside: tuple[str, ...]  # a variable containing any of these is dropped (URLs)


def database_secrets(url: URL | None) -> DatabaseSecrets:
    """The database URL in the forms a variable may hold it, and its password."""
    if url is None:
        return DatabaseSecrets(frozenset(), ())
    forms = {
        url.render_as_string(hide_password=False),
        url.set(drivername="postgresql").render_as_string(hide_password=False),
    }
    if not url.password:
        return DatabaseSecrets(frozenset(), tuple(forms))
    user, password = url.username or "", str(url.password)
    # Any URL carrying these credentials, whatever its driver or encoding.
    forms |= {f"{user}:{password}@", f"{quote(user, safe='')}:{quote(password, safe='')}@"}
    return DatabaseSecrets(frozenset({password}), tuple(forms))


def migrate(
    url: URL | None,
    sqlite_file: Path,
    prefect: Callable[..., list[str]],
    env: dict[str, str],
    label: str,
) -> None:
    """Bring the schema to Prefect's newest; nothing to do (and no 10-20 s of Prefect
    importing its migrations) when the database is already there."""
    heads = head_revisions("sqlite" if url is None else "postgresql")
    current = schema_revisions(url, sqlite_file)
    if heads is not None and current == heads:
        phase("database %s: schema current (%s)", label, ", ".join(heads))
        return
    started = time.monotonic()
    phase("database %s: migrating the schema", label)
    upgrade = subprocess.run(
        prefect("server", "database", "upgrade", "-y"),
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    if upgrade.returncode != 0:
        output = (upgrade.stdout + upgrade.stderr).splitlines()[-30:]
        raise StackError("database migration failed:\n" + "\n".join(output))
    phase("database migrated in %.1f s", time.monotonic() - started)
