"""`fleetflow users ...` and `fleetflow audit`: the access gateway's users and its trail.

The store is the stack's (see `fleetflow.access.store_url`). A password is read from the
terminal (twice) or, when stdin is not a terminal, as one line of stdin: never from argv
or the environment, where `ps` and shell history keep it. Every change made here is
itself appended to the audit, as `cli:<login>` from "local".
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from fleetflow.exceptions import AccessError
from fleetflow.ops._columns import aligned
from fleetflow.settings import get_settings

if TYPE_CHECKING:
    from fleetflow.access import AccessStore, AuditEntry

__all__ = ["add_access_commands", "parse_since"]

# fleetflow.access.Role's values (a test checks): importing the store here would add its
# database drivers' import time to every other command.
_ROLES = ["viewer", "operator", "approver", "admin"]
_AGO = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def add_access_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`users` and `audit`, each dispatching through its `handler` like the others."""
    users = commands.add_parser("users", help="who may use the stack's UI and API, and as what")
    actions = users.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user; the password is read from terminal/stdin")
    add.add_argument("name", help="lower-case letter, then up to 62 of a-z 0-9 . _ -")
    add.add_argument("--role", required=True, choices=_ROLES, help="what the user may do")
    actions.add_parser("list", help="every user: role, enabled or not, password age")
    for action, what in (
        ("disable", "refuse the user's logins (kept in the audit)"),
        ("enable", "allow a disabled user's logins again"),
        ("passwd", "set a new password, read from terminal/stdin"),
    ):
        actions.add_parser(action, help=what).add_argument("name", help="the user")
    role = actions.add_parser("role", help="change what a user may do")
    role.add_argument("name", help="the user")
    role.add_argument("role", choices=_ROLES, help="the new role")
    unlock = actions.add_parser("unlock", help="clear a lockout after failed logins")
    unlock.add_argument("name", nargs="?", help="the user locked out")
    unlock.add_argument("--address", metavar="IP", help="the address locked out")
    users.set_defaults(handler=_users)

    audit = commands.add_parser("audit", help="who changed what through the gateway, newest first")
    audit.add_argument("--user", help="only this actor's entries (cli:LOGIN for the CLI's)")
    audit.add_argument(
        "--since", type=parse_since, metavar="AGO|TIME",
        help="only entries from then on: 30m, 2h, 7d, or ISO-8601 (local time if no zone)",
    )  # fmt: skip
    audit.add_argument("--limit", type=int, default=200, help="entries shown (default 200)")
    audit.set_defaults(handler=_audit)


def parse_since(text: str) -> datetime:
    """`2h`, `30m`, `7d`, `45s` ago, or an ISO-8601 time (without a zone: local time)."""
    ago = _AGO.match(text.strip())
    if ago:
        return datetime.now(UTC) - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an age (30m, 2h, 7d) nor an ISO-8601 time"
        ) from None
    return when.astimezone(UTC)  # a naive time is taken as local


def read_password(*, confirm: bool = True) -> str:
    """From the terminal without echo (asked twice), else one line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if confirm and getpass.getpass("password again: ") != first:
            raise AccessError("the two passwords differ; nothing changed")
        return first
    line = sys.stdin.readline()
    if not line:
        raise AccessError("no password: give it on stdin (one line) or run in a terminal")
    return line.rstrip("\r\n")


def open_store() -> AccessStore:
    """The stack's store, its tables made if missing."""
    from fleetflow.access import AccessStore, store_url
    from fleetflow.ops._stackfile import StackState

    directory = get_settings().stack_dir
    state = StackState.read(directory)
    store = AccessStore(store_url(directory, state.database if state else None))
    store.create()
    return store


def _users(args: argparse.Namespace) -> int:
    store = open_store()
    try:
        if args.action == "list":
            _print_users(store)
            return 0
        change, route, detail = _change(args)
        _audited(store, route, args.name or "", detail, lambda: change(store))
        return 0
    finally:
        store.close()


def _change(args: argparse.Namespace) -> tuple[Callable[[AccessStore], object], str, str]:
    """What `users <action>` does, its audit route and detail (never a password)."""
    from fleetflow.access import Role

    name, action = args.name, args.action
    route = f"users {action} {name or ''}".strip()
    if action == "add":
        password = read_password()
        role = Role(args.role)
        return (lambda s: s.add_user(name, role, password)), route, f"role={role}"
    if action == "passwd":
        password = read_password()
        return (lambda s: s.set_password(name, password)), route, "password changed"
    if action == "role":
        role = Role(args.role)
        return (lambda s: s.set_role(name, role)), route, f"role={role}"
    if action in ("disable", "enable"):
        return (lambda s: getattr(s, action)(name)), route, ""
    subjects = ([f"user:{name}"] if name else []) + (
        [f"address:{args.address}"] if args.address else []
    )
    if not subjects:
        raise AccessError("users unlock: give the user's NAME, --address IP, or both")
    route = "users unlock " + " ".join(subjects)

    def unlock(store: AccessStore) -> int:
        removed = sum(store.unlock(s) for s in subjects)
        print(f"{', '.join(subjects)}: {removed} lockout and failure records removed")
        return removed

    return unlock, route, ""


def _audited(
    store: AccessStore, route: str, target: str, detail: str, change: Callable[[], object]
) -> None:
    """Run `change`, then append what it was (refused too, if the store refused it)."""
    try:
        change()
    except AccessError as exc:
        store.record(_entry(route, target, str(exc), status=1, outcome="refused"))
        raise
    store.record(_entry(route, target, detail, status=0, outcome="ok"))
    if not route.startswith("users unlock"):
        print(f"{route}: done")


def _entry(route: str, target: str, detail: str, *, status: int, outcome: str) -> AuditEntry:
    from fleetflow.access import AuditEntry

    return AuditEntry(
        at=datetime.now(UTC), actor=f"cli:{_login()}", role="admin", address="local",
        method="CLI", route=route, targets=target, detail=detail, status=status,
        outcome=outcome,
    )  # fmt: skip


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, no LOGNAME (a bare container)
        return f"uid{os.getuid()}"


def _print_users(store: AccessStore) -> None:
    users = store.list_users()
    if not users:
        print(f"no users in {store.label}: `fleetflow users add NAME --role ROLE`")
        return
    rows = [("name", "role", "state", "created", "password changed")] + [
        (u.name, u.role.value, "disabled" if u.disabled else "enabled", _time(u.created),
         _time(u.password_changed))
        for u in users
    ]  # fmt: skip
    _print_table(rows)


def _audit(args: argparse.Namespace) -> int:
    store = open_store()
    try:
        entries = store.audit(user=args.user, since=args.since, limit=args.limit)
    finally:
        store.close()
    if not entries:
        print("no audit entries match")
        return 0
    header = ("time", "actor", "role", "address", "method", "route", "status", "outcome")
    rows = [(*header, "targets")] + [
        (_time(e.at), e.actor, e.role, e.address, e.method, e.route, str(e.status), e.outcome,
         e.targets)
        for e in entries
    ]  # fmt: skip
    _print_table(rows)
    return 0


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    for line in aligned(rows):
        print(line)


def _time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
