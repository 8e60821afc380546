"""Run a command so that nothing it starts outlives the process that asked for it.

``python reaper.py PARENT_PID [--remove DIR]... [--] COMMAND...`` runs COMMAND
(ansible-playbook) as its child.
When the run's process dies, even by SIGKILL, this one gets SIGTERM from the kernel
(PR_SET_PDEATHSIG) and SIGKILLs every process below it, then exits. It is the child
subreaper of its tree, so processes that detached themselves are still below it: Ansible's
forked workers (each in a session of its own; one runs a looping task to the end when its
parent dies) and SSH ControlPersist masters. ``setpriv --pdeathsig`` on ansible-playbook
alone was not enough: a killed run's worker went on changing its host.

When it stops because the run's process died, it also removes each ``--remove`` DIR (the
run's private dir with its secret files, its SSH control dir): nobody else is left to.
After a normal end, or a signal while the run's process lives, that process removes them.

Run as a script by path (stdlib only, no package imports: it starts in ~20 ms).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _descendants() -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    stat = handle.read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree() -> None:
    """SIGKILL and reap everything below this process until nothing is left."""
    for _ in range(200):
        pids = _descendants()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        time.sleep(0.01)
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


def _stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def _kill_everything() -> None:
    """_kill_tree, not to be cut short by another signal: a run's death brings SIGTERM
    (the death signal) and SIGHUP (its pty closing) at once, and the second one, raised
    inside the first one's cleanup, used to end this process with the tree still alive."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    while True:
        try:
            _kill_tree()
            return
        except _Stop:  # delivered before the mask took effect
            continue


def _parse(argv: list[str]) -> tuple[int, list[str], list[str]]:
    parent, rest, remove = int(argv[0]), argv[1:], []
    while rest[:1] == ["--remove"] and len(rest) > 1:
        remove.append(rest[1])
        rest = rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return parent, remove, rest


def _removable(path: str) -> bool:
    """Only this run's own directories: absolute, named ff-*, not a link."""
    return (
        os.path.isabs(path)
        and os.path.basename(os.path.normpath(path)).startswith("ff-")
        and not os.path.islink(path)
        and os.path.normpath(path) != "/"
    )


def _remove(paths: list[str]) -> None:
    for path in paths:
        if _removable(path):
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str]) -> int:
    parent, remove, command = _parse(argv)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    for signum in _SIGNALS:
        signal.signal(signum, _stop)
    try:
        if os.getppid() != parent:  # the run died before the death signal was armed
            raise _Stop(signal.SIGTERM)
        rc = subprocess.Popen(command).wait()
    except _Stop as stop:
        rc = -stop.signum
    _kill_everything()  # after a normal end: what ansible-playbook left (SSH masters)
    if os.getppid() != parent:  # the run's process is gone: its files are ours to remove
        _remove(remove)
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
