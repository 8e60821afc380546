"""A Prefect server (PostgreSQL or SQLite), its work pool and local process workers."""

from __future__ import annotations

import json
import logging
import os
import secrets
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleetflow._prefect import LEASE_STORAGE_FILESYSTEM
from fleetflow._progress import phase, step
from fleetflow.access import AccessStore
from fleetflow.access._locate import ACCESS_DB_FILE
from fleetflow.engine.secrets import write_private
from fleetflow.engine.sweep import sweep_stale_run_dirs
from fleetflow.exceptions import StackError
from fleetflow.launcher.client import SOCKET_VARIABLE
from fleetflow.ops._stackfile import AUTH_FILE, STATE_FILE
from fleetflow.settings import get_settings
from fleetflow.stack._config import StackConfig, WorkerSpec
from fleetflow.stack._control import ControlPlane, answering, scaled_env
from fleetflow.stack._database import (
    database_secrets,
    database_url,
    ensure_database,
    masked,
    migrate,
)
from fleetflow.stack._gateway import (
    Tls,
    answers,
    free_loopback_port,
    port_open,
    start_gateway,
    wait_answering,
)
from fleetflow.stack._monitoring import forget_monitoring, monitoring_up, monitoring_urls
from fleetflow.stack._pool import apply_work_pool, worker_states
from fleetflow.stack._procs import MARK_VARIABLE, ServiceProcess, spawn, stop_all, tail_file

__all__ = ["Stack", "StackStatus"]

log = logging.getLogger(__name__)
_SERVER_START_SECONDS = 180.0
_WORKER_ONLINE_SECONDS = 90.0
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the final NUL
# Where a database URL or its parts live; workers (and the runs they start) get none.
_DATABASE_VARIABLES = (
    "FLEETFLOW_DATABASE_URL",
    "PREFECT_API_DATABASE_",
    "PREFECT_SERVER_DATABASE_",
)


@dataclass(frozen=True)
class StackStatus:
    api_url: str
    database: str
    server_healthy: bool
    processes: list[tuple[ServiceProcess, bool]]
    workers: dict[str, str] = field(default_factory=dict)  # name -> Prefect's ONLINE/OFFLINE
    auth_source: str = ""  # a shell expression giving the credentials, never the credentials
    monitoring: dict[str, str] = field(default_factory=dict)  # service -> its URL

    @property
    def up(self) -> bool:
        return self.server_healthy and all(alive for _, alive in self.processes)


