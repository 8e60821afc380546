"""Reading Prefect events for `wait_for_event`: the server's /events/filter, polled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from prefect import get_client
from prefect.context import FlowRunContext
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventOrder,
    EventResourceFilter,
)
from prefect.events.schemas.events import ReceivedEvent
from prefect.exceptions import PrefectHTTPStatusError

from fleetflow.engine.publish import iter_events

__all__ = ["EventReader", "default_since", "event_filter"]

# Events are re-read this far back from the newest one checked: the server may store an
# event later than newer ones (emitters' clocks, batching); ids already checked are skipped.
_EVENT_LATE = timedelta(seconds=60)


def event_filter(event: str, resource_id: str | None, since: datetime) -> EventFilter:
    names = (
        EventNameFilter(prefix=[event[:-1]])
        if event.endswith("*")
        else EventNameFilter(name=[event])
    )
    resource = None
    if resource_id is not None:
        resource = (
            EventResourceFilter(id_prefix=[resource_id[:-1]])
            if resource_id.endswith("*")
            else EventResourceFilter(id=[resource_id])
        )
    # `until` ahead of now: an emitter whose clock runs ahead is still seen.
    occurred = EventOccurredFilter(since=since, until=datetime.now(UTC) + timedelta(hours=1))
    return EventFilter(occurred=occurred, event=names, resource=resource, order=EventOrder.ASC)


def default_since() -> datetime:
    """The start of the current flow run (an event sent while earlier tasks ran counts)."""
    context = FlowRunContext.get()
    run = context.flow_run if context else None
    start = run and (run.start_time or run.expected_start_time)
    return start or datetime.now(UTC)


class EventReader:
    """Reads matching events page by page, each one checked once, oldest first."""

    def __init__(
        self, event: str, resource_id: str | None, payload: dict[str, Any], since: datetime
    ):
        self.event, self.resource_id, self.payload = event, resource_id, payload
        self.cursor = since
        self.checked: set[UUID] = set()
        self.last = "no such event yet"

    def probe(self, left: float) -> tuple[ReceivedEvent | None, str]:
        del left  # one API call is short; the client has its own timeouts
        try:
            return self._read()
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code < 500:
                raise  # our request is wrong: waiting will not fix it
            return None, f"server error {exc.response.status_code}"
        except httpx.TransportError as exc:  # a busy or restarting server: try again
            return None, f"server unreachable: {type(exc).__name__}"

    def _read(self) -> tuple[ReceivedEvent | None, str]:
        with get_client(sync_client=True) as client:
            matching = event_filter(self.event, self.resource_id, self.cursor)
            for event in iter_events(client, matching):
                if self._check(event):
                    return event, f"event {event.id}"
        return None, self.last

    def _check(self, event: ReceivedEvent) -> bool:
        """Whether the event is the one waited for; each event is checked once."""
        if event.id in self.checked:
            return False
        self.checked.add(event.id)
        self.cursor = max(self.cursor, event.occurred - _EVENT_LATE)
        differing = sorted(k for k, v in self.payload.items() if event.payload.get(k) != v)
        if differing:
            self.last = f"event {event.id} with another {', '.join(differing)}"
        return not differing
