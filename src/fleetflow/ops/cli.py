"""The ``fleetflow`` command: what Prefect and Ansible don't do themselves."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fleetflow.exceptions import FleetflowError
from fleetflow.ops._access_cli import add_access_commands
from fleetflow.ops._columns import aligned
from fleetflow.ops._errors import api_error_line
from fleetflow.ops._progress import show_progress
from fleetflow.ops._stack_cli import add_stack_command
from fleetflow.ops._target import api_config, prefect_api
from fleetflow.settings import get_settings

_FAULTS = ("cut", "restore", "freeze", "thaw", "kill")


def _lab(args: argparse.Namespace) -> int:
    from fleetflow.lab import Lab, image_info, image_path, lab_of_host

    settings = get_settings()
    host = getattr(args, "host", None)
    # A host names its lab: `lab ssh ux-03` needs no --name.
    name = args.name or (lab_of_host(host, settings) if host else "lab")
    inventory_dir = args.inventory or (settings.project_dir / "inventory" / name)
    lab = Lab(name, inventory_dir=inventory_dir if args.action == "up" else None)
    if args.action == "up":
        started = time.monotonic()
        hosts = lab.up(args.count)
        print(f"lab {lab.name}: {len(hosts)} hosts up in {time.monotonic() - started:.1f} s")
        _print_hosts(lab)
        print(f"inventory: {lab.inventory_path}")
        _print_group_vars(lab)
    elif args.action == "status":
        if args.json:
            print(json.dumps({h: s.value for h, s in lab.status().items()}))
        elif not lab.exists():
            print(f"lab {lab.name} is down")
        else:
            _print_hosts(lab)
            root = image_path(settings.image_dir, settings.lab_debian_suite)
            info = image_info(root) or {}
            size = info.get("size_bytes")
            built = f"{size >> 20} MiB" if isinstance(size, int) else "not built"
            print(f"inventory: {lab.inventory_path}\nimage:     {root} ({built})")
            _print_group_vars(lab)
    elif args.action == "down":
        lab.down()
        print(f"lab {lab.name} is down; its hosts, rules and files are removed")
    elif args.action == "ssh":
        os.execvp("ssh", [*lab.ssh_args(args.host), *args.command])
    else:
        getattr(lab, args.action)(args.host)
        print(f"{args.host}: {lab.status()[args.host].value}")
    return 0


def _automations(args: argparse.Namespace) -> int:
    with prefect_api(get_settings().stack_dir):
        return _apply_automations(args)


def _apply_automations(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client

    from fleetflow.alerts import (
        AlertSettings,
        apply_plan,
        channel_blocks,
        load_specs,
        plan,
        save_channels,
    )

    directory = args.dir or get_settings().project_dir / "deployments" / "automations"
    specs = load_specs(directory)
    blocks = channel_blocks(AlertSettings())
    if not args.dry_run:
        save_channels(blocks)
    with get_client(sync_client=True) as client:
        todo = plan(client, specs)
        for line in todo.lines():
            print(line)
        if todo.silent and not args.no_channel:
            print(
                f"fleetflow: warning: {len(todo.silent)} automations would alert no one (no alert "
                "channel configured): set FLEETFLOW_ALERT_* or make the blocks, or pass "
                "--no-channel to create them anyway; nothing applied",
                file=sys.stderr,
            )
            return 1
        if args.dry_run:
            print(f"dry run: {todo.changes} changes not applied")
        else:
            apply_plan(client, todo)
            print(f"{todo.changes} changes applied; channels from environment: {sorted(blocks)}")
        if todo.silent:
            print(f"{len(todo.silent)} automations alert nowhere (--no-channel)")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from fleetflow.ops.deploy import deploy, tighten

    settings = get_settings()
    project = settings.project_dir
    if args.tighten_only:
        lines = tighten(project / "prefect.yaml")
    else:
        remote = args.remote or settings.git_remote
        lines = deploy(project, remote=remote, working_tree=args.working_tree,
                       ssh_key_secret=args.ssh_key_secret or "")  # fmt: skip
    for line in lines:
        print(line)
    print(f"{len(lines)} deployments: unknown parameters and other inventories refused")
    if args.working_tree:
        print(
            "WARNING: deployed the working tree: each worker runs the files on its own disk "
            "(FLEETFLOW_PROJECT_DIR), committed or not; every run is recorded as dirty",
            file=sys.stderr,
        )
    return 0


def _check(args: argparse.Namespace) -> int:
    from fleetflow.ops.check.repository import check_project

    report = check_project(get_settings().project_dir, lint=not args.no_lint)
    for problem in report.problems:
        print(problem)
    errors = len(report.errors)
    print(
        f"{len(report.checked)} checked: {errors} errors, {len(report.problems) - errors} warnings"
    )
    return 1 if errors else 0


def _history(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client

    from fleetflow.ops.history import read_history

    if args.host_name:
        return _host_history(args)
    with prefect_api(get_settings().stack_dir), get_client(sync_client=True) as client:
        records = read_history(client, limit=args.limit, deployment=args.deployment, host=args.host)
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=1))
        return 0
    for r in records:
        where = f"{r.flow}/{r.deployment}" if r.deployment else r.flow
        who = f"by {r.triggered_by:<24} {str(r.approval) if r.approval else '-':<20}"
        print(f"{r.created}  {where:<28} {r.state:<10} {who} {r.name}")
        print(f"    parameters: {json.dumps(r.parameters, sort_keys=True)}")
        print("    hosts: " + (", ".join(f"{h}={s}" for h, s in r.hosts.items()) or "(none)"))
        if r.leftovers:
            found = ", ".join(f"{h}={n}" for h, n in r.leftovers.items())
            print(f"    leftovers of earlier runs (stopped, or the host failed): {found}")
    return 0


def _host_history(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client

    from fleetflow.ops.history import read_host_history

    with prefect_api(get_settings().stack_dir), get_client(sync_client=True) as client:
        records = read_host_history(client, args.host_name, limit=args.limit)
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=1))
        return 0
    rows = [("time", "playbook", "inventory", "outcome", "changed", "commit", "flow run")] + [
        (r.time, r.playbook, r.inventory, r.outcome, str(r.changed), r.content,
         r.flow_run + (f" ({r.attempts} attempts)" if r.attempts > 1 else ""))
        for r in records
    ]  # fmt: skip
    for line in aligned(rows) if records else []:
        print(line)
    if not records:
        print(f"no playbook run on {args.host_name} is on record")
    elif last := next((r for r in records if r.changed and not r.check), None):
        print(f"last changed by commit {last.content} ({last.playbook}, {last.time}, "
              f"{last.flow_run})")  # fmt: skip
    return 0


def _run(args: argparse.Namespace) -> int:
    # Imported here: the other commands' imports must not slow down a trigger.
    from fleetflow.ops.run import Output, parse_parameters, run_deployment

    parameters = parse_parameters(args.param or [], args.params)
    return run_deployment(
        args.deployment,
        parameters,
        follow=args.watch,
        output=Output(out=lambda line: print(line, flush=True),
                      err=lambda line: print(line, file=sys.stderr, flush=True)),
        config=api_config(get_settings().stack_dir),
    )  # fmt: skip


def _exporter(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    with prefect_api(get_settings().stack_dir):
        from fleetflow.metrics import serve

        since = datetime.now(UTC) - timedelta(minutes=args.backfill)
        print(f"serving http://{args.address}:{args.port}/metrics (Prefect API read every "
              f"{args.interval:g} s)", flush=True)  # fmt: skip
        serve(args.address, args.port, args.interval, since=since)
    return 0


def _print_hosts(lab: object) -> None:
    from fleetflow.lab import Lab

    assert isinstance(lab, Lab)
    states = lab.status()
    print(f"  {'HOST':<14} {'ADDRESS':<15} {'PORT':<5} {'GROUP':<6} STATE")
    for host in lab.hosts():
        print(
            f"  {host.name:<14} {host.address:<15} {host.port:<5} {host.group:<6} "
            f"{states[host.name].value}"
        )


def _print_group_vars(lab: object) -> None:
    from fleetflow.lab import Lab

    assert isinstance(lab, Lab)
    group_vars = lab.inventory_dir / "group_vars"
    if group_vars.is_symlink():
        print(f"group_vars: shared with {lab.shared_group_vars} (edit them there)")
    elif not group_vars.exists():
        print(f"group_vars: none: playbooks run with their defaults on lab {lab.name}")


def _add_observability(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`history` and `exporter`: what ran where, and metrics about it."""
    history = commands.add_parser(
        "history", help="runs: trigger, parameters, per-host outcome; or one host's runs"
    )
    history.add_argument(
        "host_name", nargs="?", metavar="HOST",
        help="a host's last runs: playbook, outcome, changed count, time",
    )  # fmt: skip
    history.add_argument("--limit", type=int, default=20, help="runs shown, newest first")
    history.add_argument("--deployment", help="flow/deployment, e.g. site/lab")
    history.add_argument("--host", help="only runs that targeted this host")
    history.add_argument("--json", action="store_true", help="JSON instead of text")
    history.set_defaults(handler=_history)

    exporter = commands.add_parser("exporter", help="Prometheus metrics from the Prefect API")
    exporter.add_argument("--address", default="127.0.0.1", help="default: 127.0.0.1")
    exporter.add_argument("--port", type=int, default=9184, help="default: 9184")
    exporter.add_argument("--interval", type=float, default=15, help="API poll, s (default 15)")
    exporter.add_argument(
        "--backfill", type=float, default=0, metavar="MINUTES",
        help="also count what finished in the last MINUTES (default 0: from now on)",
    )  # fmt: skip
    exporter.set_defaults(handler=_exporter)


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`run`: trigger a deployment from the shell and, with --watch, see it end."""
    run = commands.add_parser(
        "run", help="trigger a deployment over the API (fast); --watch: host lines, table, exit"
    )
    run.add_argument("deployment", metavar="FLOW/DEPLOYMENT", help="e.g. site/lab")
    run.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="a parameter; VALUE is JSON if it parses, else a string (repeatable)",
    )
    run.add_argument("--params", metavar="JSON", help="parameters as one JSON object")
    run.add_argument(
        "--watch", action="store_true", help="follow the run; exit 0 only if it ends Completed"
    )
    run.set_defaults(handler=_run)


_BENCHMARKS = {
    "overhead": "fleetflow's run_playbook in a flow vs plain ansible-playbook, same settings",
    "speed": "fleetflow's defaults vs stock ansible-playbook, each default on its own",
    "events": "events/s from the runner to Prefect logs; ansible's pace with and without",
    "scale": "one run over 200 hosts (time, peak memory, lost events); 20 concurrent runs",
    "trigger": "prefect deployment run -> first playbook event (p50, p90)",
    "lab": "lab up/down times and what 50 hosts cost",
    "gateway": "what the access gateway adds per API request (p50, p99) and to the runs page",
    "checkout": "what the deployments' pull step adds to a run's start (new commit, cached)",
    "guard": "what marking, guarding and fencing hosts (issue #26) add to a run",
}


def _bench(args: argparse.Namespace) -> int:
    files = {"trigger": "trigger_latency", "lab": "lab_up"}
    name = files.get(args.benchmark, args.benchmark)
    script = get_settings().project_dir / "bench" / f"{name}.py"
    if not script.is_file():
        raise FleetflowError(f"{script} not found: run from a fleetflow checkout")
    extra = [a for a in args.options if a != "--"]
    return subprocess.run([sys.executable, str(script), *extra], check=False).returncode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(dest="command", required=True)

    lab = commands.add_parser("lab", help="a fleet of isolated SSH hosts on this machine")
    lab_actions = lab.add_subparsers(dest="action", required=True)
    up = lab_actions.add_parser("up", help="start (or resize) the lab; keeps running hosts")
    up.add_argument("count", nargs="?", type=int, help="number of hosts (default: 5, or as is)")
    up.add_argument("--inventory", type=lambda p: Path(p).resolve(), help="inventory dir to write")
    status = lab_actions.add_parser("status", help="show hosts and their state")
    status.add_argument("--json", action="store_true", help="each host's state as JSON")
    lab_actions.add_parser("down", help="stop every host and remove all the lab created")
    ssh = lab_actions.add_parser("ssh", help="open a shell (or run a command) on a host")
    ssh.add_argument("host", help="a host of the lab, e.g. lab-01")
    ssh.add_argument("command", nargs=argparse.REMAINDER, help="run this instead of a shell")
    for fault in _FAULTS:
        sub = lab_actions.add_parser(fault, help=f"fault injection: {fault} a host")
        sub.add_argument("host", help="a host of the lab, e.g. lab-01")
    for sub in lab_actions.choices.values():
        sub.add_argument("--name", help="lab name (default: lab; for a host: the lab with it)")
    lab.set_defaults(handler=_lab, inventory=None, count=None)

    add_stack_command(commands)

    automations = commands.add_parser("automations", help="alerts kept in the repository")
    automation_actions = automations.add_subparsers(dest="action", required=True)
    apply = automation_actions.add_parser(
        "apply", help="make the server's fleetflow/* automations match the repository"
    )
    apply.add_argument("--dry-run", action="store_true", help="show the changes, apply nothing")
    apply.add_argument("--dir", type=Path, help="default: deployments/automations")
    apply.add_argument(
        "--no-channel", action="store_true",
        help="create automations even when no alert channel is configured (they alert no one)",
    )  # fmt: skip
    automations.set_defaults(handler=_automations)

    _add_observability(commands)
    _add_run(commands)
    add_access_commands(commands)

    bench = commands.add_parser(
        "bench", help="run a benchmark on a lab of its own; writes bench/RESULTS.md",
        description="\n".join(f"{k:<9} {v}" for k, v in _BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    bench.add_argument("benchmark", choices=list(_BENCHMARKS), help="which one (listed above)")
    bench.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's options")
    bench.set_defaults(handler=_bench)

    deploy = commands.add_parser(
        "deploy",
        help="prefect deploy --all, then make every deployment refuse what callers may not send",
    )
    deploy.add_argument(
        "--tighten-only", action="store_true",
        help="only make the server's deployments strict (after deploying them another way)",
    )  # fmt: skip
    deploy.add_argument(
        "--remote", metavar="URL",
        help="git remote the workers fetch the commit from (default: FLEETFLOW_GIT_REMOTE, "
        "else this repository)",
    )  # fmt: skip
    deploy.add_argument(
        "--ssh-key-secret", metavar="BLOCK",
        help="Prefect Secret block holding the remote's SSH deploy key (workers load it to "
        "fetch; only its name is stored)",
    )  # fmt: skip
    deploy.add_argument(
        "--working-tree", action="store_true",
        help="development only: workers run the files on their own disk, committed or not "
        "(runs recorded as dirty) instead of the deployed commit",
    )  # fmt: skip
    deploy.set_defaults(handler=_deploy)

    check = commands.add_parser("check", help="validate the repository without touching hosts")
    check.add_argument("--no-lint", action="store_true", help="skip yamllint and ansible-lint")
    check.set_defaults(handler=_check)
    _verbose_everywhere(parser)
    return parser


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """-v after the subcommand too (`fleetflow lab up -v`). SUPPRESS: a subcommand that
    was not given -v leaves the top-level one as it was."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if "-v" not in sub._option_string_actions:
                    sub.add_argument(
                        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress",
                    )  # fmt: skip
                _verbose_everywhere(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    # One line per API request drowns what -v is for.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    show_progress()  # long steps (stack up, lab up, the image build) say where they are
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except FleetflowError as exc:
        print(f"fleetflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; that is not our failure.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        # A refusal or a server that is not there is the operator's to fix, not a bug:
        # one line saying what to do instead of Prefect's and httpx's tracebacks.
        line = api_error_line(exc)
        if line is None:
            raise
        print(f"fleetflow: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
