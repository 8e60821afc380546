"""Label values the exporter may use: names the repository holds, else "other".

Playbook and inventory names arrive in event payloads, which any API caller can write, so
taking them as they come lets a caller create unbounded series (a 200,000-char name each
run). Only names in the repository pass: playbook stems of <project>/playbooks/*.yml and
*.yaml, and the environment directories of <project>/inventory/.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from fleetflow.settings import get_settings

__all__ = ["OTHER", "RepositoryNames"]

OTHER = "other"
# The repository changes by deploys, not by the minute; a re-read costs two listdirs.
_REFRESH_SECONDS = 60.0
# Longer than any file name: what exceeds it is refused before any path work.
_MAX_VALUE = 4096
_PLAYBOOK_SUFFIXES = (".yml", ".yaml")


def _project_dir() -> Path:
    return get_settings().project_dir


class RepositoryNames:
    """Maps a payload's playbook or inventory value to a bounded label."""

    def __init__(
        self,
        project_dir: Callable[[], Path] = _project_dir,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._project_dir = project_dir
        self._clock = clock
        self._read_at: float | None = None
        self._root = Path()
        self._playbooks: frozenset[str] = frozenset()
        self._inventories: frozenset[str] = frozenset()

    def playbook(self, value: object) -> str:
        self._refresh()
        path = _inside(value, self._playbooks, self._root / "playbooks")
        if isinstance(path, str):
            return path
        known = len(path.parts) == 1 and path.suffix in _PLAYBOOK_SUFFIXES
        return path.stem if known and path.stem in self._playbooks else OTHER

    def inventory(self, value: object) -> str:
        self._refresh()
        path = _inside(value, self._inventories, self._root / "inventory")
        if isinstance(path, str):
            return path
        return path.parts[0] if path.parts[0] in self._inventories else OTHER

    def _refresh(self) -> None:
        now = self._clock()
        if self._read_at is not None and now - self._read_at < _REFRESH_SECONDS:
            return
        self._read_at = now
        self._root = self._project_dir().resolve()  # the engine reports resolved paths
        playbooks = self._root / "playbooks"
        self._playbooks = frozenset(
            p.stem for suffix in _PLAYBOOK_SUFFIXES for p in playbooks.glob(f"*{suffix}")
        )
        inventory = self._root / "inventory"
        self._inventories = frozenset(
            p.name for p in (inventory.iterdir() if inventory.is_dir() else ()) if p.is_dir()
        )


def _inside(value: object, names: frozenset[str], folder: Path) -> str | Path:
    """The label when `value` is a known name or no path in `folder`, else its path there."""
    text = str(value)
    if len(text) > _MAX_VALUE:
        return OTHER
    if text in names:
        return text
    if not os.path.isabs(text):
        return OTHER
    # Lexically, so "playbooks/../../tmp/x.yml" stays outside; the name must still be known.
    path = Path(os.path.normpath(text))
    if path == folder or not path.is_relative_to(folder):
        return OTHER
    return path.relative_to(folder)
