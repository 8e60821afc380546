"""Everything fleetflow takes from Prefect outside its public API, in one place.

Prefect's public face (``from prefect import flow, task``, the client and its schemas,
events, artifacts, blocks, ``prefect.states`` constructors) is imported where it is used.
What is not public is taken only through this module: helpers in ``prefect.utilities``,
the server's own modules, the engine entry points the warm launcher preloads and runs,
and module paths Prefect loads by name. A Prefect upgrade that moves one of them is then
a change to this file, and tests/unit/test_prefect_seam.py, which imports all of them
against the installed Prefect, names what moved; the same test keeps every other module
of the package off these paths.

Importing this module imports no Prefect (the launcher reads its module paths before it
loads Prefect, and the CLI stays fast): re-exported names load on first use, as
prefect-dbt loads its ``_public_api`` table.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from uuid import UUID

    from prefect import State
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.context import refresh_global_settings_context
    from prefect.input import Keyset
    from prefect.server.api.validation import validate_job_variables_for_deployment_flow_run
    from prefect.server.schemas.actions import DeploymentFlowRunCreate, validate_base_job_template
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

__all__ = [
    "ENGINE_MODULE",
    "ENGINE_PRELOAD",
    "FLOW_RUN_ID_VARIABLE",
    "LEASE_STORAGE_FILESYSTEM",
    "MODULE_PATHS",
    "DeploymentFlowRunCreate",
    "parameter_schema",
    "propose_pause",
    "refresh_global_settings_context",
    "validate",
    "validate_base_job_template",
    "validate_job_variables_for_deployment_flow_run",
]

# Name here -> (Prefect module, attribute): the non-public names callers import from this
# module. The TYPE_CHECKING imports above give mypy the same names, exported through
# __all__ (a test checks the three agree).
_INTERNAL: dict[str, tuple[str, str]] = {
    # The JSON schema Prefect derives from a flow's signature (a deployment's parameter
    # form): ops/check/deployments.py checks prefect.yaml parameters against it.
    "parameter_schema": ("prefect.utilities.callables", "parameter_schema"),
    # Prefect's own check of parameters against that schema, the one the server applies.
    "validate": ("prefect.utilities.schema_tools", "validate"),
    # launcher/server.py: a forked run re-reads Prefect's settings from the environment the
    # worker sent, as a fresh `python -m prefect.engine` would when importing Prefect.
    "refresh_global_settings_context": ("prefect.context", "refresh_global_settings_context"),
    # Tests only (tests/unit/stack/test_pool_template.py): the server's checks of a work
    # pool's base job template and of the job variables a flow-run request carries.
    "validate_base_job_template": ("prefect.server.schemas.actions", "validate_base_job_template"),
    "DeploymentFlowRunCreate": ("prefect.server.schemas.actions", "DeploymentFlowRunCreate"),
    "validate_job_variables_for_deployment_flow_run": (
        "prefect.server.api.validation",
        "validate_job_variables_for_deployment_flow_run",
    ),
}

# Modules used by name, never imported here.
# What a process worker runs per flow run (`python -m prefect.engine`); the warm launcher
# runs it with runpy in each forked child. Not preloaded: each child runs it afresh.
ENGINE_MODULE = "prefect.engine"
# The worker tells the process it starts which flow run it is here (a private name).
FLOW_RUN_ID_VARIABLE = "PREFECT__FLOW_RUN_ID"
# What prefect.engine imports to run a deployment's flow (the flow and task engines, the
# pull steps of prefect.yaml): the launcher imports them once, before it forks.
ENGINE_PRELOAD = (
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.deployments.steps.core",
    "prefect.deployments.steps.pull",
)
# The server's on-disk store of concurrency-slot leases, set through the documented
# PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE (stack/_stack.py); the default is in memory.
LEASE_STORAGE_FILESYSTEM = "prefect.server.concurrency.lease_storage.filesystem"
MODULE_PATHS = (ENGINE_MODULE, *ENGINE_PRELOAD, LEASE_STORAGE_FILESYSTEM)


def __getattr__(name: str) -> Any:
    """Import a name of `_INTERNAL` on first use (module attribute hook, PEP 562)."""
    try:
        module, attribute = _INTERNAL[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def propose_pause(
    client: SyncPrefectClient, flow_run_id: UUID, *, timeout_seconds: int, pause_key: str
) -> tuple[State[Any], Keyset]:
    """Ask the server to pause a flow run for run input, as `pause_flow_run(wait_for_input=)`
    does before it waits. Returns the state the server answered (Paused when it accepted)
    and the keyset the input form is saved and loaded under.

    flowkit/change.py waits itself rather than through pause_flow_run, which gives the
    server the same deadline as its own wait (see `change._pause`); this is the part of
    pause_flow_run it keeps, built from Prefect's own helpers so the keys match the UI's.
    """
    from prefect.input import keyset_from_paused_state
    from prefect.states import Paused
    from prefect.utilities.engine import propose_state_sync

    paused: State[None] = Paused(timeout_seconds=timeout_seconds, pause_key=pause_key)
    keyset = keyset_from_paused_state(paused)
    paused.state_details.run_input_keyset = cast(dict[str, str], keyset)
    return propose_state_sync(client=client, state=paused, flow_run_id=flow_run_id), keyset
