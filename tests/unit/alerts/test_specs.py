"""Automation files: the repository's load, bad ones are refused, comparison is stable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.events.schemas.automations import AutomationCore

from fleetflow.alerts import SMTPEmail
from fleetflow.alerts._apply import _desired, _differences, load_specs
from fleetflow.exceptions import AlertError

REPO = Path(__file__).resolve().parents[3]


def test_repository_automations_load_and_cover_every_trigger() -> None:
    specs = load_specs(REPO / "deployments" / "automations")
    names = {s.automation["name"] for s in specs}
    assert {
        "fleetflow/flow-run-failed",
        "fleetflow/flow-run-crashed",
        "fleetflow/flow-run-late",
        "fleetflow/zombie-runs",
        "fleetflow/host-unreachable",
        "fleetflow/stuck/site/lab",
    } <= names
    stuck = next(s for s in specs if s.automation["name"] == "fleetflow/stuck/site/lab")
    assert stuck.deployment == "site/lab"
    desired = _desired(stuck, {}, [], deployment_id="0" * 8)
    assert desired.trigger.model_dump()["within"].total_seconds() == 1800


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: mine\ntrigger: {type: event}\n", "must start with 'fleetflow/'"),
        ("name: fleetflow/x\nnotify: {channels: []}\n", "invalid automation file"),
        ("name: fleetflow/x\ntrigger: [\n", "invalid automation file"),
    ],
)
def test_bad_automation_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "a.yaml").write_text(text)
    with pytest.raises(AlertError, match=message):
        load_specs(tmp_path)


def test_invalid_trigger_is_refused_before_anything_is_applied(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: fleetflow/x\ntrigger: {type: nonsense}\n")
    spec = load_specs(tmp_path)[0]
    with pytest.raises(AlertError, match="invalid automation"):
        _desired(spec, {}, [])


def test_missing_channels_are_reported_not_guessed() -> None:
    spec = next(
        s
        for s in load_specs(REPO / "deployments" / "automations")
        if s.automation["name"] == "fleetflow/flow-run-failed"
    )
    missing: list[str] = []
    desired = _desired(spec, {"fleetflow-email": "0" * 32}, missing)
    assert missing == ["fleetflow-webhook", "fleetflow-slack"]
    assert [a.type for a in desired.actions] == ["send-notification"]


def test_comparison_ignores_set_order_and_trigger_ids() -> None:
    spec = next(
        s
        for s in load_specs(REPO / "deployments" / "automations")
        if s.automation["name"] == "fleetflow/zombie-runs"
    )
    desired = _desired(spec, {}, [])
    dumped = json.loads(desired.model_dump_json())
    dumped["trigger"]["expect"].reverse()
    dumped["trigger"]["id"] = "11111111-1111-4111-8111-111111111111"
    assert _differences(AutomationCore.model_validate(dumped), desired) == []
    dumped["trigger"]["within"] = 30
    assert _differences(AutomationCore.model_validate(dumped), desired) == ["trigger"]


def test_smtp_block_url_carries_no_readable_password_and_quotes_it() -> None:
    block = SMTPEmail(
        smtp_host="smtp.example.org", smtp_port=587, username="ops", password="p@ss/w:rd",
        from_address="ff@example.org", to_addresses=["a@example.org", "b@example.org"],
    )  # fmt: skip
    url = block.apprise_url().get_secret_value()
    assert url.startswith("mailtos://ops:p%40ss%2Fw%3Ard@smtp.example.org:587?")
    assert "mode=starttls" in url and "to=a%40example.org%2Cb%40example.org" in url
    assert "p@ss" not in repr(block) and "p@ss" not in str(block.apprise_url())
