"""A repository for tests: the real one's content plus the test playbooks and labs, by name.

Flows take playbooks and inventories by name from the repository they run in
(FLEETFLOW_PROJECT_DIR), never by path. Tests that drive flows or deployments make such a
repository out of links: the repository's own files, the playbooks of
tests/fixtures/playbooks beside the real ones, and each test lab as an environment
under inventory/.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE_PLAYBOOKS = REPO / "tests" / "fixtures" / "playbooks"
_LINKED = ("ansible.cfg", "roles", "scripts", "flows", "deployments", "prefect.yaml", "bench")


def make_project(root: Path, inventories: Mapping[str, Path]) -> Path:
    """A repository at `root` with `inventories` ({name: inventory dir}) as environments."""
    root.mkdir(parents=True, exist_ok=True)
    for name in _LINKED:
        (root / name).symlink_to(REPO / name)
    playbooks = root / "playbooks"
    playbooks.mkdir()
    for playbook in [*(REPO / "playbooks").glob("*.yml"), *FIXTURE_PLAYBOOKS.glob("*.yml")]:
        (playbooks / playbook.name).symlink_to(playbook)
    add_inventories(root, inventories)
    return root


def add_inventories(root: Path, inventories: Mapping[str, Path]) -> None:
    (root / "inventory").mkdir(exist_ok=True)
    for name, directory in inventories.items():
        (root / "inventory" / name).symlink_to(directory.resolve())
