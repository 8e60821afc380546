"""Run events stay within what Prefect accepts, whatever the number of hosts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fleetflow.engine import publish
from fleetflow.results import HostResult, HostStatus, PlaybookResult, RunStatus


def test_a_run_over_many_hosts_is_told_in_parts_under_prefects_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(publish, "emit_event", lambda **event: sent.append(event))
    hosts = {f"h{i:03d}": HostResult(host=f"h{i:03d}", status=HostStatus.OK, ok=1)
             for i in range(200)}  # fmt: skip
    now = datetime.now(UTC)
    result = PlaybookResult(
        playbook="site.yml", inventory="lab", status=RunStatus.SUCCESSFUL, hosts=hosts,
        attempts=1, rc=0, started_at=now, finished_at=now,
    )  # fmt: skip
    publish.emit_run_events(result, {}, ansible_events=600, log_lines=10)
    assert [len(e["related"]) for e in sent] == [80, 80, 40]
    assert [(e["payload"]["part"], e["payload"]["parts"]) for e in sent] == [(1, 3), (2, 3), (3, 3)]
    told = [h for e in sent for h in e["payload"]["hosts"]]
    assert told == sorted(hosts)
    for event in sent:
        assert sorted(event["payload"]["hosts"]) == [
            r["prefect.resource.name"] for r in event["related"]
        ]
