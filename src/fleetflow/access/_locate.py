"""Which access store a stack uses: the stack's PostgreSQL, else a SQLite file beside it."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from fleetflow.exceptions import AccessError

__all__ = ["ACCESS_DB_FILE", "store_url"]

ACCESS_DB_FILE = "access.db"


def store_url(directory: Path, state_database_label: str | None) -> str:
    """The access store's URL for the stack in `directory`.

    FLEETFLOW_DATABASE_URL when set (the database `stack up` gives the server); else the
    database the stack's state names, if that is PostgreSQL with no password to fill in;
    else ``sqlite:///<directory>/access.db``. A stack on PostgreSQL whose password only
    FLEETFLOW_DATABASE_URL knows is an error, not a silent SQLite store beside it: users
    added there would not be the ones the gateway reads.
    """
    given = os.environ.get("FLEETFLOW_DATABASE_URL")
    if given:
        return given
    if state_database_label and state_database_label.startswith("postgresql"):
        try:
            url = make_url(state_database_label)
        except (ArgumentError, ValueError):
            url = None
        if url is None or url.password is not None:
            raise AccessError(
                f"the stack's database is {state_database_label}: set FLEETFLOW_DATABASE_URL "
                "to its URL (with the password) to reach its users"
            )
        return url.render_as_string(hide_password=False)
    return f"sqlite:///{(directory.resolve() / ACCESS_DB_FILE).as_posix()}"
