"""`automations apply` with no alert channel: automations that would alert no one are
refused (exit 1, nothing created) unless --no-channel asks for them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fleetflow.ops import cli

SPEC = """
name: fleetflow/probe-crashed
enabled: true
trigger:
  type: event
  posture: Reactive
  match: {prefect.resource.id: prefect.flow-run.*}
  expect: [prefect.flow-run.Crashed]
  threshold: 1
  within: 0
notify: {channels: [fleetflow-webhook], subject: s, body: b}
"""


class FakeClient:
    def __init__(self, blocks: dict[str, str]) -> None:
        self.blocks = blocks
        self.created: list[Any] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def read_block_documents(self) -> list[Any]:
        return [type("Doc", (), {"name": n, "id": i})() for n, i in self.blocks.items()]

    def read_automations(self) -> list[Any]:
        return []

    def create_automation(self, automation: Any) -> None:
        self.created.append(automation)


@pytest.fixture
def specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("FLEETFLOW_ALERT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    (tmp_path / "probe.yaml").write_text(SPEC)
    return tmp_path


def _client(monkeypatch: pytest.MonkeyPatch, blocks: dict[str, str]) -> FakeClient:
    client = FakeClient(blocks)
    monkeypatch.setattr("prefect.client.orchestration.get_client", lambda **_: client)
    return client


def test_no_channel_refuses_and_creates_nothing(
    specs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = _client(monkeypatch, {})
    assert cli.main(["automations", "apply", "--dir", str(specs)]) == 1
    assert client.created == []
    err = capsys.readouterr().err
    assert "1 automations would alert no one" in err and "--no-channel" in err


def test_no_channel_flag_creates_them_and_says_they_alert_nowhere(
    specs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = _client(monkeypatch, {})
    assert cli.main(["automations", "apply", "--dir", str(specs), "--no-channel"]) == 0
    assert [(a.name, a.actions) for a in client.created] == [("fleetflow/probe-crashed", [])]
    assert "1 automations alert nowhere (--no-channel)" in capsys.readouterr().out


def test_with_a_channel_the_automation_notifies_it(
    specs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    block_id = "0b7c9d8e-1f2a-4b3c-9d4e-5f6a7b8c9d0e"
    client = _client(monkeypatch, {"fleetflow-webhook": block_id})
    assert cli.main(["automations", "apply", "--dir", str(specs)]) == 0
    (created,) = client.created
    assert [str(a.block_document_id) for a in created.actions] == [block_id]
    assert "alert nowhere" not in capsys.readouterr().out
