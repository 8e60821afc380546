"""Audit records: secret-looking parameters masked, triggers classified."""

from __future__ import annotations

import uuid
from typing import Any

from prefect.client.schemas.objects import FlowRun

from fleetflow.engine.secrets import MASK
from fleetflow.ops.history import mask_parameters, trigger_of


def test_secret_looking_parameters_are_masked_at_any_depth_but_block_names_stay() -> None:
    params = {
        "inventory": "lab",
        "extra_vars": {"db_password": "hunter2", "nested": [{"api_token": "t0k"}], "port": 5},
        "ssh_key_secret": "lab-ssh-key",
    }
    masked = mask_parameters(params)
    assert masked["extra_vars"]["db_password"] == MASK
    assert masked["extra_vars"]["nested"][0]["api_token"] == MASK
    assert masked["extra_vars"]["port"] == 5 and masked["inventory"] == "lab"
    assert masked["ssh_key_secret"] == "lab-ssh-key"


def _run(**fields: Any) -> FlowRun:
    return FlowRun(id=uuid.uuid4(), name="r", flow_id=uuid.uuid4(), **fields)


def test_triggers_are_told_apart() -> None:
    automation = str(uuid.uuid4())
    assert trigger_of(_run(auto_scheduled=True), {}) == "schedule"
    by_automation = _run(idempotency_key=f"{automation}:0:event")
    assert trigger_of(by_automation, {automation: "fleetflow/x"}) == "automation fleetflow/x"
    assert trigger_of(_run(), {automation: "fleetflow/x"}) == "api"
