"""The package's floors: lower rooms never import from the rooms above them.

engine/ (the run path) is what flows, tools and the stack build on; if it imported any of
them, a change to a tool could break a run. Checked on every import statement, lazy ones
included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fleetflow

PACKAGE = Path(fleetflow.__file__).parent
# Room -> the rooms it must not import.
FORBIDDEN = {
    "engine": {"flowkit", "ops", "stack", "launcher", "lab", "alerts", "metrics"},
    "flowkit": {"ops", "stack", "launcher", "lab", "alerts", "metrics"},
    "launcher": {"engine", "flowkit", "ops", "stack", "lab", "alerts", "metrics"},
}


def _imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "fleetflow" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_does_not_import_the_rooms_above_it(room: str) -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(_imported_rooms(path) & FORBIDDEN[room])
        for path in sorted((PACKAGE / room).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_scan_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f():\n    from fleetflow.ops.cli import main\n    import fleetflow.stack\n"
    )
    assert _imported_rooms(sample) == {"ops", "stack"}
