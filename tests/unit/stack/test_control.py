"""The scaled control plane's settings and HAProxy configuration, without starting them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from fleetflow.stack._config import ControlPlaneSpec, StackConfig
from fleetflow.stack._control import haproxy_config, scaled_env
from fleetflow.stack._procs import ServiceProcess


def test_the_default_is_the_single_process_server() -> None:
    assert not StackConfig().control_plane.scaled


@pytest.mark.parametrize(
    "spec",
    [
        {"api_replicas": 2, "services": 1},  # no Redis
        {"api_replicas": 2, "redis_url": "redis://127.0.0.1:6379/0"},  # nobody runs services
        {"services": 1, "redis_url": "http://127.0.0.1:6379"},
        {"api_replicas": 2, "services": 1, "redis_url": "redis://h:1/0\n--evil"},
        {"api_replicas": 9, "services": 1, "redis_url": "redis://h:1/0"},
        {"api_replicas": 2, "services": 1, "redis_url": "redis://h:1/0", "extra": 1},
    ],
)
def test_a_scaled_plane_needs_redis_and_services(spec: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ControlPlaneSpec.model_validate(spec)


def test_every_server_process_gets_prefects_redis_settings(tmp_path: Path) -> None:
    spec = ControlPlaneSpec(api_replicas=2, services=1, redis_url="redis://127.0.0.1:6379/3")
    env = scaled_env(spec, tmp_path / "a")
    assert (
        env["PREFECT_MESSAGING_BROKER"]
        == env["PREFECT_MESSAGING_CACHE"]
        == ("prefect_redis.messaging")
    )
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == "prefect_redis.lease_storage"
    assert env["PREFECT_SERVER_DOCKET_URL"] == env["PREFECT_REDIS_MESSAGING_URL"] == spec.redis_url
    # Two stacks on one Redis keep their docket keys apart.
    other = scaled_env(spec, tmp_path / "b")["PREFECT_SERVER_DOCKET_NAME"]
    assert env["PREFECT_SERVER_DOCKET_NAME"] != other


def test_haproxy_checks_each_replica_and_haproxy_accepts_the_file(tmp_path: Path) -> None:
    text = haproxy_config(4711, {"api-2": 4713, "api-1": 4712})
    assert "bind 127.0.0.1:4711" in text
    assert "server api-1 127.0.0.1:4712 check\n    server api-2 127.0.0.1:4713 check" in text
    assert "option httpchk GET /api/health" in text and "retry-on conn-failure" in text
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        pytest.skip("haproxy is not installed (tools/install-system-deps.sh installs it)")
    (tmp_path / "haproxy.cfg").write_text(text)
    check = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_state_file_written_before_ports_were_kept_still_loads() -> None:
    old = {"role": "server", "name": "prefect-server", "pid": 1, "start_ticks": 1, "log": "x"}
    assert ServiceProcess(**old).port == 0  # type: ignore[arg-type]
