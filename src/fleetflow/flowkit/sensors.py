"""Sensors: Prefect tasks that wait until something is true, then return what they saw.

Each sensor polls every `poll_interval` seconds (default 5, or the timeout if shorter) for
at most `timeout` seconds and raises
`SensorTimeout` (what, where, how long, the last observation) when time runs out. Bad
parameters raise `ConfigurationError` before any waiting. A sensor changes nothing, so
the file sensor takes no host lock: it may watch hosts a playbook is changing.

- `wait_for_file`: a path present (or absent) on the target hosts, checked on the hosts
  themselves by Ansible's wait_for (playbooks/wait_for_file.yml).
- `wait_for_port` / `wait_for_http`: a TCP port / an HTTP status, seen from the machine
  running the flow (the worker), not from the hosts.
- `wait_for_event`: a Prefect event (`prefect events emit` by another system), read from
  the server's event store.

The `Condition` models describe the same waits as data, for flow parameters
(flows/wait_then_run.py); `wait_for_condition(condition, ...)` runs the matching sensor.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from uuid import UUID

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleetflow.engine.inventory import host_addresses, resolve_inventory
from fleetflow.engine.run import run_playbook
from fleetflow.exceptions import ConfigurationError, SensorTimeout
from fleetflow.flowkit._event_reader import EventReader, default_since
from fleetflow.flowkit.params import HostPattern
from fleetflow.results import HostStatus, PlaybookResult, RunStatus
from fleetflow.settings import get_settings

__all__ = [
    "Condition",
    "EventCondition",
    "EventSeen",
    "FileCondition",
    "FileSeen",
    "HttpCondition",
    "HttpSeen",
    "PortCondition",
    "PortSeen",
    "wait_for_condition",
    "wait_for_event",
    "wait_for_file",
    "wait_for_http",
    "wait_for_port",
]

_log = logging.getLogger(__name__)
_log.addHandler(logging.NullHandler())

DEFAULT_POLL = 5.0
# Ansible's own wait_for gives up at `timeout`; the run around it gets this much more, so
# Ansible reports which hosts timed out instead of the whole run being killed.
_ANSIBLE_SLACK = 120.0


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:
        return _log


def _check_timing(timeout: float, poll_interval: float | None) -> float:
    """The poll interval to use: as given, or the default (the timeout if shorter)."""
    if not timeout > 0:
        raise ConfigurationError(f"timeout must be more than 0 seconds, got {timeout}")
    if poll_interval is None:
        return min(DEFAULT_POLL, timeout)
    if not poll_interval > 0:
        raise ConfigurationError(f"poll_interval must be more than 0 seconds, got {poll_interval}")
    if poll_interval > timeout:
        raise ConfigurationError(
            f"poll_interval ({poll_interval} s) is longer than the timeout ({timeout} s)"
        )
    return poll_interval


# -- results ---------------------------------------------------------------------------


class _Seen(BaseModel):
    model_config = ConfigDict(frozen=True)

    waited_seconds: float = Field(description="Seconds from the sensor's start to success.")


class FileSeen(_Seen):
    """Every target host had the file (or, with present=False, no longer had it)."""

    path: str
    present: bool = Field(description="What was awaited: the file there (True) or gone.")
    hosts: dict[str, bool] = Field(description="Per host: the awaited state was reached.")


class PortSeen(_Seen):
    """The TCP port accepted a connection."""

    host: str
    port: int


class HttpSeen(_Seen):
    """The URL answered with an awaited status."""

    url: str
    status: int


class EventSeen(_Seen):
    """The first matching event."""

    id: UUID
    event: str
    occurred: datetime
    resource: dict[str, str]
    payload: dict[str, Any]


# -- polling ---------------------------------------------------------------------------


def _poll[T](
    probe: Callable[[float], tuple[T | None, str]], timeout: float, poll_interval: float
) -> tuple[float, T]:
    """Call `probe(seconds_left)` -> (what was found or None, observation) until it finds
    something; return (seconds waited, what was found).

    Raises TimeoutError carrying the last observation when the time is up.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        found, observation = probe(max(deadline - time.monotonic(), 0.1))
        now = time.monotonic()
        if found is not None:
            return now - start, found
        if now >= deadline:
            raise TimeoutError(observation)
        time.sleep(min(poll_interval, deadline - now))


def _timeout(what: str, timeout: float, last: str) -> SensorTimeout:
    return SensorTimeout(f"{what}: not seen within {timeout:g} s (last seen: {last})")


