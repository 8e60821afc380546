"""What a playbook run tells the rest of the system, and the one code that reads it back.

Each contract shared with a reader elsewhere is written and read here, through the same
names and models, never by string keys matched by hand:

- The run's artifacts (their text: engine/_artifacts.py): a progress bar naming the hosts
  still running, then the per-host table (key `hosts-<playbook>-<inventory>`,
  `hosts_table_key`), which `fleetflow history` finds by its prefix (`is_hosts_table`)
  and reads with `table_hosts`; a check/diff run's diffs (key `diff_key`).
- `fleetflow.host.failed` / `fleetflow.host.unreachable`, one per such host: automations
  alert on them (deployments/automations/).
- `fleetflow.playbook.finished`, one per run, with every host as a related resource and
  its outcome, changed count, attempts and inventory groups in the payload (the
  `PlaybookFinished` model): the Prometheus exporter counts from it and `fleetflow
  history HOST` reads it back. Prefect refuses events with over 100 related resources,
  so a run over more than HOST_CHUNK hosts sends one event per chunk of hosts (payload
  `part` 1..`parts`); the run's own numbers count from part 1 only.
- `iter_events`: the one loop over the pages of /events/filter, for every reader.

Everything a run publishes (and returns) is masked first: `mask_result`.
Inside a run, Prefect relates each event to the flow run, task run and deployment.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fleetflow.engine._artifacts import (
    diff_log_lines,
    diff_markdown,
    final_percent,
    one_line,
    progress_final_text,
    progress_running_text,
    table_description,
    table_rows,
)
from fleetflow.engine.secrets import Masker
from fleetflow.results import HostResult, HostStatus, PlaybookResult

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.events.filters import EventFilter
    from prefect.events.schemas.events import ReceivedEvent

    from fleetflow.engine._collector import EventCollector, RunningHost
    from fleetflow.engine._runlog import RunLog

__all__ = [
    "EVENT_PAGE",
    "HOST_CHUNK",
    "HOST_RESOURCE",
    "PLAYBOOK_EVENT",
    "HostOutcome",
    "PlaybookFinished",
    "Progress",
    "artifact_key",
    "diff_key",
    "emit_run_events",
    "hosts_table_key",
    "is_hosts_table",
    "iter_events",
    "mask_result",
    "one_line",
    "playbook_resource",
    "progress_artifact",
    "publish_run",
    "table_hosts",
]

logger = logging.getLogger(__name__)

PLAYBOOK_EVENT = "fleetflow.playbook.finished"
HOST_RESOURCE = "fleetflow.host."
# Room for Prefect's own related resources (flow run, task run, deployment, tags...).
HOST_CHUNK = 80
EVENT_PAGE = 50  # the most /events/filter returns at once
_HOSTS_TABLE = "hosts"  # first part of the key of a run's per-host table
_DIFF = "diff"  # first part of the key of a check/diff run's diff
# The bar's most while a run goes: 100 is for `Progress.finish` of a run that succeeded.
_RUNNING_MAX = 99.0


class HostOutcome(BaseModel):
    """One host in a `fleetflow.playbook.finished` payload.

    The defaults are what a reader assumes of a host the payload does not name.
    """

    # Payloads are caller-written (anyone with the API credential may emit the event):
    # readers take numbers where names were expected as text, as str() did before.
    model_config = ConfigDict(coerce_numbers_to_str=True)

    status: str = Field(default="?", description="A HostStatus value; readers map others.")
    changed: int = Field(default=0, description="Tasks that changed the host.")
    attempts: int = Field(default=1, description="Attempts that ran on the host.")
    groups: list[str] = Field(default_factory=list, description="Its inventory groups.")
    leftovers: dict[str, int] = Field(
        default_factory=dict,
        # Left out when empty: payloads of runs that found none keep their shape.
        exclude_if=lambda found: not found,
        description="Leftovers of earlier runs found on it, by what became of them: "
        "fence (stopped by this run), guard (stopped by their run's guard), running.",
    )

    @field_validator("leftovers", mode="before")
    @classmethod
    def _counts_only(cls, value: object) -> dict[str, int]:
        """Caller-written: what is not a count is left out, not an error for the event."""
        if not isinstance(value, dict):
            return {}
        return {
            str(k): v
            for k, v in value.items()
            if type(v) is int and v >= 0  # not bool
        }


def _leftover_counts(host: HostResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for leftover in host.leftovers:
        action = leftover.stopped_by or "running"
        counts[action] = counts.get(action, 0) + 1
    return counts


class PlaybookFinished(BaseModel):
    """The payload of `fleetflow.playbook.finished`: the run in numbers.

    Label-like values are short names (playbook stem, inventory dir name). The field
    order is the payload's key order.
    """

    model_config = ConfigDict(coerce_numbers_to_str=True)

    playbook: str = Field(default="?", description="The playbook's file name without suffix.")
    inventory: str = Field(default="?", description="The inventory directory's name.")
    status: str = Field(default="?", description="A RunStatus value; readers map others.")
    check: bool = Field(default=False, description="Ansible's check mode.")
    duration_seconds: float = Field(default=0.0, description="Wall time, retries included.")
    attempts: int = Field(default=1, description="Attempts of the run.")
    ansible_events: int = Field(default=0, description="Ansible events the run processed.")
    log_lines: int = Field(default=0, description="Log lines the run sent to Prefect.")
    commit: str = Field(default="", description="The git commit the run used; '': unknown.")
    ref: str = Field(default="", description="The branch or ref of that commit, if known.")
    dirty: bool = Field(
        default=False, description="The files differed from the commit, or were not in git."
    )
    hosts: dict[str, HostOutcome] = Field(
        default_factory=dict, description="This part's hosts, by name."
    )
    part: int = Field(default=1, description="Which of the run's events this is, from 1.")
    parts: int = Field(default=1, description="How many events tell the run.")

    @classmethod
    def of(
        cls,
        result: PlaybookResult,
        groups: Mapping[str, list[str]],
        ansible_events: int,
        log_lines: int,
    ) -> PlaybookFinished:
        """The whole run, every host in one payload (`parts` splits it for sending)."""
        return cls(
            playbook=Path(result.playbook).stem,
            inventory=Path(result.inventory).name,
            status=result.status.value,
            check=result.check,
            duration_seconds=round((result.finished_at - result.started_at).total_seconds(), 3),
            attempts=result.attempts,
            ansible_events=ansible_events,
            log_lines=log_lines,
            commit=result.source.commit if result.source else "",
            ref=result.source.ref if result.source else "",
            dirty=result.source.dirty if result.source else False,
            hosts={
                host: HostOutcome(
                    status=outcome.status.value,
                    changed=outcome.changed,
                    attempts=outcome.attempts,
                    groups=list(groups.get(host, [])),
                    leftovers=_leftover_counts(outcome),
                )
                for host, outcome in sorted(result.hosts.items())
            },
        )

    @classmethod
    def read(cls, payload: Mapping[str, Any]) -> PlaybookFinished:
        """A received payload; one that is not of this shape (anyone holding the API
        credential can emit the event) reads as an unknown run ("?") rather than hiding
        the rest of a host's history behind an error."""
        try:
            return cls.model_validate(payload)
        except ValidationError:
            logger.warning("a malformed %s payload was read as an unknown run", PLAYBOOK_EVENT)
            return cls()

    def split(self, size: int = HOST_CHUNK) -> list[PlaybookFinished]:
        """One payload per `size` hosts (at least one), numbered `part` of `parts`."""
        chunks = list(itertools.batched(self.hosts, size)) or [()]
        return [
            self.model_copy(
                update={
                    "hosts": {host: self.hosts[host] for host in chunk},
                    "part": number,
                    "parts": len(chunks),
                }
            )
            for number, chunk in enumerate(chunks, start=1)
        ]