class Stack:
    """`up`, `status` and `down` of the services one machine runs, state in `directory`."""

    def __init__(
        self,
        directory: Path,
        project_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 4200,
        database: str | None = None,
        server_url: str | None = None,
        auth: str | None = None,
        database_label: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        self.directory = directory.resolve()
        # A server elsewhere: this machine only runs workers (and launchers) for it.
        self.server_url = server_url.rstrip("/") if server_url else None
        self.project_dir = project_dir.resolve()
        self.host, self.port = host, port
        self.database = database_url(database) if database else None
        # What a running stack's state says its server runs on, when no URL is given: a
        # status from a new shell must not report SQLite for a server on PostgreSQL.
        self._remembered_database = database_label if database is None else None
        self._state_file = self.directory / STATE_FILE
        self.auth_file = self.directory / AUTH_FILE
        self._auth = auth  # read or generated once, then kept: auth() is called in loops
        self._auth_given = auth is not None
        self.tls = tls.checked() if tls else None
        # The server behind the gateway: loopback, a port chosen when it starts.
        self._internal_port = self._remembered_internal_port()

    @property
    def api_url(self) -> str:
        if self.server_url:
            return self.server_url if self.server_url.endswith("/api") else f"{self.server_url}/api"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}/api"

    @property
    def internal_api_url(self) -> str:
        """Where this machine's workers and the stack itself reach the server: past the
        gateway, with the internal credential (a remote server: its public URL)."""
        if self.server_url or self._internal_port is None:
            return self.api_url
        return f"http://127.0.0.1:{self._internal_port}/api"

    @property
    def _verify(self) -> ssl.SSLContext | bool:
        """What the stack's own health checks trust: its certificate, else the one the
        Prefect client is told to (a server elsewhere behind TLS), else the system's."""
        if self.tls:
            return self.tls.trust()
        cafile = os.environ.get("PREFECT_API_SSL_CERT_FILE")
        return ssl.create_default_context(cafile=cafile) if cafile else True

    @property
    def _home(self) -> Path:
        """The server's PREFECT_HOME (its SQLite database when no URL is given)."""
        return self.directory / "home"

    @property
    def database_label(self) -> str:
        if self.server_url:
            return "(remote server)"
        if self.database is None and self._remembered_database:
            return self._remembered_database
        if self.database is None:
            return f"sqlite:{self._home / 'prefect.db'}"
        return masked(self.database)

    # -- credentials ---------------------------------------------------------------------

    def auth(self) -> str:
        """The API's user:password: given, else the stack's file (made on first need)."""
        if self._auth:
            return self._auth
        if self.auth_file.exists():
            self._auth = self.auth_file.read_text().strip()
            return self._auth
        if self.server_url:
            raise StackError(
                f"the server at {self.server_url} wants credentials: set FLEETFLOW_API_AUTH "
                "to its user:password"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        credentials = f"fleetflow:{secrets.token_urlsafe(24)}"
        write_private(self.auth_file, credentials + "\n")
        self._auth = credentials
        return credentials

    def _keep_given_auth(self) -> None:
        """Keep credentials given in the environment in the stack's private file, so that
        commands in another shell (status, history, run) find them without the variable."""
        if not self._auth_given:
            return
        if self.auth_file.exists() and self.auth_file.read_text().strip() == self.auth():
            return
        self.auth_file.unlink(missing_ok=True)
        write_private(self.auth_file, self.auth() + "\n")

    # -- state -------------------------------------------------------------------------

    def _remembered_internal_port(self) -> int | None:
        try:
            port = json.loads(self._state_file.read_text()).get("internal_port")
        except (OSError, ValueError, AttributeError):
            return None
        return int(port) if isinstance(port, int) else None

    def _load(self) -> list[ServiceProcess]:
        try:
            state = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise StackError(f"unreadable stack state {self._state_file}: {exc}") from exc
        return [ServiceProcess(**entry) for entry in state["processes"]]

    def _save(self, processes: list[ServiceProcess]) -> None:
        state = {
            "api_url": self.api_url,
            "host": self.host,
            "port": self.port,
            "internal_port": self._internal_port,
            "tls_cert": str(self.tls.cert) if self.tls else None,
            "tls_key": str(self.tls.key) if self.tls else None,
            "server_url": self.server_url,
            "database": self.database_label,
            "processes": [p.to_json() for p in processes],
        }
        self._state_file.write_text(json.dumps(state, indent=2) + "\n")

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_DATABASE")}
        env.update(
            PREFECT_HOME=str(self._home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            FLEETFLOW_PROJECT_DIR=str(self.project_dir),
            PYTHONUNBUFFERED="1",
        )
        env[MARK_VARIABLE] = str(self.directory)
        env.update(extra)
        return env

    def _worker_env(self, extra: dict[str, str]) -> dict[str, str]:
        """The environment minus the database: workers talk to the API only, and every
        flow run inherits its worker's environment (so a playbook could read it)."""
        secrets = database_secrets(self.database)
        env = {
            key: value
            for key, value in self._env({}).items()
            if not key.startswith(_DATABASE_VARIABLES)
            and value not in secrets.exact
            and not any(part in value for part in secrets.inside)
        }
        env.update(extra)  # ours, checked by the tests: never a database setting
        return env

    def _server_env(self, config: StackConfig) -> dict[str, str]:
        extra = {
            **config.retention.server_env(),
            "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
            # Leases of concurrency slots (host locks, deployment limits) on disk, in
            # PREFECT_HOME: the default keeps them in memory, so a server restart lost them
            # while their slots stayed taken, and every later run waited forever.
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE_FILESYSTEM,
            # A run waiting for host locks asks again after at most this long (default 30 s).
            "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "5",
            "PREFECT_SERVER_API_AUTH_STRING": self.auth(),
            "PREFECT_API_AUTH_STRING": self.auth(),
            # What /ui-settings tells the browser: Prefect derives it from its own port
            # setting, not from `server start --port`, so a stack off 4200 had no UI.
            "PREFECT_UI_API_URL": self.api_url,
        }
        if self.database is not None:
            # Through the environment only: a password in argv would show in `ps`.
            extra["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database.render_as_string(
                hide_password=False
            )
        return self._env(extra)

    # -- up ------------------------------------------------------------------------------

    def up(self, config: StackConfig) -> StackStatus:
        """Start what is not running yet; on failure stop what this call started."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._keep_given_auth()
        running = [p for p in self._load() if p.alive()]
        started: list[ServiceProcess] = []
        try:
            started += self._server_up(config, running)
            self._save(running + started)
            if not self.server_url:  # the server's own stack owns the pool's settings
                apply_work_pool(
                    self.internal_api_url, self.auth(), config.work_pool, config.warm_launcher
                )
                phase("work pool %s: applied", config.work_pool.name)
            alive_workers = {p.name for p in running if p.role == "worker"}
            new_workers = [w for w in config.workers if w.name not in alive_workers]
            for worker in new_workers:
                phase("worker %s: starting", worker.name)
                started += self._start_worker(config, worker)
                self._save(running + started)
            self._wait_workers_online(config.work_pool.name, [w.name for w in new_workers])
            if config.monitoring.enabled:
                env = self._worker_env(
                    {
                        "PREFECT_API_URL": self.internal_api_url,
                        "PREFECT_API_AUTH_STRING": self.auth(),
                    }
                )
                running, more = monitoring_up(
                    self.directory, self.project_dir, config, running, env
                )
                started += more
                self._save(running + started)
        except BaseException:
            stop_all(started, mark=f"{self.directory}#none")
            self._save(running)
            raise
        return self.status(config.work_pool.name)

    def _server_up(
        self, config: StackConfig, running: list[ServiceProcess]
    ) -> list[ServiceProcess]:
        """The server this stack uses: elsewhere, already running, or started now."""
        if self.server_url:
            if not self.healthy():
                raise StackError(f"no Prefect server answers at {self.api_url}")
            phase("server: %s answers; this machine runs workers only", self.api_url)
            return []
        gateway_running = any(p.role == "gateway" for p in running)
        if not gateway_running and port_open(self.host, self.port):
            raise StackError(f"{self.host}:{self.port} is already in use; choose --port")
        started = []
        if config.control_plane.scaled:
            started += self._control_plane_up(config)
        elif any(p.role == "server" for p in running):
            phase("server: already running at %s", self.internal_api_url)
        else:
            self._remembered_database = None  # a new server: on the database given now
            started.append(self._start_server(config))
        if not gateway_running:
            try:
                started.append(self._start_gateway())
            except BaseException:
                stop_all(started, mark=f"{self.directory}#none")
                raise
        return started

    def _control_plane_up(self, config: StackConfig) -> list[ServiceProcess]:
        """The API replicas, services and balancer that are not running (all on a first
        start, after the database is created and migrated)."""
        if self.database is None:
            raise StackError("a scaled control plane needs PostgreSQL: set FLEETFLOW_DATABASE_URL")
        self.auth()
        self._internal_port = self._internal_port or free_loopback_port()
        known = self._load()
        env = {**self._server_env(config), **scaled_env(config.control_plane, self.directory)}
        if not any(p.role == "api" and p.alive() for p in known):
            if ensure_database(self.database):
                phase("database %s created", self.database.database)
            self._migrate(env)
        phase("control plane: %d API replicas, %d services behind %s",
              config.control_plane.api_replicas, config.control_plane.services,
              self.internal_api_url)  # fmt: skip
        plane = ControlPlane(config.control_plane, self.directory, self._prefect, env)
        return plane.up(known, self._internal_port)

    def _start_gateway(self) -> ServiceProcess:
        store = self._access_store_url()
        access = AccessStore(store)
        try:
            access.create()
        finally:
            access.close()
        phase("gateway: starting at %s (users and roles in %s)", self.api_url, access.label)
        started = time.monotonic()
        gateway = start_gateway(
            upstream=self.internal_api_url.removesuffix("/api"), auth_file=self.auth_file,
            host=self.host, port=self.port, tls=self.tls, env=self._env({}), store_url=store,
            log=self.directory / "logs" / "gateway.log", cwd=self.directory,
            health_url=f"{self.api_url}/health",
        )  # fmt: skip
        phase("gateway: answering after %.1f s", time.monotonic() - started)
        return gateway

    def _access_store_url(self) -> str:
        if self.database is not None:
            return self.database.render_as_string(hide_password=False)
        return f"sqlite:///{self.directory / ACCESS_DB_FILE}"

    def _prefect(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "prefect"), *args]

    def _start_server(self, config: StackConfig) -> ServiceProcess:
        self.auth()  # the internal credential exists before the server and gateway read it
        self._internal_port = self._internal_port or free_loopback_port()
        if port_open("127.0.0.1", self._internal_port):
            # A restarted server must come back where the running gateway and workers
            # reach it; another process took its port in between.
            raise StackError(
                f"the server's port 127.0.0.1:{self._internal_port} is taken by another "
                "process: free it, or `fleetflow stack down` and up again"
            )
        env = self._server_env(config)
        if self.database is not None and ensure_database(self.database):
            phase("database %s created", self.database.database)
        self._migrate(env)
        started = time.monotonic()
        phase("server: starting at %s (behind the gateway)", self.internal_api_url)
        server = spawn(
            "server", "prefect-server",
            self._prefect("server", "start", "--host", "127.0.0.1", "--port",
                          str(self._internal_port)),
            env=env, log=self.directory / "logs" / "server.log", cwd=self.directory,
        )  # fmt: skip
        wait_answering(server, f"{self.internal_api_url}/health", _SERVER_START_SECONDS)
        phase("server: healthy after %.1f s", time.monotonic() - started)
        return server

    def _migrate(self, env: dict[str, str]) -> None:
        migrate(self.database, self._home / "prefect.db", self._prefect, env, self.database_label)

    def _start_worker(self, config: StackConfig, worker: WorkerSpec) -> list[ServiceProcess]:
        swept = sweep_stale_run_dirs({Path(tempfile.gettempdir()), Path("/tmp"), *self._run_dirs()})
        if swept:
            log.info("removed %d directories left by killed runs: %s", len(swept), swept)
        argv = self._prefect(
            "worker", "start", "--pool", config.work_pool.name,
            "--name", worker.name, "--type", "process",
        )  # fmt: skip
        for queue in worker.queues:
            argv += ["--work-queue", queue]
        bin_dir = str(Path(sys.executable).parent)
        env = self._worker_env(
            {
                "PREFECT_API_URL": self.internal_api_url,
                "PREFECT_API_AUTH_STRING": self.auth(),
                "PREFECT_WORKER_QUERY_SECONDS": str(config.worker_poll_seconds),
                "FLEETFLOW_WORKER_NAME": worker.name,
                # Heartbeats let fleetflow/zombie-runs see a run whose machine died.
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
                # Workers and their runs ride out a server restart: a failed request is
                # retried with backoff for about 4 min (Prefect's default 5: about 1 min,
                # too short for a restart on a busy machine; a log batch is then lost).
                "PREFECT_CLIENT_MAX_RETRIES": "7",
                # fleetflow-engine, the pool's run command, comes from this virtualenv.
                "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            }
        )
        logs = self.directory / "logs"
        started = []
        if config.warm_launcher:
            sock = self.directory / f"launcher-{worker.name}.sock"
            if len(str(sock).encode()) > _UNIX_PATH_MAX:
                raise StackError(
                    f"the warm launcher's socket {sock} is longer than a unix socket path "
                    f"may be ({_UNIX_PATH_MAX} bytes): use a shorter FLEETFLOW_STACK_DIR"
                )
            env[SOCKET_VARIABLE] = str(sock)
            # Started as a module (-m), not imported: see fleetflow.launcher.server.
            launch = [sys.executable, "-m", "fleetflow.launcher.server", str(sock)]
            launcher = spawn(
                "launcher", worker.name, launch,
                env=env, log=logs / f"launcher-{worker.name}.log", cwd=self.project_dir,
            )  # fmt: skip
            started.append(launcher)
            self._wait_socket(launcher, sock)
        started.append(
            spawn("worker", worker.name, argv, env=env, log=logs / f"worker-{worker.name}.log",
                  cwd=self.project_dir)
        )  # fmt: skip
        return started

    @staticmethod
    def _wait_socket(launcher: ServiceProcess, sock: Path) -> None:
        deadline = time.monotonic() + _WORKER_ONLINE_SECONDS
        while not sock.exists():
            if not launcher.alive() or time.monotonic() > deadline:
                raise StackError(f"warm launcher did not start:\n{tail_file(Path(launcher.log))}")
            time.sleep(0.1)

    def _wait_workers_online(self, pool: str, names: list[str]) -> None:
        deadline = time.monotonic() + _WORKER_ONLINE_SECONDS
        shown = -1
        while names and time.monotonic() < deadline:
            states = worker_states(self.internal_api_url, self.auth(), pool)
            online = sum(states.get(name) == "ONLINE" for name in names)
            if online != shown:
                step("workers online", online, len(names))
                shown = online
            if online == len(names):
                return
            for process in self._load():
                if process.role == "worker" and process.name in names and not process.alive():
                    raise StackError(
                        f"worker {process.name} exited:\n{tail_file(Path(process.log))}"
                    )
            time.sleep(0.5)
        if names:
            raise StackError(f"workers {names} did not come online in {_WORKER_ONLINE_SECONDS} s")

    @staticmethod
    def _run_dirs() -> list[Path]:
        run_dir = get_settings().run_dir
        return [run_dir] if run_dir else []

    # -- status / down -------------------------------------------------------------------

    def healthy(self) -> bool:
        """Whether the stack answers where users reach it (through the gateway)."""
        return answers(f"{self.api_url}/health", self._verify)

    def status(self, pool: str = "fleetflow") -> StackStatus:
        processes = [(p, p.alive() and answering(p)) for p in self._load()]
        healthy = self.healthy()
        workers = worker_states(self.internal_api_url, self.auth(), pool) if healthy else {}
        source = "$FLEETFLOW_API_AUTH" if self._auth_given else f"$(cat {self.auth_file})"
        return StackStatus(
            self.api_url, self.database_label, healthy, processes, workers, auth_source=source,
            monitoring=monitoring_urls(self.directory),
        )  # fmt: skip

    def down(self) -> None:
        """Stop workers (and their flow runs), then the server; verify nothing is left."""
        processes = self._load()
        workers = [p for p in processes if p.role == "worker"]
        survivors = stop_all(workers, mark=f"{self.directory}#workers")
        survivors += stop_all(processes, mark=str(self.directory))
        if survivors:
            raise StackError(f"processes survived SIGKILL: {sorted(set(survivors))}")
        forget_monitoring(self.directory)
        self._state_file.unlink(missing_ok=True)
