"""The cached base image every lab host overlays: a Debian minbase root with sshd and python3.

Besides sshd and python3 it carries what any real server has and the roles manage
(sudo, cron, logrotate, procps), so role tests need no package mirror.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fleetflow._progress import phase, step
from fleetflow.exceptions import LabError
from fleetflow.lab._prereq import require_tool

# Bump when the recipe below changes so old caches are not reused.
IMAGE_RECIPE_VERSION = 2
_MARKER = ".fleetflow-image.json"
_PACKAGES = "openssh-server,python3,sudo,cron,logrotate,procps"
# A host has no init system: refuse service starts from package installs instead of failing.
_POLICY_RC_D = (
    "#!/bin/sh\n# Lab hosts have no init system; packages must not start services.\nexit 101\n"
)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def image_path(image_dir: Path, suite: str) -> Path:
    return image_dir / f"{suite}-minbase-v{IMAGE_RECIPE_VERSION}"


def image_info(root: Path) -> dict[str, object] | None:
    """Return the build record of a finished image, or None if it is missing or partial."""
    marker = root / _MARKER
    if not marker.is_file():
        return None
    info: dict[str, object] = json.loads(marker.read_text())
    return info


def ensure_image(image_dir: Path, suite: str = "bookworm") -> Path:
    """Return the cached image root, building it with debootstrap on first use."""
    root = image_path(image_dir, suite)
    if image_info(root) is not None:
        return root
    with file_lock(image_dir / ".lock"):
        if image_info(root) is not None:  # built by a concurrent caller meanwhile
            return root
        _build(root, suite)
    return root


def _build(root: Path, suite: str) -> None:
    debootstrap = require_tool("debootstrap", "debootstrap")
    building = Path(tempfile.mkdtemp(prefix=".build-", dir=root.parent))
    log_path = root.parent / f"{root.name}.build.log"
    phase("image: building %s with debootstrap (one to two minutes; log %s)", root, log_path)
    started = time.monotonic()
    try:
        argv = [debootstrap, "--variant=minbase", f"--include={_PACKAGES}", suite, str(building)]
        returncode = _debootstrap(argv, log_path)
        if returncode != 0:
            tail = log_path.read_text().splitlines()[-15:]
            raise LabError(
                f"debootstrap failed (exit {returncode}); last lines of {log_path}:\n"
                + "\n".join(tail)
            )
        _customize(building)
        seconds = round(time.monotonic() - started, 1)
        size = _disk_usage(building)
        (building / _MARKER).write_text(
            json.dumps({"suite": suite, "build_seconds": seconds, "size_bytes": size})
        )
        building.rename(root)
        phase("image: ready in %.1f s, %d MB", seconds, size // 2**20)
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)


def _debootstrap(argv: list[str], log_path: Path) -> int:
    """Run debootstrap, its output into `log_path`, its progress shown as it goes."""
    tracker = _BuildProgress()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace",
        )  # fmt: skip
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            log.write(line)
            tracker.feed(line)
        return proc.wait()


class _BuildProgress:
    """debootstrap's "I: Retrieving pkg" ... "I: Configuring pkg" lines as two counts: the
    downloads (their total is not known until they end), then unpacking and configuring
    (twice the packages downloaded)."""

    def __init__(self) -> None:
        self.packages = 0
        self.installed = 0

    def feed(self, line: str) -> None:
        words = line.split()
        if len(words) < 3 or words[0] != "I:":
            return
        if words[1] == "Validating" and words[2] not in ("Packages", "InRelease", "Release"):
            self.packages += 1
            step("image: packages downloaded", self.packages)
        elif words[1] in ("Unpacking", "Configuring") and self.packages:
            self.installed += 1
            if self.installed % 2 == 0:  # a package is unpacked, then configured
                step("image: packages installed", self.installed // 2, self.packages)
        elif line.startswith("I: Base system installed successfully"):
            step("image: packages installed", self.packages, self.packages)


def _customize(root: Path) -> None:
    # Every host gets its own host key at creation; none may share the image's.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "run/sshd").mkdir(parents=True, exist_ok=True)
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text(_POLICY_RC_D)
    policy.chmod(0o755)
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _disk_usage(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])
