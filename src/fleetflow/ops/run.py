"""`fleetflow run`: trigger a deployment and, with --watch, follow it to the end.

A thin client of Prefect's REST API (httpx only, no `import prefect`): creating the run
takes a few requests instead of a second of imports, and the trigger-latency benchmark
counts that second. Parameters travel as JSON values and nothing else: the server checks
them against the deployment's parameter schema and refuses a bad one before any flow run
exists, so a refusal here means nothing ran.

The watch shows what an operator needs in a terminal: fleetflow's host lines
("web-01 | failed | Task: reason"), TASK lines, warnings and errors (first line only, no
tracebacks), the run's state changes, then every per-host table artifact (`hosts-*`) as
a text table and the final state with its message. Exit codes: 0 Completed, 1 any other
final state (or the API lost while watching), 2 refused before a run existed, 130
interrupted (the run goes on).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from fleetflow.exceptions import ConfigurationError
from fleetflow.ops._api import ApiConfig, ApiUnavailable, api_client, call, detail

__all__ = [
    "FlowRun",
    "Output",
    "create_flow_run",
    "log_lines",
    "parse_parameters",
    "run_deployment",
    "watch",
]

_FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# fleetflow's host lines ("web-01 | failed | Task: reason"), TASK/PLAY lines, the recap.
_SHOWN = re.compile(
    r"^(\S+ \| [a-z() ]+ \||TASK \[|PLAY \[|PLAY RECAP|\S+\s+: ok=\d|ansible-playbook started)"
)
# Prefect's own lines about the run: the watch prints the state changes itself.
_NOISE = ("Finished in state", "Beginning ", "Encountered exception", "Created task run",
          "Executing ", "Crash detected", "Process for flow run", "Opening process",
          "Running on worker", "Task run failed with exception", "Worker '",
          "Downloading flow code")  # fmt: skip
_WARNING = 30
# A log may reach the server after one with a later timestamp (batched shipping).
_LOG_OVERLAP = timedelta(seconds=10)
_PAGE = 200


@dataclass(frozen=True)
class Output:
    """Where lines go: the CLI passes print to stdout and stderr; tests collect them."""

    out: Callable[[str], None]
    err: Callable[[str], None]


@dataclass(frozen=True)
class FlowRun:
    id: str
    name: str
    url: str


def parse_parameters(pairs: Sequence[str], params_json: str | None) -> dict[str, Any]:
    """`--params '{...}'` plus `--param k=v` (v as JSON when it parses, else a string),
    as `prefect deployment run` reads them; a name given both ways is refused."""
    merged: dict[str, Any] = {}
    if params_json:
        try:
            merged = json.loads(params_json)
        except ValueError as exc:
            raise ConfigurationError(f"--params is not valid JSON: {exc}") from exc
        if not isinstance(merged, dict):
            raise ConfigurationError("--params must be a JSON object: '{\"name\": value}'")
    singles: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ConfigurationError(f"--param {pair!r}: expected NAME=VALUE")
        try:
            singles[name] = json.loads(text)
        except ValueError:
            singles[name] = text
    if both := sorted(set(singles) & set(merged)):
        raise ConfigurationError(f"given in both --param and --params: {', '.join(both)}")
    return merged | singles


def create_flow_run(
    client: httpx.Client, config: ApiConfig, deployment: str, parameters: dict[str, Any]
) -> FlowRun:
    """Create a run of `deployment` ('flow/deployment'); the server's refusal raises
    ConfigurationError with its reason (no run was created then)."""
    flow, sep, name = deployment.partition("/")
    if not sep or not flow or not name or "/" in name:
        raise ConfigurationError(f"deployment {deployment!r}: expected FLOW/DEPLOYMENT")
    found = call(client, "GET", f"deployments/name/{_segment(flow)}/{_segment(name)}")
    if found.status_code == 404:
        raise ConfigurationError(f"deployment {deployment!r} not found")
    _raise_for(found, f"reading deployment {deployment!r}")
    deployment_id = found.json()["id"]
    created = call(
        client, "POST", f"deployments/{deployment_id}/create_flow_run",
        body={"parameters": parameters},
    )  # fmt: skip
    if created.status_code in (400, 409, 422):
        raise ConfigurationError(f"refused by the server: {detail(created)}")
    _raise_for(created, f"creating a run of {deployment!r}")
    run = created.json()
    return FlowRun(id=run["id"], name=run["name"], url=config.run_url(run["id"]))


def _segment(text: str) -> str:
    return quote(text, safe="")


def _raise_for(response: httpx.Response, doing: str) -> None:
    if response.is_error:
        raise ApiUnavailable(f"{doing}: HTTP {response.status_code}: {detail(response)}")


@dataclass
class _Cursor:
    """Logs already shown, and the time to ask from (with overlap, de-duplicated by id)."""

    seen: set[str] = field(default_factory=set)
    since: str | None = None


def _new_logs(client: httpx.Client, run_id: str, cursor: _Cursor) -> list[dict[str, Any]]:
    fresh: list[dict[str, Any]] = []
    offset = 0
    while True:
        logs_filter: dict[str, Any] = {"flow_run_id": {"any_": [run_id]}}
        if cursor.since:
            logs_filter["timestamp"] = {"after_": cursor.since}
        body = {"logs": logs_filter, "sort": "TIMESTAMP_ASC", "limit": _PAGE, "offset": offset}
        response = call(client, "POST", "logs/filter", body=body)
        _raise_for(response, "reading logs")
        page = response.json()
        fresh += [log for log in page if log["id"] not in cursor.seen]
        if len(page) < _PAGE:
            break
        offset += _PAGE
    for log in fresh:
        cursor.seen.add(log["id"])
    if fresh:
        last = max(datetime.fromisoformat(log["timestamp"]) for log in fresh)
        cursor.since = (last - _LOG_OVERLAP).isoformat()
    return fresh


def log_lines(log: dict[str, Any]) -> list[str]:
    """What the terminal shows of a log record: host, TASK and recap lines (one record may
    carry several: the run log ships a batch of lines of one level as one record), and a
    warning's or error's lines up to any traceback (an expected failure reads as one line)."""
    lines = str(log.get("message") or "").splitlines()
    if not lines or lines[0].startswith(_NOISE):
        return []
    level = int(log.get("level") or 0)
    if level < _WARNING:
        return [line.rstrip() for line in lines if _SHOWN.match(line)]
    shown = []
    for line in lines:
        if line.startswith("Traceback"):
            break
        if _SHOWN.match(line):
            shown.append(line.rstrip())
        elif line.strip() and not line[0].isspace():
            shown.append(f"{_level_name(level)}: {line.rstrip()}")
    return shown


def _level_name(level: int) -> str:
    return {30: "WARNING", 40: "ERROR", 50: "CRITICAL"}.get(level, f"level {level}")


def host_tables(client: httpx.Client, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Each `hosts-*` table artifact of the run (its latest version), rows as dicts."""
    body = {
        "artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"like_": "hosts-%"}},
        "sort": "CREATED_DESC",
    }
    response = call(client, "POST", "artifacts/filter", body=body)
    _raise_for(response, "reading artifacts")
    tables: dict[str, list[dict[str, Any]]] = {}
    for artifact in response.json():
        key = artifact.get("key") or ""
        if key.startswith("hosts-") and key not in tables:  # newest first
            tables[key] = _rows(artifact.get("data"))
    return tables


