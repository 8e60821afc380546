"""Fuzzing inventory files through the real preflight: a clear error, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetflow.engine.inventory import preflight
from fleetflow.engine.request import RunRequest
from fleetflow.exceptions import ConfigurationError

from ..conftest import REPO

pytestmark = pytest.mark.integration

yaml_like = st.lists(
    st.sampled_from(["all:", "  hosts:", "    h1:", "      ansible_host: 127.0.0.1",
                     "  children:", "    web:", "      hosts: {h2: {}}", "[web]", "h3",
                     "- nonsense", "all: [", "  vars: {a: 1}", "\t", "{{ x }}", ":"])
    | st.text(max_size=20),
    max_size=8,
).map("\n".join)  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(yaml_like, st.sampled_from([None, "all", "web", "h1", "nothing-matches"]))
def test_any_inventory_text_gives_hosts_or_a_configuration_error(
    text: str, limit: str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inv"
        inventory.mkdir()
        (inventory / "hosts.yml").write_text(text)
        try:
            plan = preflight(RunRequest("ping", inventory, REPO, limit=limit))
        except ConfigurationError as exc:
            assert str(exc) and "Traceback" not in str(exc)
            return
        assert plan.hosts and all(isinstance(h, str) for h in plan.hosts)