# -- port ------------------------------------------------------------------------------


def _check_port(host: str, port: int) -> None:
    if not host.strip():
        raise ConfigurationError("wait_for_port needs a host")
    if not 1 <= port <= 65535:
        raise ConfigurationError(f"port must be between 1 and 65535, got {port}")


def _connect(host: str, port: int, left: float) -> tuple[bool | None, str]:
    try:
        with socket.create_connection((host, port), timeout=min(2.0, left)):
            return True, "connected"
    except TimeoutError:
        return None, "connect timed out"
    except OSError as exc:
        return None, (exc.strerror or str(exc) or type(exc).__name__).lower()


@task(name="wait_for_port", task_run_name="wait for port {host}:{port}", cache_policy=NO_CACHE)
def wait_for_port(
    host: str, port: int, *, timeout: float, poll_interval: float | None = None
) -> PortSeen:
    """Wait until `host`:`port` accepts a TCP connection from this machine (the worker)."""
    poll_interval = _check_timing(timeout, poll_interval)
    _check_port(host, port)
    logger = _logger()
    logger.info("waiting up to %g s for TCP port %s:%d to open", timeout, host, port)
    try:
        waited, _ = _poll(lambda left: _connect(host, port, left), timeout, poll_interval)
    except TimeoutError as exc:
        raise _timeout(f"TCP port {host}:{port}", timeout, str(exc)) from exc
    logger.info("TCP port %s:%d is open after %.1f s", host, port, waited)
    return PortSeen(host=host, port=port, waited_seconds=waited)


# -- http ------------------------------------------------------------------------------


def _check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"invalid URL {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(f"invalid URL {url!r}: need http(s)://host[:port]/path")


def _statuses(status: int | list[int]) -> set[int]:
    wanted = {status} if isinstance(status, int) else set(status)
    if not wanted or any(not 100 <= s <= 599 for s in wanted):
        raise ConfigurationError(f"status must be HTTP statuses (100-599), got {status}")
    return wanted


def _get(client: httpx.Client, url: str, wanted: set[int], left: float) -> tuple[int | None, str]:
    try:
        response = client.get(url, timeout=httpx.Timeout(min(10.0, left), connect=min(3.0, left)))
    except httpx.HTTPError as exc:  # not up yet: refused, reset, TLS not ready, slow
        return None, f"{type(exc).__name__}: {exc}"
    status = response.status_code
    return (status if status in wanted else None), f"HTTP {status}"


@task(name="wait_for_http", task_run_name="wait for {url}", cache_policy=NO_CACHE)
def wait_for_http(
    url: str,
    *,
    status: int | list[int] = 200,
    timeout: float,
    poll_interval: float | None = None,
    verify_tls: bool = True,
) -> HttpSeen:
    """Wait until a GET of `url` (redirects followed) answers with `status` (or one of them).

    Connection errors and other statuses count as "not yet". Requests go from this machine.
    """
    poll_interval = _check_timing(timeout, poll_interval)
    _check_url(url)
    wanted = _statuses(status)
    logger = _logger()
    logger.info("waiting up to %g s for %s to answer HTTP %s", timeout, url,
                "/".join(map(str, sorted(wanted))))  # fmt: skip
    with httpx.Client(verify=verify_tls, follow_redirects=True) as client:
        try:
            waited, answered = _poll(
                lambda left: _get(client, url, wanted, left), timeout, poll_interval
            )
        except TimeoutError as exc:
            raise _timeout(f"{url} answering HTTP {status}", timeout, str(exc)) from exc
    logger.info("%s answered HTTP %d after %.1f s", url, answered, waited)
    return HttpSeen(url=url, status=answered, waited_seconds=waited)


# -- event -----------------------------------------------------------------------------


