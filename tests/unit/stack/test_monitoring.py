"""The stack file's `monitoring`, and the configurations the stack renders for Prometheus
and Alertmanager (checked by the real promtool and amtool)."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from fleetflow.alerts import AlertSettings
from fleetflow.exceptions import StackError
from fleetflow.stack import StackConfig
from fleetflow.stack._config import MonitoringSpec
from fleetflow.stack._monitoring import (
    MONITORING_ROLES,
    MonitoringPorts,
    forget_monitoring,
    monitoring_up,
    monitoring_urls,
    render_alertmanager,
    render_prometheus,
)
from fleetflow.stack._procs import ServiceProcess

from ...conftest import REPO

BASE = REPO / "deployments" / "monitoring"
PORTS = MonitoringPorts(prometheus=1001, alertmanager=1002, exporter=1003, node_exporter=1004)


def _load(tmp_path: Path, text: str) -> StackConfig:
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    return StackConfig.load(path)


def test_monitoring_is_off_unless_the_stack_file_turns_it_on(tmp_path: Path) -> None:
    assert not _load(tmp_path, "worker_poll_seconds: 1\n").monitoring.enabled
    assert _load(tmp_path, "monitoring: true\n").monitoring.enabled
    assert not _load(tmp_path, "monitoring: false\n").monitoring.enabled
    given = _load(tmp_path, "monitoring: {scrape_interval_seconds: 2}\n").monitoring
    assert given.enabled and given.scrape_interval_seconds == 2
    assert not _load(tmp_path, "monitoring: {enabled: false}\n").monitoring.enabled


@pytest.mark.parametrize(
    "target",
    [
        "w1:9100\n- job_name: evil",  # YAML injected into the rendered file
        "http://w1:9100",
        "w1",
        "w1:9100/metrics",
        "-w1:9100",
        "w1:9100 extra",
    ],
)
def test_worker_machines_take_host_port_only(tmp_path: Path, target: str) -> None:
    """Attack: a target is data put into Prometheus' configuration, never more of it."""
    with pytest.raises(StackError, match="host:port"):
        _load(tmp_path, yaml.safe_dump({"monitoring": {"worker_machines": [target]}}))


def test_unknown_monitoring_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="extra"):
        _load(tmp_path, "monitoring: {enabled: true, rule_files: [/etc/passwd]}\n")


def test_prometheus_scrapes_the_stacks_exporters_and_the_other_worker_machines(
    tmp_path: Path,
) -> None:
    spec = MonitoringSpec(
        enabled=True, scrape_interval_seconds=2, evaluation_interval_seconds=3,
        worker_machines=("w2.example.org:9100",),
    )  # fmt: skip
    config = render_prometheus(BASE / "prometheus.yml", spec, PORTS)
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert jobs == {
        "fleetflow": ["127.0.0.1:1003"],
        "node": ["127.0.0.1:1004", "w2.example.org:9100"],
    }
    assert config["global"]["scrape_interval"] == "2s"
    assert config["global"]["evaluation_interval"] == "3s"
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:1002"
    ]
    assert all(Path(rule).is_absolute() and Path(rule).exists() for rule in config["rule_files"])
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    _check(["promtool", "check", "config", str(path)])


def _check(argv: list[str]) -> None:
    binary = shutil.which(argv[0])
    assert binary, f"{argv[0]} is not installed: run tools/install-system-deps.sh"
    done = subprocess.run([binary, *argv[1:]], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _every_channel() -> AlertSettings:
    return AlertSettings(
        webhook_url=SecretStr("https://hooks.example.org/T0KEN-webhook"),
        slack_url=SecretStr("https://hooks.slack.example/services/T0KEN-slack"),
        smtp_host="smtp.example.org", smtp_port=587, smtp_user="ops",
        smtp_password=SecretStr("pa55-w0rd"), email_to="ops@example.org",
    )  # fmt: skip


def test_alertmanager_sends_to_the_automations_channels_with_secrets_in_private_files(
    tmp_path: Path,
) -> None:
    spec = MonitoringSpec(enabled=True, group_wait_seconds=1)
    config = render_alertmanager(BASE / "alertmanager.yml", spec, _every_channel(), tmp_path)
    receiver = config["receivers"][0]
    email = receiver["email_configs"][0]
    assert email["to"] == "ops@example.org" and email["smarthost"] == "smtp.example.org:587"
    assert email["require_tls"] is True and email["auth_username"] == "ops"
    assert Path(email["auth_password_file"]).read_text() == "pa55-w0rd"
    assert Path(receiver["slack_configs"][0]["api_url_file"]).read_text().endswith("T0KEN-slack")
    assert receiver["webhook_configs"][0]["url"].endswith("T0KEN-webhook")
    assert config["route"]["group_wait"] == "1s"
    text = yaml.safe_dump(config)
    assert "pa55-w0rd" not in text and "T0KEN-slack" not in text
    for name in ("smtp-password", "slack-url"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    path = tmp_path / "alertmanager.yml"
    path.write_text(text)
    _check(["amtool", "check-config", str(path)])


def test_alertmanager_without_channels_keeps_alerts_to_itself(tmp_path: Path) -> None:
    config = render_alertmanager(
        BASE / "alertmanager.yml", MonitoringSpec(enabled=True), AlertSettings(), tmp_path
    )
    assert config["receivers"] == [{"name": "fleetflow"}]
    assert config["route"]["group_wait"] == "30s"  # the repository's
    assert list(tmp_path.iterdir()) == []


def test_stack_down_forgets_the_secret_files_and_ports(tmp_path: Path) -> None:
    directory = tmp_path / "monitoring"
    directory.mkdir()
    render_alertmanager(BASE / "alertmanager.yml", MonitoringSpec(), _every_channel(), directory)
    (directory / "alertmanager.yml").write_text("x")
    (directory / "monitoring.json").write_text('{"prometheus": 1, "alertmanager": 2, '
                                               '"exporter": 3, "node_exporter": 4}')  # fmt: skip
    assert monitoring_urls(tmp_path)["prometheus"] == "http://127.0.0.1:1"
    forget_monitoring(tmp_path)
    assert list(directory.iterdir()) == []
    assert monitoring_urls(tmp_path) == {}


def _process(role: str) -> ServiceProcess:
    return ServiceProcess(role, role, pid=1, start_ticks=1, log="/dev/null")


def test_a_running_monitoring_is_kept_and_a_partial_one_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stack up` again: all four running, nothing happens; one died, the survivors are
    stopped and the four started afresh (their ports and configurations belong together)."""
    import fleetflow.stack._monitoring as monitoring

    stopped: list[list[str]] = []
    monkeypatch.setattr(
        monitoring, "stop_all", lambda ps, mark: stopped.append([p.role for p in ps])
    )
    monkeypatch.setattr(
        monitoring, "start_monitoring", lambda *args: [_process(r) for r in MONITORING_ROLES]
    )
    config = StackConfig(monitoring=MonitoringSpec(enabled=True))
    server = _process("server")
    running = [server, *(_process(r) for r in MONITORING_ROLES)]
    kept, started = monitoring_up(tmp_path, tmp_path, config, running, {})
    assert (kept, started, stopped) == (running, [], [])
    partial = [server, *(_process(r) for r in MONITORING_ROLES[:2])]
    kept, started = monitoring_up(tmp_path, tmp_path, config, partial, {})
    assert kept == [server] and [p.role for p in started] == list(MONITORING_ROLES)
    assert stopped == [list(MONITORING_ROLES[:2])]
