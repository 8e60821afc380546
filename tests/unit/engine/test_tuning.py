"""Fast defaults: the fact cache, Mitogen and its fallbacks."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from fleetflow.engine import _tuning
from fleetflow.engine._attempts import execute
from fleetflow.engine._collector import failure_message
from fleetflow.engine._runner import RunnerOutcome
from fleetflow.engine._tuning import Tuning, tuning
from fleetflow.results import RunStatus
from fleetflow.settings import FleetflowSettings

from .test_attempts import LOG, FakeRunner, plan, request, result_event, stats

BROKEN = RunnerOutcome("failed", 250, "ERROR! Unexpected Exception: mitogen ...")
OK = RunnerOutcome("successful", 0, "")
PLUGINS = Path("/site-packages/ansible_mitogen/plugins/strategy")


def test_fact_cache_directory_is_private_and_passed_to_ansible(tmp_path: Path) -> None:
    cache = tmp_path / "facts"
    settings = FleetflowSettings(fact_cache_dir=cache, fact_cache_seconds=60)
    env = tuning(settings, LOG).envvars()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert env == {
        "ANSIBLE_CACHE_PLUGIN": "jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(cache),
        "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "60",
    }


def test_an_empty_fact_cache_setting_turns_the_cache_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEETFLOW_FACT_CACHE_DIR", "")
    assert tuning(FleetflowSettings(), LOG).envvars() == {}


def test_an_unusable_fact_cache_is_left_off_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING):
        tuned = tuning(FleetflowSettings(fact_cache_dir=blocker / "facts"), LOG)
    assert tuned.fact_cache_dir is None
    assert "facts are gathered every run" in caplog.text


def test_mitogen_is_used_when_it_loads(tmp_path: Path) -> None:
    plugins, reason = _tuning.mitogen_strategy_plugins()
    assert plugins is not None, reason  # the pinned Mitogen runs with the pinned ansible-core
    settings = FleetflowSettings(strategy="mitogen", fact_cache_dir=tmp_path)
    env = tuning(settings, LOG).envvars()
    assert env["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert env["ANSIBLE_STRATEGY_PLUGINS"] == str(plugins)


def test_mitogen_that_cannot_load_falls_back_to_linear(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        _tuning, "mitogen_strategy_plugins", lambda: (None, "AnsibleError: unsupported")
    )
    with caplog.at_level(logging.WARNING):
        tuned = tuning(FleetflowSettings(strategy="mitogen", fact_cache_dir=tmp_path), LOG)
    assert not tuned.mitogen and "ANSIBLE_STRATEGY" not in tuned.envvars()
    assert "Mitogen cannot load (AnsibleError: unsupported)" in caplog.text


def test_a_mitogen_run_that_breaks_before_any_host_reruns_with_linear() -> None:
    done = [result_event("runner_on_ok", h) for h in "abc"]
    runner = FakeRunner([([], BROKEN), ([*done, stats(a={"ok": 1}, b={"ok": 1}, c={"ok": 1})], OK)])
    result = execute(request(tuning=Tuning(strategy_plugins=PLUGINS)), plan(), runner, LOG)
    assert result.status == RunStatus.SUCCESSFUL and result.attempts == 1
    assert [r.tuning.mitogen for r in runner.requests] == [True, False]


def test_a_mitogen_run_that_touched_hosts_is_not_run_again() -> None:
    runner = FakeRunner([([result_event("runner_on_start", "a")], BROKEN)])
    result = execute(request(tuning=Tuning(strategy_plugins=PLUGINS)), plan(), runner, LOG)
    assert result.status == RunStatus.FAILED
    assert len(runner.requests) == 1


@pytest.mark.parametrize(
    ("ssh_says", "reason"),
    [
        ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@", "host key changed:"),
        ("Host key verification failed.", "host key unknown:"),
        (
            "Task failed: Host key checking is enabled, and SSH reported an unrecognized or "
            "mismatching host key.",
            "host key changed or unknown:",
        ),
    ],
)
def test_host_key_refusals_lead_with_the_reason_whatever_the_strategy(
    ssh_says: str, reason: str
) -> None:
    assert failure_message({"msg": ssh_says}).startswith(reason)
