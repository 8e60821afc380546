"""What a run publishes: events within what Prefect accepts whatever the number of hosts,
payloads and tables read back by the code that wrote them, one loop over event pages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any
from uuid import uuid4

import pytest
from prefect.client.schemas.events import EventPage
from prefect.events.filters import EventFilter
from prefect.events.schemas.events import ReceivedEvent, Resource

from fleetflow.engine import publish
from fleetflow.engine.publish import HostOutcome, PlaybookFinished
from fleetflow.engine.secrets import MASK
from fleetflow.engine.source import Source
from fleetflow.results import HostFailure, HostResult, HostStatus, PlaybookResult, RunStatus


def _result(hosts: dict[str, HostResult], status: RunStatus = RunStatus.SUCCESSFUL) -> Any:
    now = datetime.now(UTC)
    return PlaybookResult(
        playbook="site.yml", inventory="inventory/lab", status=status, hosts=hosts,
        attempts=2, rc=0, started_at=now, finished_at=now + timedelta(seconds=12.3456),
    )  # fmt: skip


def _sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(publish, "emit_event", lambda **event: sent.append(event))
    return sent


def test_a_run_over_many_hosts_is_told_in_parts_under_prefects_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = _sent(monkeypatch)
    hosts = {f"h{i:03d}": HostResult(host=f"h{i:03d}", status=HostStatus.OK, ok=1)
             for i in range(200)}  # fmt: skip
    publish.emit_run_events(_result(hosts), {}, ansible_events=600, log_lines=10)
    assert [len(e["related"]) for e in sent] == [80, 80, 40]
    assert [(e["payload"]["part"], e["payload"]["parts"]) for e in sent] == [(1, 3), (2, 3), (3, 3)]
    told = [h for e in sent for h in e["payload"]["hosts"]]
    assert told == sorted(hosts)
    for event in sent:
        assert sorted(event["payload"]["hosts"]) == [
            r["prefect.resource.name"] for r in event["related"]
        ]


def test_the_finished_payload_keeps_its_json_and_reads_back_through_its_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = _sent(monkeypatch)
    hosts = {
        "web-2": HostResult(host="web-2", status=HostStatus.CHANGED, changed=3, attempts=2),
        "db-1": HostResult(host="db-1", status=HostStatus.FAILED, failed=1,
                           failure=HostFailure(task="t", message="m")),
    }  # fmt: skip
    source = Source(commit="c0ffee" * 6 + "beef", ref="main", dirty=False, origin="checkout")
    result = _result(hosts, RunStatus.FAILED).model_copy(update={"source": source})
    publish.emit_run_events(result, {"web-2": ["web", "eu"]}, ansible_events=40, log_lines=9)
    finished = [e for e in sent if e["event"] == publish.PLAYBOOK_EVENT]
    assert [e["event"] for e in sent] == ["fleetflow.host.failed", publish.PLAYBOOK_EVENT]
    payload = finished[0]["payload"]
    # The JSON readers (and dashboards, stored events) know, key order included.
    assert json.dumps(payload) == json.dumps({
        "playbook": "site", "inventory": "lab", "status": "failed", "check": False,
        "duration_seconds": 12.346, "attempts": 2, "ansible_events": 40, "log_lines": 9,
        "commit": "c0ffee" * 6 + "beef", "ref": "main", "dirty": False,
        "hosts": {
            "db-1": {"status": "failed", "changed": 0, "attempts": 1, "groups": []},
            "web-2": {"status": "changed", "changed": 3, "attempts": 2, "groups": ["web", "eu"]},
        },
        "part": 1, "parts": 1,
    })  # fmt: skip
    read = PlaybookFinished.model_validate(payload)
    assert read == PlaybookFinished.of(result, {"web-2": ["web", "eu"]}, 40, 9)
    assert read.hosts["web-2"] == HostOutcome(status="changed", changed=3, attempts=2,
                                              groups=["web", "eu"])  # fmt: skip
    assert finished[0]["resource"] == {
        "prefect.resource.id": "fleetflow.playbook.site", "prefect.resource.name": "site",
    }  # fmt: skip


def test_a_payload_missing_fields_reads_as_the_readers_always_assumed() -> None:
    read = PlaybookFinished.model_validate({"hosts": {"h": {}}})
    assert (read.playbook, read.status, read.part, read.attempts) == ("?", "?", 1, 1)
    assert read.hosts["h"] == HostOutcome() == HostOutcome(status="?", changed=0, attempts=1)


@pytest.mark.parametrize(
    "payload",
    [{"hosts": None}, {"hosts": {"h": {"changed": "many"}}}, {"part": "x"}, {"hosts": [1]}],
)
def test_a_malformed_payload_reads_as_an_unknown_run(payload: dict[str, Any]) -> None:
    """Anyone with the API credential can emit the event: history must still read."""
    read = PlaybookFinished.read(payload)
    assert read == PlaybookFinished() and read.status == "?"


def test_the_hosts_table_is_found_by_its_key_and_read_back() -> None:
    key = publish.hosts_table_key("site", "Lab_EU")
    assert key == "hosts-site-lab-eu"
    assert publish.is_hosts_table(key) and not publish.is_hosts_table("plan")
    assert not publish.is_hosts_table(None)
    hosts = {h: HostResult(host=h, status=s) for h, s in
             [("a", HostStatus.OK), ("b", HostStatus.UNREACHABLE)]}  # fmt: skip
    rows = _result(hosts).table()
    assert publish.table_hosts(rows) == {"a": "ok", "b": "unreachable"}
    assert publish.table_hosts(json.dumps(rows)) == {"a": "ok", "b": "unreachable"}


def test_masking_copies_the_result_and_leaves_statuses_and_numbers_alone() -> None:
    """The walk replaced a JSON round trip: same strings masked, keys included."""
    secret = "s3cret-value"
    host = HostResult(
        host="h1", status=HostStatus.FAILED, failed=1,
        failure=HostFailure(task="t", message=secret),
        outputs={secret: [secret, 1, {"k": f"x{secret}x"}]},
    )  # fmt: skip
    result = _result({"h1": host})
    masked = publish.mask_result(result, [secret])
    assert masked.hosts["h1"].failure == HostFailure(task="t", message=MASK)
    assert masked.hosts["h1"].outputs == {MASK: [MASK, 1, {"k": f"x{MASK}x"}]}
    assert masked.hosts["h1"].status is HostStatus.FAILED and masked.started_at == result.started_at
    assert result.hosts["h1"].failure == HostFailure(task="t", message=secret)  # not changed
    assert PlaybookResult.model_validate_json(masked.model_dump_json()) == masked


class _PagedClient:
    """Three pages of two events, linked by next_page as the server links them."""

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.events = [
            ReceivedEvent(occurred=now, event="e", resource=Resource({"prefect.resource.id": "r"}),
                          id=uuid4(), received=now)
            for _ in range(6)
        ]  # fmt: skip
        self.reads: list[str] = []

    def _page(self, index: int) -> EventPage:
        assert index < 3, "read past the last page"
        # Page tokens count from 1: after page 1 comes page-token=2.
        url = f"http://prefect/api/events/filter/next?page-token={index + 2}" if index < 2 else None
        events = self.events[2 * index : 2 * index + 2]
        return EventPage(events=events, total=6, next_page=url)

    def read_events(self, filter: EventFilter, limit: int) -> EventPage:
        self.reads.append(f"first {limit}")
        return self._page(0)

    def read_events_page(self, next_page_url: str) -> EventPage:
        self.reads.append(next_page_url)
        return self._page(int(next_page_url.rsplit("=", 1)[1]) - 1)


def test_the_event_pages_are_followed_to_the_last_and_only_as_far_as_read() -> None:
    client = _PagedClient()
    events = list(publish.iter_events(client, EventFilter(), 2))  # type: ignore[arg-type]
    assert events == client.events
    assert client.reads == [
        "first 2",
        "http://prefect/api/events/filter/next?page-token=2",
        "http://prefect/api/events/filter/next?page-token=3",
    ]
    lazy = _PagedClient()
    assert len(list(islice(publish.iter_events(lazy, EventFilter(), 2), 3))) == 3  # type: ignore[arg-type]
    assert len(lazy.reads) == 2  # the third page was never asked for
