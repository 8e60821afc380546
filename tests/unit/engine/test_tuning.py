"""Fast defaults: the fact cache, Mitogen and its fallbacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from fleetflow.engine import _factcache, _tuning
from fleetflow.engine._attempts import execute
from fleetflow.engine._collector import failure_message
from fleetflow.engine._factcache import forget_hosts, guard_fact_cache, host_key_fingerprint
from fleetflow.engine._runner import RunnerOutcome
from fleetflow.engine._tuning import Tuning, tuning
from fleetflow.engine.request import RunRequest
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


# -- the fact cache is kept to the machine it describes (fleetflow.engine._factcache) -------

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA" + "a" * 43
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" + "b" * 43


def _hashed(name: str, salt: bytes = b"0123456789abcdefghij") -> str:
    mac = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"


def _vars(known_hosts: Path, address: str = "127.0.0.5", port: int = 22) -> dict[str, object]:
    return {
        "ansible_host": address,
        "ansible_port": port,
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o Strict=yes",
    }


def test_the_fingerprint_is_the_pinned_key_of_the_hosts_address_and_port(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"127.0.0.5 {KEY_A}\n[127.0.0.6]:2222 {KEY_B}\n")
    first = host_key_fingerprint("web-01", _vars(known), tmp_path)
    assert first is not None
    assert host_key_fingerprint("web-02", _vars(known, "127.0.0.6", 2222), tmp_path) != first
    # The same address on another port is another host: nothing pinned for it.
    assert host_key_fingerprint("web-03", _vars(known, "127.0.0.5", 2222), tmp_path) is None
    known.write_text(f"127.0.0.5 {KEY_B}\n")  # the machine was rebuilt: a new key
    assert host_key_fingerprint("web-01", _vars(known), tmp_path) not in (None, first)


def test_hashed_known_hosts_entries_are_matched(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"{_hashed('127.0.0.5')} {KEY_A}\n{_hashed('127.0.0.9')} {KEY_B}\n")
    plain = tmp_path / "plain"
    plain.write_text(f"127.0.0.5 {KEY_A}\n")
    assert host_key_fingerprint("h", _vars(known), tmp_path) == host_key_fingerprint(
        "h", _vars(plain), tmp_path
    )


@pytest.mark.parametrize(
    "hostvars",
    [
        {"ansible_host": "{{ lookup('pipe','id') }}"},  # a template: never rendered here
        {"ansible_host": "127.0.0.5", "ansible_port": "{{ 22 }}"},
        {"ansible_host": "127.0.0.5", "ansible_ssh_common_args": "-o UserKnownHostsFile={{ x }}"},
        {"ansible_host": "127.0.0.7"},  # no pinned key in the default known_hosts files
    ],
)
def test_a_host_without_a_readable_pinned_key_has_no_fingerprint(
    tmp_path: Path, hostvars: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh/known_hosts").write_text(f"127.0.0.5 {KEY_A}\n")
    assert host_key_fingerprint("h", hostvars, tmp_path) is None


def _cached(cache: Path, host: str) -> Path:
    cache.mkdir(exist_ok=True)
    entry = cache / f"s1_{host}"
    entry.write_text('{"__payload__": "{}"}')
    return entry


def test_cached_facts_survive_only_while_the_pinned_key_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"127.0.0.5 {KEY_A}\n")
    monkeypatch.setattr(_factcache, "_hostvars", lambda *_: {"web-01": _vars(known)})
    cache = tmp_path / "facts"
    entry = _cached(cache, "web-01")

    def guard() -> None:
        guard_fact_cache(cache, tmp_path / "inv", ["web-01"], tmp_path, LOG)

    guard()  # facts cached before any key was recorded: not trusted
    assert not entry.exists()
    _cached(cache, "web-01")  # what the run gathered, under key A
    guard()
    assert entry.exists(), "the same machine keeps its cached facts"
    known.write_text(f"127.0.0.5 {KEY_B}\n")  # rebuilt under the same name
    guard()
    assert not entry.exists(), "a new machine must not get the old one's facts"
    _cached(cache, "web-01")
    known.write_text("")  # no longer pinned: facts gathered every run
    guard()
    assert not entry.exists()
    _cached(cache, "web-01")
    guard()
    assert not entry.exists()


def test_only_the_targeted_hosts_and_their_own_files_are_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_factcache, "_hostvars", lambda *_: {})
    cache = tmp_path / "facts"
    other, longer = _cached(cache, "web-02"), _cached(cache, "xweb-01")
    target = _cached(cache, "web-01")
    guard_fact_cache(cache, tmp_path / "inv", ["web-01"], tmp_path, LOG)
    assert not target.exists()
    assert other.exists() and longer.exists()


def test_a_host_name_unsafe_in_a_path_has_its_hashed_file_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = "../etc/x"
    cache = tmp_path / "facts"
    cache.mkdir()
    entry = cache / hashlib.sha256(f"s1_{host}".encode()).hexdigest()[:12]
    entry.write_text("{}")
    forget_hosts(cache, [host])
    assert not entry.exists()
    assert (tmp_path / "facts").is_dir() and not (tmp_path / "etc").exists()


def test_execute_guards_the_cache_before_ansible_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "facts"
    stale = _cached(cache, "a")
    monkeypatch.setattr(_factcache, "_hostvars", lambda *_: {})
    seen: list[bool] = []

    class Watching(FakeRunner):
        def __call__(self, req: RunRequest, on_event: Any, cancel: Any) -> RunnerOutcome:
            seen.append(stale.exists())
            return super().__call__(req, on_event, cancel)

    runner = Watching([([stats(a={"ok": 2}, b={"ok": 2}, c={"ok": 2})], OK)])
    result = execute(request(tuning=Tuning(fact_cache_dir=cache)), plan(), runner, LOG)
    assert result.status == RunStatus.SUCCESSFUL
    assert seen == [False]
