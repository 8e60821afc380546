"""`fleetflow deploy`: Prefect's `deploy --all`, then each deployment's parameter schema
made strict on the server, so it refuses what a caller may not send when a run is created.

Prefect builds a deployment's schema from the flow's signature and keeps no more: unknown
parameters pass, and every deployment of a flow accepts every inventory. fleetflow then
sets, per deployment:

- ``additionalProperties: false``: an unknown parameter is refused (409) instead of
  crashing the run later;
- the inventories it may run on: the one its ``parameters.inventory`` in prefect.yaml
  names, or the list under its ``fleetflow: {inventories: [...]}`` key (Prefect ignores
  that key). `playbook/lab` runs on lab only;
- per playbook, the variables it declares (playbooks/params/<name>.yml) and their types;
- a time limit: ``parameters.time_limit`` (the flow's default otherwise) at most
  MAX_TIME_LIMIT, refused above it here and by the schema at trigger time.

The flows check the same again when they start (the API lets a caller skip the server's
schema check), so this is the first line, not the only one.

Which content runs: a deployment runs the commit it was deployed from. `deploy` refuses a
checkout with uncommitted changes (or outside git), checks that the git remote has the
commit (fetching it into this machine's checkout cache, which also warms it for local
workers), and replaces each deployment's pull steps with `fleetflow.ops.checkout.checkout`
at that commit; the deployment's version is the commit. `working_tree=True` keeps
prefect.yaml's pull step instead: each worker runs the files on its own disk, and every run
is recorded as dirty (for development; a bank's deployments should never use it).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleetflow.engine.inventory import resolve_playbook
from fleetflow.engine.source import describe
from fleetflow.engine.variables import load_declaration
from fleetflow.exceptions import ConfigurationError
from fleetflow.ops.checkout import valid_ref, warm

__all__ = [
    "CHECKOUT_STEP",
    "MAX_TIME_LIMIT",
    "DeploymentRules",
    "Pin",
    "deploy",
    "pin_commit",
    "strict_schema",
    "tighten",
]

CHECKOUT_STEP = "fleetflow.ops.checkout.checkout"

MAX_TIME_LIMIT = 24 * 3600


@dataclass(frozen=True)
class DeploymentRules:
    """What prefect.yaml says a deployment may be asked for."""

    name: str
    entrypoint: str
    inventories: tuple[str, ...] = ()
    time_limit: int | None = None
    refs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pin:
    """The commit deployments run, and the remote they fetch it from."""

    repository: str
    commit: str
    ref: str
    ssh_key_secret: str = ""

    def pull_steps(self, rules: DeploymentRules | None) -> list[dict[str, Any]]:
        refs = list(rules.refs) if rules else []
        step: dict[str, Any] = {"repository": self.repository, "commit": self.commit,
                                "ref": self.ref, "refs": refs}  # fmt: skip
        if self.ssh_key_secret:
            step["ssh_key_secret"] = self.ssh_key_secret
        return [{CHECKOUT_STEP: step}]


def load_rules(prefect_yaml: Path) -> list[DeploymentRules]:
    """Each deployment's rules from prefect.yaml; ConfigurationError on a bad one."""
    try:
        data = yaml.safe_load(prefect_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read {prefect_yaml}: {exc}") from exc
    return [_rules(entry) for entry in data.get("deployments") or []]


def _rules(entry: dict[str, Any]) -> DeploymentRules:
    name, entrypoint = str(entry.get("name")), str(entry.get("entrypoint"))
    parameters = entry.get("parameters") or {}
    extra = entry.get("fleetflow") or {}
    inventories = extra.get("inventories") or (
        [parameters["inventory"]] if "inventory" in parameters else []
    )
    limit = parameters.get("time_limit")
    if limit is not None and not (isinstance(limit, int) and 60 <= limit <= MAX_TIME_LIMIT):
        raise ConfigurationError(
            f"deployment {name} ({entrypoint}): time_limit {limit!r} must be 60-"
            f"{MAX_TIME_LIMIT} seconds"
        )
    refs = extra.get("refs") or []
    if not isinstance(refs, list) or not all(
        isinstance(r, str) and valid_ref(r.replace("*", "x")) for r in refs
    ):
        raise ConfigurationError(
            f"deployment {name} ({entrypoint}): fleetflow.refs must be a list of branch or "
            f"tag names (* matches any characters): {refs!r}"
        )
    return DeploymentRules(name, entrypoint, tuple(str(i) for i in inventories), limit, tuple(refs))


def strict_schema(
    schema: dict[str, Any], rules: DeploymentRules | None, project_dir: Path
) -> dict[str, Any]:
    """The deployment's schema refusing unknown parameters, other inventories and, for each
    playbook, the variables it does not declare."""
    strict = copy.deepcopy(schema)
    strict["additionalProperties"] = False
    for part in [strict, *(strict.get("definitions") or {}).values()]:
        _declared_variables(part, project_dir)
    properties = strict.get("properties") or {}
    if rules and rules.inventories and "inventory" in properties:
        known = properties["inventory"].get("enum")
        unknown = [i for i in rules.inventories if known is not None and i not in known]
        if unknown:
            raise ConfigurationError(
                f"deployment {rules.name}: inventories {unknown} are not environments of "
                f"the repository ({', '.join(known or [])})"
            )
        properties["inventory"]["enum"] = list(rules.inventories)
    if "time_limit" in properties:
        properties["time_limit"]["maximum"] = MAX_TIME_LIMIT
    return strict


def _declared_variables(schema: dict[str, Any], project_dir: Path) -> None:
    """Where `playbook` picks a playbook and `extra_vars` sets its variables: for each
    playbook, only what it declares (JSON schema if/then, checked by the server)."""
    properties = schema.get("properties") or {}
    names = (properties.get("playbook") or {}).get("enum")
    if not names or "extra_vars" not in properties:
        return
    rules = []
    for name in names:
        declared = load_declaration(resolve_playbook(name, project_dir)).json_schema()
        rules.append(
            {
                "if": {"properties": {"playbook": {"const": name}}, "required": ["playbook"]},
                "then": {"properties": {"extra_vars": {"anyOf": [{"type": "null"}, declared]}}},
            }
        )
    schema["allOf"] = rules


def tighten(prefect_yaml: Path, pin: Pin | None = None, listed_only: bool = False) -> list[str]:
    """Make the schema of every deployment of the server strict (`listed_only`: of those
    prefect.yaml lists) and, with `pin`, make prefect.yaml's deployments run its commit;
    one line per deployment."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    rules = {(r.name, r.entrypoint): r for r in load_rules(prefect_yaml)}
    lines = []
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            schema = deployment.parameter_openapi_schema
            if not schema:
                continue
            rule = rules.get((deployment.name, str(deployment.entrypoint)))
            if listed_only and rule is None:
                continue  # another repository's: its own deploy made it strict
            update = DeploymentUpdate(
                parameter_openapi_schema=strict_schema(schema, rule, prefect_yaml.parent),
                enforce_parameter_schema=True,
            )
            if pin and rule:
                update.pull_steps = pin.pull_steps(rule)
                update.version = pin.commit[:12]
            client.update_deployment(deployment.id, update)
            pinned = (
                f"inventories {', '.join(rule.inventories)}" if rule and rule.inventories else ""
            )
            runs = f"commit {pin.commit[:12]}" if pin and rule else "its pull steps"
            lines.append(f"{deployment.name} ({deployment.entrypoint}): strict {pinned}, "
                         f"runs {runs}".replace(" ,", ","))  # fmt: skip
    return lines


def pin_commit(project_dir: Path, remote: str | None, ssh_key_secret: str = "") -> Pin:
    """The commit of `project_dir` to deploy, checked: no uncommitted changes, and on
    `remote` (default: the repository itself). ConfigurationError otherwise."""
    source = describe(project_dir)
    if not source.commit:
        raise ConfigurationError(
            f"{project_dir} is not a git checkout with a commit: deployments run committed "
            "content (or deploy the working tree with --working-tree, for development)"
        )
    if source.dirty:
        raise ConfigurationError(
            f"uncommitted changes in {project_dir} ({', '.join(_dirty_files(project_dir))}): "
            "a deployment runs a commit, and these would not be in it. Commit and push them "
            "(or deploy the working tree with --working-tree, for development: runs are "
            "recorded as dirty)"
        )
    repository = remote or project_dir.resolve().as_uri()
    warm(repository, source.commit, ssh_key_secret)
    return Pin(repository, source.commit, source.ref, ssh_key_secret)


def _dirty_files(project_dir: Path, most: int = 10) -> list[str]:
    done = subprocess.run(
        ["git", "-C", str(project_dir), "status", "--porcelain", "--untracked-files=normal"],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    files = [line[3:] for line in done.stdout.splitlines() if line.strip()]
    return files[:most] + ([f"{len(files) - most} more"] if len(files) > most else [])


def deploy(
    project_dir: Path,
    remote: str | None = None,
    working_tree: bool = False,
    ssh_key_secret: str = "",
) -> list[str]:
    """`prefect deploy --all` from the repository root, then `tighten`, pinning the
    deployments to the checkout's commit unless `working_tree`."""
    prefect_yaml = project_dir / "prefect.yaml"
    load_rules(prefect_yaml)  # refuse a bad file before deploying anything
    pin = None if working_tree else pin_commit(project_dir, remote, ssh_key_secret)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "--no-prompt", "deploy", "--all"],
        cwd=project_dir, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        check=False, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise ConfigurationError(f"prefect deploy failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return tighten(prefect_yaml, pin, listed_only=True)
