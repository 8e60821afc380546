"""Every third-party library src/fleetflow imports is declared in pyproject.toml, not
merely installed because Prefect happens to depend on it today."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from ..conftest import REPO

PACKAGE = REPO / "src/fleetflow"


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {
        _normalized(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0])
        for spec in project["dependencies"]
    }


def test_every_imported_library_is_a_declared_dependency() -> None:
    roots = set().union(*(_imported_roots(p) for p in PACKAGE.rglob("*.py")))
    third_party = roots - set(sys.stdlib_module_names) - {"fleetflow", "__future__"}
    distributions = packages_distributions()
    missing = {
        root: distributions.get(root, ["(not installed)"])
        for root in sorted(third_party)
        if not {_normalized(d) for d in distributions.get(root, [])} & _declared()
    }
    assert missing == {}, f"declare these in pyproject.toml [project] dependencies: {missing}"