def publish_run(
    result: PlaybookResult,
    *,
    playbook: Path,
    inventory: str | Path,
    groups: Mapping[str, list[str]],
    progress: Progress,
    log: RunLog,
) -> PlaybookResult:
    """Tell a finished run: the progress's last word, its per-host table artifact, the
    diff of a check/diff run (artifact and log lines), and its events. Returns the result
    masked with the run's secrets, which is also what was told.

    `playbook` is the resolved playbook file, `inventory` the caller's name or path: the
    artifacts' keys are made of their names.
    """
    result = mask_result(result, log.secrets)
    progress.finish(result)
    create_table_artifact(
        table=table_rows(result),
        key=hosts_table_key(playbook.stem, Path(inventory).name),
        description=table_description(result),
    )
    if result.check or any(host.changes for host in result.hosts.values()):
        _publish_diff(result, diff_key(playbook.stem, Path(inventory).name), log)
    emit_run_events(result, groups, progress.ansible_events, log.lines)
    return result


def _publish_diff(result: PlaybookResult, key: str, log: RunLog) -> None:
    """What would change (what changed, outside check mode): one log line per host and a
    total, and the diffs as a markdown artifact."""
    lines = diff_log_lines(result)
    for line in lines:
        log.info("%s", line)
    create_markdown_artifact(markdown=diff_markdown(result), key=key, description=lines[-1])


