"""fleetflow._prefect against the installed Prefect: every non-public name and module path
it holds still exists, and no other module of the package reaches past it.

After a Prefect upgrade, a failure here names what moved; fixing _prefect.py fixes it.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import (
    OrchestrationResult,
    SetStateStatus,
    StateAcceptDetails,
)
from prefect.states import State

from fleetflow import _prefect

SEAM = Path(_prefect.__file__)
PACKAGE = SEAM.parent

# What counts as Prefect's non-public API, for the scan below: these modules and all under
# them (the server, the engines' internals, helpers, deployment steps run by name), any
# module or name with a leading underscore (Prefect's own rule), and these few names that
# live in public modules but serve Prefect's own engine.
INTERNAL_MODULES = (
    "prefect.server",
    "prefect.utilities",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.deployments.steps",
)
INTERNAL_NAMES = {
    ("prefect.input", "keyset_from_paused_state"),
    ("prefect.context", "refresh_global_settings_context"),
}
ALLOWED_STRINGS: set[tuple[str, str]] = set()
_MODULE_PATH = re.compile(r"prefect(\.[A-Za-z_]\w*)+")


def _internal_module(module: str) -> bool:
    parts = module.split(".")
    if parts[0] != "prefect":
        return False
    if any(part.startswith("_") for part in parts):
        return True
    return any(module == m or module.startswith(f"{m}.") for m in INTERNAL_MODULES)


def _internal_uses(path: Path) -> list[str]:
    """Non-public Prefect imports and module-path strings in one source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _internal_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not node.module.startswith("prefect"):
                continue
            if _internal_module(node.module):
                found.append(node.module)
            found += [
                f"{node.module}.{a.name}"
                for a in node.names
                if a.name.startswith("_") or (node.module, a.name) in INTERNAL_NAMES
            ]
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _MODULE_PATH.fullmatch(node.value)
            and _internal_module(node.value)
        ):
            found.append(repr(node.value))
    return found


@pytest.mark.parametrize("name", sorted(_prefect._INTERNAL))
def test_every_internal_name_resolves_to_prefects_own(name: str) -> None:
    module, attribute = _prefect._INTERNAL[name]
    assert getattr(_prefect, name) is getattr(importlib.import_module(module), attribute)


@pytest.mark.parametrize("module", _prefect.MODULE_PATHS)
def test_every_module_path_imports(module: str) -> None:
    importlib.import_module(module)


def test_lease_storage_is_a_module_the_server_accepts() -> None:
    module = importlib.import_module(_prefect.LEASE_STORAGE_FILESYSTEM)
    # What Prefect's get_concurrency_lease_storage() checks for and builds at server start.
    assert isinstance(module.ConcurrencyLeaseStorage, type)


def test_every_prefect_import_of_the_seam_resolves() -> None:
    """Also the imports inside functions and under TYPE_CHECKING (types mypy relies on)."""
    tree = ast.parse(SEAM.read_text())
    imports = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prefect")
        for alias in node.names
    ]
    assert len(imports) > len(_prefect._INTERNAL)
    missing = [
        f"{module}.{name}"
        for module, name in imports
        if module is not None and not hasattr(importlib.import_module(module), name)
    ]
    assert not missing


def test_type_checking_re_exports_match_the_table() -> None:
    """What mypy sees (the names of __all__ imported under TYPE_CHECKING) is what callers
    get at run time."""
    tree = ast.parse(SEAM.read_text())
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    re_exports = {
        alias.name: (node.module, alias.name)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name in _prefect.__all__
    }
    assert re_exports == _prefect._INTERNAL


def test_all_is_complete() -> None:
    tree = ast.parse(SEAM.read_text())
    defined = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    } | {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    public = {name for name in defined if not name.startswith("_")}
    assert set(_prefect.__all__) == public | set(_prefect._INTERNAL)


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _prefect.no_such_name  # noqa: B018


class _AcceptingClient:
    """The one call propose_state_sync makes: the server accepts what it is given."""

    def __init__(self) -> None:
        self.proposed: list[State] = []

    def set_flow_run_state(
        self, flow_run_id: object, state: State, force: bool = False
    ) -> OrchestrationResult[object]:
        self.proposed.append(state)
        return OrchestrationResult(
            status=SetStateStatus.ACCEPT, state=state, details=StateAcceptDetails()
        )


def test_propose_pause_proposes_what_pause_flow_run_would() -> None:
    client = _AcceptingClient()
    run_id = uuid4()
    state, keyset = _prefect.propose_pause(
        client, run_id, timeout_seconds=300, pause_key="approval-1"
    )
    assert client.proposed == [state]
    assert state.type == StateType.PAUSED and state.is_paused()
    assert state.state_details.pause_key == "approval-1"
    assert state.state_details.pause_timeout is not None
    assert not state.state_details.pause_reschedule
    # The keys the UI's resume form reads and writes, as pause_flow_run names them.
    assert keyset == {
        "description": "paused-approval-1-description",
        "response": "paused-approval-1-response",
        "schema": "paused-approval-1-schema",
    }
    assert state.state_details.run_input_keyset == keyset


def test_importing_the_seam_imports_no_prefect() -> None:
    """The launcher reads its module paths before it has loaded Prefect."""
    code = "import sys, fleetflow._prefect; print(sorted(m for m in sys.modules if m.startswith('prefect')))"  # noqa: E501
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_no_module_outside_the_seam_uses_prefect_internals() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == SEAM:
            continue
        where = path.relative_to(PACKAGE).as_posix()
        uses = [u for u in _internal_uses(path) if (where, u.strip("'")) not in ALLOWED_STRINGS]
        if uses:
            offenders[where] = uses
    assert not offenders, f"import these through fleetflow._prefect: {offenders}"


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import prefect.server.api\n"
        "from prefect.utilities.engine import propose_state_sync\n"
        "from prefect.input import RunInput, keyset_from_paused_state\n"
        "from prefect.states import _private\n"
        "from prefect import flow\n"
        "x = 'prefect.server.concurrency.lease_storage.filesystem'\n"
        "y = 'prefect.flow-run.Completed'\n"
        "'''runs `python -m prefect.engine`'''\n"
    )
    assert _internal_uses(sample) == [
        "prefect.server.api",
        "prefect.utilities.engine",
        "prefect.input.keyset_from_paused_state",
        "prefect.states._private",
        "'prefect.server.concurrency.lease_storage.filesystem'",
    ]