@task(name="wait_for_event", task_run_name="wait for event {event}", cache_policy=NO_CACHE)
def wait_for_event(
    event: str,
    *,
    resource_id: str | None = None,
    payload: dict[str, Any] | None = None,
    since: datetime | None = None,
    timeout: float,
    poll_interval: float | None = None,
) -> EventSeen:
    """Wait for the first Prefect event named `event` that occurred since `since`.

    `event` and `resource_id` match exactly, or as a prefix when they end in `*`; every key
    of `payload` must equal the event's. `since` defaults to the start of the current flow
    run (now outside one), so an event sent just before the sensor started is not missed.
    The server stores events in batches (every few seconds), so expect that much delay.
    """
    poll_interval = _check_timing(timeout, poll_interval)
    if not event.strip("* "):
        raise ConfigurationError("wait_for_event needs an event name (or a prefix ending in *)")
    start = since or default_since()
    if start.tzinfo is None:
        raise ConfigurationError(f"since must carry a time zone, got {start.isoformat()}")
    reader = EventReader(event, resource_id, dict(payload or {}), start)
    where = f"{event}" + (f" of {resource_id}" if resource_id else "")
    logger = _logger()
    logger.info("waiting up to %g s for event %s%s since %s", timeout, where,
                f" with payload {payload}" if payload else "", start.isoformat())  # fmt: skip
    try:
        waited, found = _poll(reader.probe, timeout, poll_interval)
    except TimeoutError as exc:
        raise _timeout(f"event {where}", timeout, str(exc)) from exc
    logger.info("event %s (%s) seen after %.1f s", found.event, found.id, waited)
    return EventSeen(
        id=found.id,
        event=found.event,
        occurred=found.occurred,
        resource=dict(found.resource.root),
        payload=dict(found.payload),
        waited_seconds=waited,
    )


# -- file ------------------------------------------------------------------------------


def _missing(result: PlaybookResult) -> dict[str, str]:
    """Hosts that did not reach the awaited state, with why (Ansible's message)."""
    missing = {}
    for name, host in result.hosts.items():
        if host.status in (HostStatus.OK, HostStatus.CHANGED):
            continue
        why = host.failure.message if host.failure else host.status.value
        missing[name] = f"unreachable: {why}" if host.status is HostStatus.UNREACHABLE else why
    return missing


@task(name="wait_for_file", task_run_name="wait for file {path}", cache_policy=NO_CACHE)
def wait_for_file(
    path: str,
    *,
    inventory: str,
    limit: str | None = None,
    timeout: float,
    poll_interval: float | None = None,
    present: bool = True,
    project_dir: Path | None = None,
) -> FileSeen:
    """Wait until `path` exists (or, with present=False, no longer exists) on every target host.

    Each host checks for itself (Ansible's wait_for, all hosts at once, no host lock), every
    `poll_interval` seconds for `timeout` seconds, both rounded up to whole seconds (that is
    what wait_for takes). Raises SensorTimeout naming the hosts that never got there (an
    unreachable host is one of them, with Ansible's reason).
    """
    poll_interval = _check_timing(timeout, poll_interval)
    if not path.startswith("/"):
        raise ConfigurationError(f"wait_for_file needs an absolute path, got {path!r}")
    seconds, sleep = math.ceil(timeout), max(1, math.ceil(poll_interval))
    state = "present" if present else "absent"
    where = f"{inventory}" + (f" ({limit})" if limit else "")
    logger = _logger()
    logger.info("waiting up to %d s for %s to be %s on %s", seconds, path, state, where)
    start = time.monotonic()
    result = run_playbook.fn(
        "wait_for_file",
        inventory=inventory,
        limit=limit,
        extra_vars={"fleetflow_wait_path": path, "fleetflow_wait_state": state,
                    "fleetflow_wait_timeout": seconds, "fleetflow_wait_sleep": sleep},
        timeout=seconds + _ANSIBLE_SLACK,
        project_dir=project_dir,
        host_lock=False,  # reads only: never wait for, or hold up, a run changing the hosts
        raise_on_failure=False,
    )  # fmt: skip
    waited = time.monotonic() - start
    missing = _missing(result)
    if missing or not result.hosts or result.status is not RunStatus.SUCCESSFUL:
        last = "; ".join(f"{h}: {why}" for h, why in sorted(missing.items()))
        raise _timeout(
            f"file {path} {state} on {', '.join(sorted(missing)) or where}",
            timeout, last or result.message or result.status.value,
        )  # fmt: skip
    logger.info("%s is %s on %d hosts after %.1f s", path, state, len(result.hosts), waited)
    return FileSeen(
        path=path, present=present, hosts=dict.fromkeys(result.hosts, True), waited_seconds=waited
    )


# -- conditions: the same waits as flow parameters -------------------------------------


