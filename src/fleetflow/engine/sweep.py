"""Remove what killed runs left in temporary directories (secret files among it).

A run's private dir (`ff-run-<pid>-*`), its SSH control dir (`ff-cp-<pid>-*`) and a
preflight's dir (`ff-preflight-<pid>-*`) are removed by the run, or by the reaper when
the run's process is killed. If the machine lost power or the reaper itself was killed,
they stay: a worker's start sweeps every such directory whose process is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = ["sweep_stale_run_dirs"]

_NAME = re.compile(r"^ff-(?:run|cp|preflight)-(\d+)-")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2 :][:1] != b"Z"


def sweep_stale_run_dirs(parents: Iterable[Path]) -> list[Path]:
    """Remove run directories under `parents` whose process is gone; returns them.

    Only directories (never links) owned by this user and named by a dead process.
    """
    removed = []
    for parent in parents:
        try:
            entries = list(os.scandir(parent))
        except OSError:
            continue
        for entry in entries:
            match = _NAME.match(entry.name)
            if not match or _alive(int(match[1])):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
    return removed