def _rows(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return []
    if isinstance(data, dict) and "columns" in data:  # Prefect's other table shape
        return [dict(zip(data["columns"], row, strict=False)) for row in data.get("rows", [])]
    if isinstance(data, dict):  # a dict of columns
        columns = list(data)
        return [dict(zip(columns, row, strict=False)) for row in zip(*data.values(), strict=False)]
    return [row for row in data or [] if isinstance(row, dict)]


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Host, status and failure columns as aligned text."""
    cells = [("host", "status", "failure")] + [
        (str(r.get("host", "")), str(r.get("status", "")), _one_line(r.get("failure")))
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(2)]
    return [f"{h:<{widths[0]}}  {s:<{widths[1]}}  {f}".rstrip() for h, s, f in cells]


def _one_line(text: object) -> str:
    return " ".join(str(text or "").split())


def watch(client: httpx.Client, run: FlowRun, output: Output, poll: float = 1.0) -> int:
    """Follow `run` until it is final and its last logs are shown; return the exit code."""
    cursor = _Cursor()
    shown_state = ""
    final_since: float | None = None
    state: dict[str, Any] = {}
    while True:
        response = call(client, "GET", f"flow_runs/{run.id}")
        _raise_for(response, "reading the flow run")
        state = response.json().get("state") or {}
        if state.get("name") and state["name"] != shown_state:
            shown_state = state["name"]
            output.out(f"state: {shown_state}")
        fresh = _new_logs(client, run.id, cursor)
        for log in fresh:
            for line in log_lines(log):
                output.out(line)
        if state.get("type") in _FINAL:
            final_since = final_since or time.monotonic()
            # Logs are shipped in batches after the state changes: wait for a quiet poll.
            if not fresh and time.monotonic() - final_since >= 2 * poll:
                break
        time.sleep(poll)
    for key, rows in host_tables(client, run.id).items():
        output.out(f"\n{key}:")
        for line in table_lines(rows):
            output.out(f"  {line}")
    message = _one_line(state.get("message"))
    output.out(f"\nfinal state: {state.get('name')}" + (f": {message}" if message else ""))
    return 0 if state.get("type") == "COMPLETED" else 1


def run_deployment(
    deployment: str,
    parameters: dict[str, Any],
    *,
    follow: bool,
    output: Output,
    config: ApiConfig | None = None,
    transport: httpx.BaseTransport | None = None,
    poll: float = 1.0,
) -> int:
    """The `fleetflow run` command; refusals raise ConfigurationError (exit code 2)."""
    config = config or ApiConfig.from_env()
    with api_client(config, transport=transport) as client:
        run = create_flow_run(client, config, deployment, parameters)
        output.out(f"flow run {run.name} ({run.id}) created")
        output.out(f"  {run.url}")
        if not follow:
            return 0
        goes_on = f"flow run {run.name} goes on; to stop it: prefect flow-run cancel {run.id}"
        try:
            return watch(client, run, output, poll)
        except KeyboardInterrupt:
            output.err(f"interrupted: {goes_on}")
            return 130
        except ApiUnavailable as exc:
            # The run exists: say so, and do not pass for a refusal (exit code 2).
            output.err(f"lost the API while watching ({exc}); {goes_on}")
            return 1
