"""`fleetflow`'s public face: `__all__` is complete and exact (as httpx's
tests/test_exported_members.py checks), every error class is exported, and importing the
package does not import Prefect."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types

import fleetflow
from fleetflow import exceptions


def _public_names() -> set[str]:
    """What `from fleetflow import ...` offers: public names that are not submodules."""
    return {
        name
        for name in dir(fleetflow)
        if not name.startswith("_") and not isinstance(getattr(fleetflow, name), types.ModuleType)
    }


def test_all_lists_every_public_name_once_and_sorted() -> None:
    assert set(fleetflow.__all__) == _public_names()
    assert fleetflow.__all__ == sorted(fleetflow.__all__)


def test_every_name_in_all_resolves() -> None:
    for name in fleetflow.__all__:
        assert getattr(fleetflow, name) is not None, name


def test_every_error_class_is_exported_and_listed_by_the_exceptions_module() -> None:
    errors = {
        name
        for name, value in vars(exceptions).items()
        if inspect.isclass(value) and issubclass(value, exceptions.FleetflowError)
    }
    assert errors == set(exceptions.__all__)
    assert errors <= set(fleetflow.__all__)
    for name in errors:
        assert getattr(fleetflow, name) is getattr(exceptions, name)


def test_every_error_class_is_in_the_documented_tree() -> None:
    tree = exceptions.__doc__ or ""
    for name in exceptions.__all__:
        assert f"── {name} " in tree or f"{name}\n" in tree, name


def test_importing_fleetflow_does_not_import_prefect() -> None:
    """Prefect costs about 2 s to import; the lab and the CLI do without it."""
    code = (
        "import sys, fleetflow\n"
        "from fleetflow import PlaybookResult, RetryPolicy, HostLockTimeout\n"
        "print(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
