"""`stack up` migrates only when the database is behind: the newest revisions read from
Prefect's migration files must be alembic's own, and a database's revision is read
without changing it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import prefect.server.database
import psycopg2
import pytest
from alembic.script import ScriptDirectory

from fleetflow.stack._database import database_url, head_revisions, heads_in, schema_revisions

MIGRATIONS = Path(prefect.server.database.__file__).parent / "_migrations"
PG = "postgresql://postgres@127.0.0.1:5432"


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_heads_read_from_the_files_are_alembics(dialect: str) -> None:
    script = ScriptDirectory(
        str(MIGRATIONS), version_locations=[str(MIGRATIONS / "versions" / dialect)]
    )
    assert head_revisions(dialect) == frozenset(script.get_heads())


def test_a_migration_file_that_does_not_read_means_migrate(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text('revision = "aaaa"\ndown_revision = None\n')
    (tmp_path / "b.py").write_text('revision = "bbbb"\ndown_revision = "aaaa"\n')
    assert heads_in(tmp_path) == frozenset({"bbbb"})
    (tmp_path / "c.py").write_text('revision = "cccc"\ndown_revision = ("aaaa", "bbbb")\n')
    assert heads_in(tmp_path) == frozenset({"cccc"})  # a merge of two branches
    (tmp_path / "d.py").write_text("revision: str = 'dddd'\n")  # a form the reader misses
    assert heads_in(tmp_path) is None


def test_sqlite_revision_read_only_and_empty_before_the_first_migration(tmp_path: Path) -> None:
    db = tmp_path / "prefect.db"
    assert schema_revisions(None, db) == frozenset()
    assert not db.exists()  # reading did not create it
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE other (x)")
    assert schema_revisions(None, db) == frozenset()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        conn.execute("INSERT INTO alembic_version VALUES ('27d8f4e1a6c9')")
    assert schema_revisions(None, db) == frozenset({"27d8f4e1a6c9"})


def test_postgresql_revision_of_a_new_and_a_migrated_database() -> None:
    name = f"fleetflow_unit_schema_{os.getpid()}"
    admin = psycopg2.connect(f"{PG}/postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
            cur.execute(f"CREATE DATABASE {name}")
        url = database_url(f"{PG}/{name}")
        assert schema_revisions(url, Path("/nonexistent")) == frozenset()
        with psycopg2.connect(f"{PG}/{name}") as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
            cur.execute("INSERT INTO alembic_version VALUES ('91e2b8f3d6a4')")
        assert schema_revisions(url, Path("/nonexistent")) == frozenset({"91e2b8f3d6a4"})
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
