"""The stack's monitoring: fleetflow's exporter, a node exporter, Alertmanager, Prometheus.

Started by `fleetflow stack up` when the stack file says `monitoring: true`, each on a
loopback port chosen at start, with configurations rendered from deployments/monitoring into
``<stack dir>/monitoring/`` (Debian's packaged services and their default ports are never
used, so a machine that already runs them keeps them). The four start and stop together:
a restart renders the configurations again with new ports.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from fleetflow._progress import phase
from fleetflow.alerts import AlertSettings
from fleetflow.engine.secrets import write_private
from fleetflow.exceptions import StackError
from fleetflow.stack._config import MonitoringSpec, StackConfig
from fleetflow.stack._gateway import free_loopback_port
from fleetflow.stack._procs import ServiceProcess, spawn, stop_all, tail_file

__all__ = [
    "MONITORING_ROLES",
    "MonitoringPorts",
    "forget_monitoring",
    "monitoring_up",
    "monitoring_urls",
    "render_alertmanager",
    "render_prometheus",
    "start_monitoring",
]

MONITORING_ROLES = ("node-exporter", "exporter", "alertmanager", "prometheus")
_STATE = "monitoring.json"
_START_SECONDS = 90.0
# Files holding channel secrets (Alertmanager reads them; `stack down` deletes them).
_SECRET_FILES = ("alertmanager.yml", "smtp-password", "slack-url")
# Debian's names first, then upstream's.
_BINARIES = {
    "prometheus": ("prometheus",),
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "node-exporter": ("prometheus-node-exporter", "node_exporter"),
}


@dataclass(frozen=True)
class MonitoringPorts:
    """Where the monitoring services of one stack listen (all on 127.0.0.1)."""

    prometheus: int
    alertmanager: int
    exporter: int
    node_exporter: int

    @classmethod
    def fresh(cls) -> MonitoringPorts:
        return cls(*(free_loopback_port() for _ in range(4)))

    def urls(self) -> dict[str, str]:
        return {
            "prometheus": f"http://127.0.0.1:{self.prometheus}",
            "alertmanager": f"http://127.0.0.1:{self.alertmanager}",
            "exporter": f"http://127.0.0.1:{self.exporter}/metrics",
            "node-exporter": f"http://127.0.0.1:{self.node_exporter}/metrics",
        }


def _directory(stack_dir: Path) -> Path:
    return stack_dir / "monitoring"


def monitoring_urls(stack_dir: Path) -> dict[str, str]:
    """The running monitoring's addresses by service, or {} when the stack runs none."""
    try:
        ports = json.loads((_directory(stack_dir) / _STATE).read_text())
        return MonitoringPorts(**ports).urls()
    except (OSError, ValueError, TypeError):
        return {}


def _binary(service: str) -> str:
    for name in _BINARIES[service]:
        if found := shutil.which(name):
            return found
    raise StackError(
        f"monitoring: needs {_BINARIES[service][0]} (Debian package of that name; "
        "tools/install-system-deps.sh installs it)"
    )


def _seconds(value: float) -> str:
    return f"{value:g}s"


def render_prometheus(base: Path, spec: MonitoringSpec, ports: MonitoringPorts) -> dict[str, Any]:
    """The repository's prometheus.yml with this stack's targets, intervals and rule paths."""
    config: dict[str, Any] = yaml.safe_load(base.read_text())
    config["global"] = {
        **config.get("global", {}),
        "scrape_interval": _seconds(spec.scrape_interval_seconds),
        "evaluation_interval": _seconds(spec.evaluation_interval_seconds),
    }
    config["rule_files"] = [str((base.parent / rule).resolve()) for rule in config["rule_files"]]
    config["alerting"] = {
        "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports.alertmanager}"]}]}]
    }
    targets = {
        "fleetflow": [f"127.0.0.1:{ports.exporter}"],
        "node": [f"127.0.0.1:{ports.node_exporter}", *spec.worker_machines],
    }
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    return config


def render_alertmanager(
    base: Path, spec: MonitoringSpec, alerts: AlertSettings, directory: Path
) -> dict[str, Any]:
    """The repository's alertmanager.yml whose receiver sends to fleetflow's alert channels
    (FLEETFLOW_ALERT_*). The SMTP password and the Slack URL go to owner-only files beside
    it, read by Alertmanager; the webhook URL has to be in the file itself (0.25 reads it
    nowhere else), which is therefore owner-only too."""
    config: dict[str, Any] = yaml.safe_load(base.read_text())
    if spec.group_wait_seconds is not None:
        config["route"]["group_wait"] = _seconds(spec.group_wait_seconds)
    receiver: dict[str, Any] = {"name": config["route"]["receiver"]}
    if alerts.smtp_host and alerts.email_to:
        email: dict[str, Any] = {
            "to": alerts.email_to,
            "from": alerts.email_from,
            "smarthost": f"{alerts.smtp_host}:{alerts.smtp_port}",
            # Port 465 (smtp_security ssl) is implicit TLS to Alertmanager, whatever this says.
            "require_tls": alerts.smtp_security == "starttls",
            "send_resolved": False,  # one message per incident, as the automations send
            "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.description }}\n\n{{ end }}",  # noqa: E501
        }
        if alerts.smtp_user:
            email["auth_username"] = alerts.smtp_user
        if alerts.smtp_password:
            password = directory / "smtp-password"
            write_private(password, alerts.smtp_password.get_secret_value())
            email["auth_password_file"] = str(password)
        receiver["email_configs"] = [email]
    if alerts.webhook_url:
        receiver["webhook_configs"] = [
            {"url": alerts.webhook_url.get_secret_value(), "send_resolved": True}
        ]
    if alerts.slack_url:
        slack_url = directory / "slack-url"
        write_private(slack_url, alerts.slack_url.get_secret_value())
        receiver["slack_configs"] = [{"api_url_file": str(slack_url), "send_resolved": True}]
    config["receivers"] = [
        receiver if r["name"] == receiver["name"] else r for r in config["receivers"]
    ]
    return config