def mask_result(result: PlaybookResult, values: list[str]) -> PlaybookResult:
    """The result with secret values masked in every string of it (dict keys too), in
    every form.

    String by string, not on its JSON text: a mask there could cut a JSON escape in two
    (a secret starting with "n" after a backslash) and break the document.
    """
    if not values:
        return result
    return cast(PlaybookResult, _masked(result, Masker(values)))


def _masked(value: Any, masker: Masker) -> Any:
    """A copy of `value` with every string masked; models are copied field by field."""
    if isinstance(value, Enum):
        return value  # statuses are names of ours, never secret text
    if isinstance(value, str):
        return masker(value)
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        return value.model_copy(
            update={name: _masked(getattr(value, name), masker) for name in fields}
        )
    if isinstance(value, dict):
        return {_masked(k, masker): _masked(v, masker) for k, v in value.items()}
    if isinstance(value, list | tuple):  # a tuple stays a tuple: model_copy does not validate
        return type(value)(_masked(v, masker) for v in value)
    return value


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key from names: lowercase letters, digits and dashes, 100 at most."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:100]


def hosts_table_key(playbook: str, inventory: str) -> str:
    """The key of a run's per-host table artifact: `hosts-<playbook>-<inventory>`."""
    return artifact_key(_HOSTS_TABLE, playbook, inventory)


def diff_key(playbook: str, inventory: str) -> str:
    """The key of a check/diff run's diff artifact: `diff-<playbook>-<inventory>`."""
    return artifact_key(_DIFF, playbook, inventory)


def is_hosts_table(key: str | None) -> bool:
    """Whether an artifact key is that of a run's per-host table."""
    return (key or "").startswith(f"{_HOSTS_TABLE}-")


class _TableRow(BaseModel):
    """What a reader takes from a row of `PlaybookResult.table()`."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    host: str
    status: str
    leftovers: object = 0  # read by table_leftovers: a bad value must not hide the host


def table_hosts(data: Any) -> dict[str, str]:
    """Each host's status from a per-host table artifact's data (its rows, or their JSON)."""
    rows = json.loads(data) if isinstance(data, str) else data
    return {row.host: row.status for row in map(_TableRow.model_validate, rows or [])}


def table_leftovers(data: Any) -> dict[str, int]:
    """Hosts where the run found leftovers of earlier runs, and how many (same rows)."""
    rows = json.loads(data) if isinstance(data, str) else data
    found = map(_TableRow.model_validate, rows or [])
    return {
        row.host: row.leftovers
        for row in found
        if type(row.leftovers) is int and row.leftovers > 0  # not bool, not text
    }


class Progress:
    """The attempts' event collectors, newest last: the progress shown and the events counted.

    Its artifact's last word comes from `finish` (publish_run calls it): 100% only for a
    run that succeeded, since a bar at 100 reads as "done, fine".
    """

    def __init__(self, artifact_id: UUID | None = None, title: str = "") -> None:
        self._collectors: list[EventCollector] = []
        self.artifact_id = artifact_id
        self.title = title
        self.last: float | None = None  # the last value shown

    def follow(self, collector: EventCollector) -> None:
        """Show this attempt's progress from now on (the attempts loop calls it)."""
        self._collectors.append(collector)

    def percent(self) -> float | None:
        """The current attempt's progress, or None before the first starts; below 100 until
        `finish` knows the outcome (the collector says 1.0 once the recap is in)."""
        if not self._collectors:
            return None
        return min(round(self._collectors[-1].progress() * 100, 1), _RUNNING_MAX)

    def running(self) -> list[RunningHost]:
        """The current attempt's hosts still on a task, longest-running first."""
        return self._collectors[-1].running() if self._collectors else []

    def description(self) -> str:
        return progress_running_text(self.title, self.running())

    @property
    def ansible_events(self) -> int:
        return sum(c.events for c in self._collectors)

    def show(self, percent: float, description: str) -> bool:
        """Send a value and description to the artifact; whether the server took it."""
        if self.artifact_id is None:
            return False
        try:
            update_progress_artifact(
                artifact_id=self.artifact_id, progress=percent, description=description
            )
        except Exception as exc:  # progress is best effort: a busy server may 500
            logger.debug("progress update failed: %s", exc)
            return False
        self.last = percent
        return True

    def finish(self, result: PlaybookResult) -> None:
        """The run's outcome on the bar: 100 and "done" only for a run that succeeded;
        otherwise the last value (or less: the share of hosts that ended well) and why."""
        self.show(final_percent(result, self.last), progress_final_text(result))


