"""Per-user access to the stack: users and roles, the audit trail, login lockouts.

``AccessStore`` keeps them (the stack's PostgreSQL or a SQLite file); the ``fleetflow
users`` and ``fleetflow audit`` commands administer and read it; the gateway in front of
the Prefect server checks logins and appends to the audit through it.
"""

from fleetflow.access._locate import store_url
from fleetflow.access._store import (
    ADDRESS_FAILURE_LIMIT,
    FAILURE_WINDOW,
    LOCKOUT,
    MIN_PASSWORD_LENGTH,
    SERVICE_ACCOUNT,
    USER_FAILURE_LIMIT,
    AccessStore,
    AuditEntry,
    Login,
    Role,
    User,
)

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
    "store_url",
]