def monitoring_up(
    stack_dir: Path,
    project_dir: Path,
    config: StackConfig,
    running: list[ServiceProcess],
    env: dict[str, str],
) -> tuple[list[ServiceProcess], list[ServiceProcess]]:
    """(`running` minus the monitoring stopped, what was started): the four services start
    together, so a partly running monitoring is stopped and started again."""
    ours = [p for p in running if p.role in MONITORING_ROLES]
    if len(ours) == len(MONITORING_ROLES):
        phase("monitoring: already running, Prometheus at %s", _prometheus(stack_dir))
        return running, []
    stop_all(ours, mark=f"{stack_dir}#none")
    started = start_monitoring(stack_dir, project_dir, config.monitoring, env, AlertSettings())
    phase("monitoring: Prometheus at %s", _prometheus(stack_dir))
    return [p for p in running if p not in ours], started


def _prometheus(stack_dir: Path) -> str:
    return monitoring_urls(stack_dir).get("prometheus", "(unknown)")


def forget_monitoring(stack_dir: Path) -> None:
    """Delete what holds channel secrets and the ports of a stopped monitoring."""
    directory = _directory(stack_dir)
    for name in (*_SECRET_FILES, _STATE):
        (directory / name).unlink(missing_ok=True)


def start_monitoring(
    stack_dir: Path,
    project_dir: Path,
    spec: MonitoringSpec,
    env: dict[str, str],
    alerts: AlertSettings,
) -> list[ServiceProcess]:
    """Render the configurations and start the four services; on failure stop them."""
    directory = _directory(stack_dir)
    forget_monitoring(stack_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = project_dir / "deployments" / "monitoring"
    ports = MonitoringPorts.fresh()
    prometheus_yml = directory / "prometheus.yml"
    prometheus_yml.write_text(
        yaml.safe_dump(render_prometheus(base / "prometheus.yml", spec, ports))
    )
    write_private(
        directory / "alertmanager.yml",
        yaml.safe_dump(render_alertmanager(base / "alertmanager.yml", spec, alerts, directory)),
    )
    logs = stack_dir / "logs"
    started: list[ServiceProcess] = []
    try:
        for role, argv, ready_url in _commands(directory, spec, ports):
            process = spawn(role, role, argv, env=env, log=logs / f"{role}.log", cwd=directory)
            started.append(process)
            _wait_ready(process, ready_url)
    except BaseException:
        stop_all(started, mark=f"{stack_dir}#none")
        forget_monitoring(stack_dir)
        raise
    (directory / _STATE).write_text(json.dumps(asdict(ports)) + "\n")
    return started


def _commands(
    directory: Path, spec: MonitoringSpec, ports: MonitoringPorts
) -> list[tuple[str, list[str], str]]:
    """(role, argv, the URL that answers 200 once it is ready), in start order."""
    host = "127.0.0.1"
    fleetflow = str(Path(sys.executable).parent / "fleetflow")
    prometheus, alertmanager = f"{host}:{ports.prometheus}", f"{host}:{ports.alertmanager}"
    return [
        ("node-exporter",
         [_binary("node-exporter"), f"--web.listen-address={host}:{ports.node_exporter}"],
         f"http://{host}:{ports.node_exporter}/metrics"),
        ("exporter",
         [fleetflow, "exporter", "--address", host, "--port", str(ports.exporter),
          "--interval", f"{spec.exporter_interval_seconds:g}"],
         f"http://{host}:{ports.exporter}/metrics"),
        ("alertmanager",
         [_binary("alertmanager"), f"--config.file={directory / 'alertmanager.yml'}",
          f"--storage.path={directory / 'alertmanager-data'}",
          f"--web.listen-address={alertmanager}",
          # No gossip: one Alertmanager (by default it also listens on 0.0.0.0:9094).
          "--cluster.listen-address="],
         f"http://{alertmanager}/-/ready"),
        ("prometheus",
         [_binary("prometheus"), f"--config.file={directory / 'prometheus.yml'}",
          f"--storage.tsdb.path={directory / 'prometheus-data'}",
          f"--storage.tsdb.retention.time={spec.retention_days:g}d",
          f"--web.listen-address={prometheus}", f"--web.external-url=http://{prometheus}/"],
         f"http://{prometheus}/-/ready"),
    ]  # fmt: skip


def _wait_ready(
    process: ServiceProcess, url: str, get: Callable[[str], bool] | None = None
) -> None:
    answers = get or _answers
    deadline = time.monotonic() + _START_SECONDS
    while not answers(url):
        if not process.alive():
            raise StackError(f"{process.role} exited:\n{tail_file(Path(process.log))}")
        if time.monotonic() > deadline:
            raise StackError(f"{process.role} not ready at {url} after {_START_SECONDS:.0f} s")
        time.sleep(0.3)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