@contextmanager
def progress_artifact(
    playbook: Path, inventory: str | Path, interval: float = 1.0
) -> Iterator[Progress]:
    """Publish the current attempt's progress, and which hosts are on which task for how
    long, from a thread of its own; `Progress.finish` gives the outcome afterwards."""
    title = f"{playbook.name} on {Path(inventory).name}"
    start = progress_running_text(title, [])
    artifact_id = cast(UUID, create_progress_artifact(progress=0.0, description=start))
    progress = Progress(artifact_id, title)
    stop = threading.Event()

    def publish() -> None:
        shown: tuple[float, str] | None = None
        while not stop.wait(interval):
            if (now := progress.percent()) is None:
                continue
            state = (now, progress.description())
            if state != shown and progress.show(*state):
                shown = state

    thread = threading.Thread(target=publish, name="fleetflow-progress", daemon=True)
    thread.start()
    try:
        yield progress
    except BaseException as exc:
        stop.set()
        thread.join(5)
        progress.show(progress.last or 0.0, f"✗ stopped: the run ended with {type(exc).__name__}")
        raise
    finally:
        stop.set()
        thread.join(5)


def emit_run_events(
    result: PlaybookResult, groups: Mapping[str, list[str]], ansible_events: int, log_lines: int
) -> None:
    _emit_host_events(result)
    resource = playbook_resource(result.playbook)
    for payload in PlaybookFinished.of(result, groups, ansible_events, log_lines).split():
        emit_event(
            event=PLAYBOOK_EVENT,
            resource=resource,
            related=[
                {
                    "prefect.resource.id": f"{HOST_RESOURCE}{host}",
                    "prefect.resource.role": "host",
                    "prefect.resource.name": host,
                }
                for host in payload.hosts
            ],
            payload=payload.model_dump(mode="json"),
        )


def playbook_resource(playbook: str) -> dict[str, str]:
    """The resource of a playbook's events (runs, change decisions): one id per playbook."""
    name = Path(playbook).stem
    return {"prefect.resource.id": f"fleetflow.playbook.{name}", "prefect.resource.name": name}


def _emit_host_events(result: PlaybookResult) -> None:
    for host, outcome in sorted(result.hosts.items()):
        if outcome.status not in (HostStatus.FAILED, HostStatus.UNREACHABLE):
            continue
        emit_event(
            event=f"fleetflow.host.{outcome.status.value}",
            resource={
                "prefect.resource.id": f"{HOST_RESOURCE}{host}",
                "prefect.resource.name": host,
            },
            payload={
                "playbook": result.playbook,
                "inventory": result.inventory,
                "task": outcome.failure.task if outcome.failure else "",
                "message": outcome.failure.message if outcome.failure else outcome.status.value,
            },
        )


def iter_events(
    client: SyncPrefectClient, event_filter: EventFilter, page_size: int = EVENT_PAGE
) -> Iterator[ReceivedEvent]:
    """Every event the filter matches, page after page (the server's `next_page` links).

    Lazy: a reader that stops early reads no further page.
    """
    page = client.read_events(event_filter, limit=page_size)
    while True:
        yield from page.events
        if not page.next_page:
            return
        page = client.read_events_page(str(page.next_page))