class _Wait(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: Annotated[
        float, Field(gt=0, le=7 * 86400, description="Seconds to wait at most; then the run fails.")
    ] = 600
    poll_interval: Annotated[
        float | None,
        Field(gt=0, le=3600, description="Seconds between two checks (default 5)."),
    ] = None

    @model_validator(mode="after")
    def _poll_within_timeout(self) -> Self:
        if self.poll_interval is not None and self.poll_interval > self.timeout:
            raise ValueError(
                f"poll_interval ({self.poll_interval}) exceeds timeout ({self.timeout})"
            )
        return self


class FileCondition(_Wait):
    """A file present (or absent) on the target hosts."""

    kind: Literal["file"] = "file"
    path: Annotated[
        str,
        Field(
            max_length=4096,
            pattern=r"^/[^\x00-\x1f\x7f]*$",
            description="Absolute path on the hosts.",
        ),
    ]
    present: bool = Field(default=True, description="Wait for the file to exist (else: be gone).")
    limit: HostPattern | None = Field(default=None, description="Hosts (default: the flow's).")


class PortCondition(_Wait):
    """A TCP port accepting connections from the worker."""

    kind: Literal["port"] = "port"
    host: Annotated[
        str,
        Field(
            min_length=1,
            max_length=255,
            pattern=r"^[A-Za-z0-9_.:-]+$",
            description="A host of the inventory: its name or address.",
        ),
    ]
    port: Annotated[int, Field(ge=1, le=65535, description="TCP port on that host.")]


class HttpCondition(_Wait):
    """A URL answering a GET (from the worker) with an awaited status."""

    kind: Literal["http"] = "http"
    url: Annotated[
        str,
        Field(
            max_length=2000,
            pattern=r"^https?://[^\x00-\x20\x7f]+$",
            description="http(s):// URL of a host of the inventory.",
        ),
    ]
    status: int | list[int] = Field(default=200, description="Status, or any of these.")
    verify_tls: bool = Field(default=True, description="Check the server's TLS certificate.")


class EventCondition(_Wait):
    """A Prefect event, from the start of the flow run on."""

    kind: Literal["event"] = "event"
    event: Annotated[
        str,
        Field(
            min_length=1,
            max_length=500,
            pattern=r"^[^\x00-\x1f\x7f]+$",
            description="Event name; a prefix if it ends in *.",
        ),
    ]
    resource_id: Annotated[str, Field(max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")] | None = (
        Field(default=None, description="Exact, or a prefix ending in *.")
    )
    payload: dict[str, Any] | None = Field(default=None, description="Keys that must be equal.")


Condition = Annotated[
    FileCondition | PortCondition | HttpCondition | EventCondition, Field(discriminator="kind")
]


def _require_inventory_host(condition: PortCondition | HttpCondition, inventory: str) -> None:
    host = condition.host if isinstance(condition, PortCondition) else httpx.URL(condition.url).host
    project_dir = get_settings().project_dir
    known = host_addresses(resolve_inventory(inventory, project_dir), project_dir)
    if host not in known:
        raise ConfigurationError(
            f"{condition.kind} condition: {host[:100]!r} is not a host of inventory {inventory}; "
            "conditions may only wait for the inventory's hosts"
        )


def wait_for_condition(
    condition: FileCondition | PortCondition | HttpCondition | EventCondition,
    *,
    inventory: str,
    limit: str | None = None,
) -> FileSeen | PortSeen | HttpSeen | EventSeen:
    """Run the sensor of `condition` as a task of the current flow; `limit` is the file
    condition's default host pattern.

    A condition comes from whoever triggered the run: port and HTTP conditions may only
    reach hosts of `inventory` (the worker must not probe anything else on its network).
    """
    timeout, poll = condition.timeout, condition.poll_interval
    if isinstance(condition, PortCondition | HttpCondition):
        _require_inventory_host(condition, inventory)
    match condition:
        case FileCondition():
            return wait_for_file(
                condition.path, inventory=inventory, limit=condition.limit or limit,
                present=condition.present, timeout=timeout, poll_interval=poll,
            )  # fmt: skip
        case PortCondition():
            return wait_for_port(
                condition.host, condition.port, timeout=timeout, poll_interval=poll
            )
        case HttpCondition():
            return wait_for_http(
                condition.url, status=condition.status, verify_tls=condition.verify_tls,
                timeout=timeout, poll_interval=poll,
            )  # fmt: skip
        case EventCondition():
            return wait_for_event(
                condition.event, resource_id=condition.resource_id, payload=condition.payload,
                timeout=timeout, poll_interval=poll,
            )  # fmt: skip
