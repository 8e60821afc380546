"""A scaled control plane: several Prefect API servers behind HAProxy, their background
services in processes of their own, coordinated through Redis (Prefect's documented
"scale self-hosted Prefect" setup, issue #23).

    gateway (public port) -> HAProxy (the stack's loopback port) -> api-1 .. api-N
                                                                   (prefect server start
                                                                    --no-services)
    services-1 .. services-M (prefect server services start)
    all of them: the stack's PostgreSQL, and Redis for messaging, the causal ordering of
    events, concurrency leases (host locks) and docket (the services' task queue)

Replicas start one after the other: started together, two registered Prefect's block
types at once and one died on the unique constraint. Each keeps its loopback port across
restarts (stack.json), so HAProxy, whose backends are fixed, takes a restarted replica
back as soon as its health check passes (`GET /api/health`, every second).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleetflow.exceptions import StackError
from fleetflow.stack._config import ControlPlaneSpec
from fleetflow.stack._gateway import answers, free_loopback_port, port_open, wait_answering
from fleetflow.stack._procs import ServiceProcess, spawn, tail_file

__all__ = ["ControlPlane", "answering", "haproxy_config", "scaled_env"]

_START_SECONDS = 180.0
_HAPROXY = """\
# Written by `fleetflow stack up`: the stack's API replicas behind one loopback address.
global
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    # A replica that refuses the connection (dead, restarting): try another one, every
    # retry on another replica. A request that reached a dying replica and got nothing
    # back is retried only if it is a GET or HEAD (below): a POST it may have acted on is
    # not sent twice (Prefect's clients retry a 502 themselves).
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response junk-response response-timeout 502 503 504
frontend api
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance leastconn
    http-request disable-l7-retry unless {{ method GET HEAD }}
    option httpchk GET /api/health
    http-check expect status 200
    # A connection error marks a replica down at once, not after two failed checks.
    default-server inter 1s fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down
{servers}
"""


def haproxy_config(port: int, replicas: dict[str, int]) -> str:
    """HAProxy's configuration: `port` in front of `replicas` ({name: loopback port})."""
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{replica} check" for name, replica in sorted(replicas.items())
    )
    return _HAPROXY.format(port=port, servers=servers)


def scaled_env(spec: ControlPlaneSpec, directory: Path) -> dict[str, str]:
    """Settings every server process of a scaled stack shares (Redis in place of the single
    server's in-memory messaging and on-disk leases)."""
    assert spec.redis_url is not None  # the spec's validator: a scaled plane has one
    # Keys of several stacks on one Redis must not mix: docket's are named after this.
    name = "fleetflow-" + hashlib.sha256(str(directory).encode()).hexdigest()[:12]
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": spec.redis_url,
        "PREFECT_SERVER_DOCKET_URL": spec.redis_url,
        "PREFECT_SERVER_DOCKET_NAME": name,
    }


@dataclass
class ControlPlane:
    """Starts what is missing of a scaled control plane; the stack saves what it returns."""

    spec: ControlPlaneSpec
    directory: Path
    prefect: Callable[..., list[str]]  # argv of the prefect CLI with these arguments
    env: dict[str, str]

    def up(self, running: list[ServiceProcess], balancer_port: int) -> list[ServiceProcess]:
        alive = {p.name: p for p in running if p.alive()}
        ports = {p.name: p.port for p in running if p.role == "api" and p.port}
        started: list[ServiceProcess] = []
        for number in range(1, self.spec.api_replicas + 1):
            name = f"api-{number}"
            ports[name] = ports.get(name) or free_loopback_port()
            if name not in alive:
                started.append(self._replica(name, ports[name]))
        for number in range(1, self.spec.services + 1):
            name = f"services-{number}"
            if name not in alive:
                started.append(self._services(name))
        if "balancer" not in alive:
            started.append(self._balancer(balancer_port, ports))
        return started

    def _replica(self, name: str, port: int) -> ServiceProcess:
        if port_open("127.0.0.1", port):
            raise StackError(f"{name}'s port 127.0.0.1:{port} is taken by another process")
        argv = self.prefect("server", "start", "--no-services", "--host", "127.0.0.1",
                            "--port", str(port))  # fmt: skip
        replica = self._spawn("api", name, argv, port)
        self._wait(replica, f"http://127.0.0.1:{port}/api/health")
        return replica

    def _services(self, name: str) -> ServiceProcess:
        services = self._spawn("services", name, self.prefect("server", "services", "start"))
        # It has no port to ask: alive after a few seconds means it connected and runs.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not services.alive():
                raise StackError(f"{name} exited:\n{tail_file(Path(services.log))}")
            time.sleep(0.5)
        return services

    def _balancer(self, port: int, replicas: dict[str, int]) -> ServiceProcess:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        config = self.directory / "haproxy.cfg"
        config.write_text(haproxy_config(port, replicas))
        balancer = self._spawn("balancer", "balancer", [haproxy, "-f", str(config), "-db"], port)
        self._wait(balancer, f"http://127.0.0.1:{port}/api/health")
        return balancer

    def _spawn(self, role: str, name: str, argv: list[str], port: int = 0) -> ServiceProcess:
        log = self.directory / "logs" / f"{name}.log"
        return spawn(role, name, argv, env=self.env, log=log, cwd=self.directory, port=port)

    def _wait(self, process: ServiceProcess, health: str) -> None:
        wait_answering(process, health, _START_SECONDS)


def answering(process: ServiceProcess) -> bool:
    """An API replica or the balancer is up when it answers, not merely alive."""
    if process.role not in ("api", "balancer") or not process.port:
        return True
    return answers(f"http://127.0.0.1:{process.port}/api/health", True)
