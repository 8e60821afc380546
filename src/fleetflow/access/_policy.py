"""Who may do what through the gateway: one table of (methods, route, minimum role).

Routes are Prefect's API paths below ``/api``. The first rule that matches the method and
the whole path decides; a request no rule matches is refused, whoever sends it, so a route
a newer Prefect adds stays closed until someone puts it in this table. Some rules name a
check of the body or query (`Check`): the gateway applies it after the role allows.

Roles are cumulative: viewer < operator < approver < admin. The stack's service account
(workers and the stack's own commands) has admin's rights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum

__all__ = ["POLICY", "WEBSOCKETS", "Check", "Need", "Rule", "match", "match_websocket"]


class Need(IntEnum):
    """The least a caller must be; the values are the roles' ranks."""

    PUBLIC = -1  # no credentials (health probes)
    VIEWER = 0
    OPERATOR = 1
    APPROVER = 2
    ADMIN = 3


class Check(StrEnum):
    NONE = ""
    SECRETS_QUERY = "secrets_query"  # ?include_secrets=true needs admin
    SECRETS_BODY = "secrets_body"  # {"include_secrets": true} needs admin
    CREATE_RUN = "create_run"  # parameters within the schema, no job variables, by:<user>
    SET_STATE = "set_state"  # cancel, or retry a finished run; other states need admin
    RESUME = "resume"  # the approver is the login; the run's approvers list holds


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    need: Need
    check: Check = Check.NONE
    reads: bool = False  # changes nothing: not audited

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and self.pattern.fullmatch(path) is not None


_GET = frozenset({"GET", "HEAD"})
_POST = frozenset({"POST"})
_ANY = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_ID = r"[^/]+"
# Every resource of Prefect 3.9's API; what is not here is refused even to admins.
_RESOURCES = (
    r"admin|artifacts|automations|block_capabilities|block_documents|block_schemas"
    r"|block_types|collections|concurrency_limits|csrf-token|deployments|events"
    r"|flow_run_states|flow_runs|flows|logs|observed-states|saved_searches|task_run_states"
    r"|task_runs|task_workers|templates|ui|v2/concurrency_limits|variables|work_pools"
    r"|work_queues"
)
# POST routes that only read: filters, counts, histories and the UI's dashboards.
_READ_POSTS = (
    rf"/(artifacts(/latest)?|automations|block_schemas|block_types|concurrency_limits"
    rf"|deployments|events|flow_runs|flows|logs|saved_searches|task_runs|task_workers"
    rf"|variables|work_pools|work_queues|v2/concurrency_limits|work_pools/{_ID}/queues"
    rf"|work_pools/{_ID}/workers|flow_runs/{_ID}/input)/(filter|count|paginate|history)"
    rf"|/flow_runs/lateness|/events/count-by/{_ID}|/ui/.+"
    rf"|/work_pools/{_ID}/concurrency_status|/work_queues/{_ID}/concurrency_status"
)

_BLOCKS_OF_TYPE = rf"/block_types/slug/{_ID}/block_documents(/name/{_ID})?"


def _rule(
    methods: frozenset[str], pattern: str, need: Need, check: Check = Check.NONE,
    *, reads: bool = False,
) -> Rule:  # fmt: skip
    return Rule(methods, re.compile(pattern), need, check, reads)


POLICY: tuple[Rule, ...] = (
    _rule(_GET, r"/health|/ready|/version|/hello", Need.PUBLIC, reads=True),
    # Every UI page reads these; Prefect obfuscates the secret settings itself.
    _rule(_GET, r"/admin/(version|settings|storage)", Need.VIEWER, reads=True),
    _rule(_ANY, r"/admin(/.*)?", Need.ADMIN),  # settings and storage configuration
    _rule(_GET, rf"/block_documents/{_ID}", Need.VIEWER, Check.SECRETS_QUERY, reads=True),
    _rule(_GET, _BLOCKS_OF_TYPE, Need.VIEWER, Check.SECRETS_QUERY, reads=True),
    _rule(_POST, r"/block_documents/(filter|count)", Need.VIEWER, Check.SECRETS_BODY, reads=True),
    _rule(_GET, rf"/({_RESOURCES})(/.*)?", Need.VIEWER, reads=True),
    _rule(_POST, _READ_POSTS, Need.VIEWER, reads=True),
    _rule(_POST, rf"/deployments/{_ID}/create_flow_run", Need.OPERATOR, Check.CREATE_RUN),
    _rule(_POST, rf"/flow_runs/{_ID}/set_state", Need.OPERATOR, Check.SET_STATE),
    _rule(frozenset({"PUT"}), r"/saved_searches/", Need.OPERATOR),
    _rule(frozenset({"DELETE"}), rf"/saved_searches/{_ID}", Need.OPERATOR),
    _rule(_POST, rf"/flow_runs/{_ID}/resume", Need.APPROVER, Check.RESUME),
    _rule(_ANY, rf"/({_RESOURCES})(/.*)?", Need.ADMIN),
)

# Websocket routes (Prefect authenticates them in the first message, not in headers).
WEBSOCKETS: tuple[Rule, ...] = (
    _rule(frozenset({"WS"}), r"/events/out|/logs/out", Need.VIEWER, reads=True),
    # Sending events can fire automations (and their actions): admin and service only.
    _rule(
        frozenset({"WS"}),
        rf"/events/in|/task_runs/subscriptions/scheduled|/work_pools/{_ID}/workers/connect",
        Need.ADMIN,
    ),
)


def match(method: str, path: str) -> Rule | None:
    """The rule for `method` on `path` (below /api), or None: refused."""
    return next((rule for rule in POLICY if rule.matches(method.upper(), path)), None)


def match_websocket(path: str) -> Rule | None:
    return next((rule for rule in WEBSOCKETS if rule.matches("WS", path)), None)
