"""`fleetflow stack up|status|down`: the stack's services on this machine."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fleetflow.exceptions import ConfigurationError
from fleetflow.ops._stackfile import StackState
from fleetflow.settings import FleetflowSettings, get_settings

if TYPE_CHECKING:
    from fleetflow.stack import StackStatus, Tls

__all__ = ["add_stack_command"]


def add_stack_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stack = commands.add_parser("stack", help="Prefect server, work pool and workers")
    stack_actions = stack.add_subparsers(dest="action", required=True)
    stack_up = stack_actions.add_parser("up", help="start server and workers (keeps running ones)")
    stack_up.add_argument(
        "--worker",
        action="append",
        metavar="NAME=QUEUE[,QUEUE]",
        help="run this worker instead of the config's (repeatable)",
    )
    stack_up.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate")
    stack_up.add_argument("--tls-key", type=Path, help="the certificate's PEM private key")
    stack_actions.add_parser(
        "status", help="server health, processes, workers as Prefect sees them"
    )
    stack_actions.add_parser("down", help="stop workers (and their runs) and the server")
    for sub in stack_actions.choices.values():
        sub.add_argument("--config", type=Path, help="stack file (default: deployments/stack.yaml)")
        sub.add_argument("--port", type=int, help="server port (default: FLEETFLOW_API_PORT, 4200)")
        sub.add_argument("--json", action="store_true", help="status as JSON")
        sub.add_argument(
            "--server-url",
            help="a Prefect server elsewhere (http://host:4200): run only this machine's workers",
        )
    stack.set_defaults(handler=_stack, worker=None)


def _stack(args: argparse.Namespace) -> int:
    from fleetflow.stack import Stack, StackConfig, parse_worker_option

    settings = get_settings()
    # Flags, then FLEETFLOW_* variables, then what the running stack remembers.
    given = settings.model_fields_set
    state = StackState.read(settings.stack_dir)
    host = settings.api_host if state is None or "api_host" in given else state.host
    port = args.port or (settings.api_port if state is None or "api_port" in given else state.port)
    remembered = state is not None and (host, port) == (state.host, state.port)
    secret = settings.database_url
    stack = Stack(
        settings.stack_dir,
        settings.project_dir,
        host=host,
        port=port,
        database=secret.get_secret_value() if secret else None,
        server_url=args.server_url or settings.server_url or (state.server_url if state else None),
        auth=settings.api_auth.get_secret_value() if settings.api_auth else None,
        database_label=state.database if state and remembered else None,
        tls=_tls(args, settings, state if remembered else None),
    )
    config_file = args.config or settings.project_dir / "deployments" / "stack.yaml"
    config = StackConfig.load(config_file) if config_file.exists() else StackConfig()
    if args.worker:
        config = config.with_workers([parse_worker_option(w) for w in args.worker])
    if args.action == "up":
        started = time.monotonic()
        status = stack.up(config)
        if not args.json:
            print(f"stack up in {time.monotonic() - started:.1f} s")
    elif args.action == "down":
        stack.down()
        print("stack is down; no process of it is left")
        return 0
    else:
        status = stack.status(config.work_pool.name)
    if args.json:
        print(json.dumps(_status_json(status)))
    else:
        _print_status(status)
    return 0 if status.up else 1


def _tls(
    args: argparse.Namespace, settings: FleetflowSettings, state: StackState | None
) -> Tls | None:
    from fleetflow.stack import Tls

    cert = getattr(args, "tls_cert", None) or settings.tls_cert
    key = getattr(args, "tls_key", None) or settings.tls_key
    if cert is None and key is None and state is not None and state.tls_cert:
        cert, key = state.tls_cert, state.tls_key
    if (cert is None) != (key is None):
        raise ConfigurationError("HTTPS needs both --tls-cert and --tls-key")
    return Tls(cert, key) if cert and key else None


def _status_json(status: StackStatus) -> dict[str, object]:
    return {
        "api_url": status.api_url,
        "database": status.database,
        "server_healthy": status.server_healthy,
        "processes": [
            {
                "role": p.role,
                "name": p.name,
                "pid": p.pid,
                "alive": alive,
                "log": p.log,
                "address": f"127.0.0.1:{p.port}" if p.port else "",
            }
            for p, alive in status.processes
        ],
        "workers": status.workers,
        "monitoring": status.monitoring,
        "up": status.up,
    }


def _print_status(status: StackStatus) -> None:
    ui = status.api_url.removesuffix("/api")
    print(f"server:   {ui} ({'healthy' if status.server_healthy else 'not answering'})")
    print(f"database: {status.database}")
    for process, alive in status.processes:
        seen = status.workers.get(process.name, "") if process.role == "worker" else ""
        state = "running" if alive else "down"
        where = f"127.0.0.1:{process.port}" if process.port else ""
        print(f"  {process.role:<8} {process.name:<16} pid {process.pid:<8} {state:<7} {where} "
              f"{seen}".rstrip())  # fmt: skip
        print(f"          log: {process.log}")
    for service, url in status.monitoring.items():
        print(f"{service + ':':<15} {url}")
    print(f"use it:   export PREFECT_API_URL={status.api_url}")
    print(f'          export PREFECT_API_AUTH_STRING="{status.auth_source}"')
