"""The pull step of deployments made by `fleetflow deploy`: fetch the deployed commit from the
git remote into a directory of its own, and run the flow there.

`fleetflow deploy` writes it into each deployment (Prefect runs it in the flow-run process
before the flow is loaded)::

    pull:
      - fleetflow.ops.checkout.checkout:
          repository: ssh://git@git.bank.example/ops/fleetflow.git
          commit: 3f14d8d2c0...          # the commit deployed
          ref: main                      # the branch it was deployed from (recorded only)
          refs: ["release/*"]            # refs an operator may pick instead (default none)
          ssh_key_secret: git-deploy-key # Secret block with the remote's SSH deploy key

A worker needs no checkout of its own: it keeps a mirror of the remote and one extracted
tree per commit under FLEETFLOW_CODE_CACHE (default ~/.cache/fleetflow/code). A run of a
commit already extracted fetches nothing; its tree is checked against the digest taken
when it was extracted and extracted again if anything in it changed. Trees hold the
commit's files only (`git archive`: no .git, no untracked files).

An operator picks another ref with a tag on the run, `ref:release/2026-12` (tags are what
an operator may set on a run besides its parameters; a run's environment is not: it
would let a caller run code on the worker). The ref must match one of the deployment's
`refs` patterns and is fetched fresh. Anything wrong (no such commit or ref on the remote, a ref
not allowed, git failing) raises CheckoutError: the run fails before any host is touched.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

from fleetflow.engine.source import SOURCE_VARIABLE
from fleetflow.exceptions import CheckoutError, ConfigurationError, FleetflowError

__all__ = ["CACHE_VARIABLE", "REF_TAG", "checkout", "tree_digest", "valid_ref", "warm"]

REF_TAG = "ref:"
CACHE_VARIABLE = "FLEETFLOW_CODE_CACHE"
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
# Branch and tag names as people write them; no option-like or revision syntax.
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_GIT_TIMEOUT = 600
# Extracted commits kept per remote beyond those used in the last PRUNE_AFTER seconds.
KEEP_TREES = 20
PRUNE_AFTER = 7 * 24 * 3600
# Prefect's console handler shows it in the worker's output, beside the other pull steps.
log = logging.getLogger("prefect.fleetflow.checkout")


def checkout(
    repository: str,
    commit: str,
    ref: str = "",
    refs: Sequence[str] = (),
    ssh_key_secret: str = "",
) -> dict[str, str]:
    """Make `commit` (or the allowed ref the run asks for) the run's working directory and
    the project directory of its playbooks; returns {"directory", "commit", "ref"}.

    On CheckoutError the run is set Failed with the reason (else the process's exit would
    make it Crashed, which alerts as a broken machine) before the error is raised."""
    try:
        with _deploy_key(ssh_key_secret):
            return _checkout(repository, commit, ref, refs)
    except (CheckoutError, ConfigurationError) as exc:
        _fail_run(str(exc))
        raise


def _checkout(repository: str, commit: str, ref: str, refs: Sequence[str]) -> dict[str, str]:
    started = time.monotonic()
    _check_repository(repository)
    if not _COMMIT.fullmatch(commit):
        raise CheckoutError(f"the deployment names no commit ({commit!r}): deploy it again")
    requested = _requested_ref(_run_tags())
    if requested:
        _allowed(requested, refs)
    cache = _cache_of(repository)
    with cache.locked():
        if requested:
            commit, ref = cache.resolve(repository, requested), requested
        tree = cache.tree(repository, commit)
    os.chdir(tree)
    os.environ["FLEETFLOW_PROJECT_DIR"] = str(tree)
    said = {"directory": str(tree), "commit": commit, "ref": ref, "remote": repository}
    os.environ[SOURCE_VARIABLE] = json.dumps(said)
    log.info("commit %s (%s) ready in %.2f s", commit[:12], ref or "-", time.monotonic() - started)
    return {"directory": str(tree), "commit": commit, "ref": ref}


def warm(repository: str, commit: str, ssh_key_secret: str = "") -> Path:
    """`commit` fetched and extracted into this machine's cache, as a run would have it;
    CheckoutError when the remote does not have it."""
    _check_repository(repository)
    cache = _cache_of(repository)
    with _deploy_key(ssh_key_secret), cache.locked():
        return cache.tree(repository, commit)


@contextmanager
def _deploy_key(secret: str) -> Iterator[None]:
    """With a Secret block's SSH key, git's ssh uses that key only, from a 0600 file that
    lives as long as the fetch. Host keys are checked as ever (the worker's known_hosts,
    or GIT_SSH_COMMAND's own options): BatchMode makes an unknown host fail, never ask."""
    if not secret:
        yield
        return
    from fleetflow.engine.secrets import load_secret, write_private

    key = load_secret(secret).get_secret_value()
    with tempfile.TemporaryDirectory(prefix="fleetflow-git-") as private:
        path = write_private(Path(private) / "key", key.rstrip("\n") + "\n")
        ssh = f"ssh -i {shlex.quote(str(path))} -o IdentitiesOnly=yes -o BatchMode=yes"
        before = os.environ.get("GIT_SSH_COMMAND")
        os.environ["GIT_SSH_COMMAND"] = ssh
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("GIT_SSH_COMMAND", None)
            else:
                os.environ["GIT_SSH_COMMAND"] = before


def valid_ref(ref: str) -> bool:
    """A branch or tag name a caller may send (checked again by git)."""
    return bool(_REF.fullmatch(ref)) and ".." not in ref and not ref.endswith((".lock", "/", "."))


def _run_tags() -> list[str]:
    """The tags of the flow run this process runs (none outside a deployment's run)."""
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        return []
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return list(client.read_flow_run(UUID(run_id)).tags)
    except Exception as exc:  # any API failure: the run must not go on without its ref
        raise CheckoutError(f"cannot read flow run {run_id}'s tags: {exc}") from exc


def _fail_run(reason: str) -> None:
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        return
    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    try:
        with get_client(sync_client=True) as client:
            message = f"the content could not be checked out, nothing ran: {reason}"
            client.set_flow_run_state(UUID(run_id), Failed(message=message[:2000]), force=True)
    except Exception:  # the run still fails (Crashed): the error is raised after this
        log.exception("could not mark flow run %s Failed", run_id)


def _requested_ref(tags: Sequence[str]) -> str:
    refs = [tag[len(REF_TAG) :] for tag in tags if tag.startswith(REF_TAG)]
    if len(refs) > 1:
        raise CheckoutError(f"the run names several refs ({', '.join(refs)}): name one")
    return refs[0] if refs else ""


def _allowed(requested: str, patterns: Sequence[str]) -> None:
    if not valid_ref(requested):
        raise CheckoutError(f"ref {requested!r} is not a branch or tag name")
    if not any(fnmatch.fnmatchcase(requested, str(p)) for p in patterns):
        allowed = ", ".join(patterns) or "none: only the deployed commit"
        raise CheckoutError(
            f"ref {requested!r} is not allowed for this deployment (allowed: {allowed})"
        )


def _check_repository(repository: str) -> None:
    if not repository or repository.startswith("-") or any(c < " " for c in repository):
        raise CheckoutError(f"not a git remote: {repository!r}")


def _cache_of(repository: str) -> _Cache:
    configured = os.environ.get(CACHE_VARIABLE)
    root = Path(configured) if configured else Path.home() / ".cache" / "fleetflow" / "code"
    return _Cache(root / hashlib.sha256(repository.encode()).hexdigest()[:16])


class _Cache:
    """A remote's mirror and extracted trees on this machine; one writer at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mirror = root / "mirror.git"
        self.trees = root / "trees"

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.trees.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.root / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield

    def resolve(self, repository: str, ref: str) -> str:
        """The commit `ref` names on the remote now (fetched)."""
        self._fetch(repository)
        for name in (f"refs/heads/{ref}", f"refs/tags/{ref}"):
            done = self._git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
            if done.returncode == 0:
                return done.stdout.strip()
        raise CheckoutError(f"{repository} has no branch or tag {ref!r}")

    def tree(self, repository: str, commit: str) -> Path:
        tree, digest_file = self.trees / commit, self.trees / f"{commit}.digest"
        if tree.is_dir() and digest_file.is_file():
            if tree_digest(tree) == digest_file.read_text():
                digest_file.touch()  # last used: what pruning goes by
                return tree
            # Kept for whoever looks into it; a run still using it keeps its files.
            aside = self.trees / f".changed-{commit}-{int(time.time())}"
            tree.rename(aside)
            log.warning("the cached tree of %s was changed on disk (kept as %s): extracting "
                        "it again", commit[:12], aside)  # fmt: skip
        shutil.rmtree(tree, ignore_errors=True)
        if not self._has(commit):
            self._fetch(repository)
            if not self._has(commit):
                raise CheckoutError(
                    f"commit {commit[:12]} is not on {repository} (never pushed, or removed "
                    "by a force-push): push it, or deploy a commit the remote has"
                )
        self._extract(commit, tree)
        digest_file.write_text(tree_digest(tree))
        self._prune()
        return tree

    def _prune(self) -> None:
        """Remove trees beyond the KEEP_TREES most recently used that nobody used for
        PRUNE_AFTER seconds (a run of days keeps its tree; a worker's disk stays bounded)."""
        digests = sorted(self.trees.glob("*.digest"), key=lambda p: p.stat().st_mtime)
        old = time.time() - PRUNE_AFTER
        for digest in digests[:-KEEP_TREES]:
            if digest.stat().st_mtime < old:
                shutil.rmtree(self.trees / digest.stem, ignore_errors=True)
                digest.unlink(missing_ok=True)

    def _has(self, commit: str) -> bool:
        if not self.mirror.is_dir():
            return False
        return self._git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0

    def _fetch(self, repository: str) -> None:
        if not (self.mirror / "HEAD").is_file():
            self._run(["git", "init", "--quiet", "--bare", str(self.mirror)])
        self._run(
            ["git", "--git-dir", str(self.mirror), "-c", "protocol.ext.allow=never", "fetch",
             "--quiet", "--prune", "--no-tags", "--", repository,
             "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
            f"cannot fetch {repository}",
        )  # fmt: skip

    def _extract(self, commit: str, tree: Path) -> None:
        """`git archive` of the commit into `tree`, made whole or not at all."""
        partial = self.trees / f".partial-{commit}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(mode=0o755)
        archive = subprocess.Popen(
            ["git", "--git-dir", str(self.mirror), "archive", "--format=tar", commit],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            cwd=self.root,
        )  # fmt: skip
        try:
            assert archive.stdout is not None
            with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
                tar.extractall(partial, filter="data")
            if archive.wait(timeout=_GIT_TIMEOUT) != 0:
                raise CheckoutError(f"git archive {commit[:12]} failed")
            _install_galaxy(partial)
            partial.rename(tree)
        except (OSError, tarfile.TarError) as exc:
            raise CheckoutError(f"cannot extract commit {commit[:12]}: {exc}") from exc
        finally:
            archive.kill()
            archive.wait()
            shutil.rmtree(partial, ignore_errors=True)

    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["git", "--git-dir", str(self.mirror), *args], capture_output=True, text=True,
                stdin=subprocess.DEVNULL, timeout=_GIT_TIMEOUT, check=False, cwd=self.root,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise CheckoutError(f"git failed: {exc}") from exc

    def _run(self, argv: list[str], failure: str = "git failed") -> None:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env,
                timeout=_GIT_TIMEOUT, check=False, cwd=self.root,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise CheckoutError(f"{failure}: {exc}") from exc
        if done.returncode != 0:
            raise CheckoutError(f"{failure}: {done.stderr.strip()[-2000:]}")


def _install_galaxy(tree: Path) -> None:
    """requirements.yml's roles and collections into the tree's galaxy/ (nothing to do,
    and no ansible-galaxy run, while its lists are empty)."""
    from fleetflow.ops.galaxy import install

    if not (tree / "requirements.yml").is_file():
        return
    try:
        install(tree)
    except (FleetflowError, OSError, subprocess.SubprocessError) as exc:
        raise CheckoutError(f"cannot install requirements.yml into the checkout: {exc}") from exc


def tree_digest(tree: Path) -> str:
    """One sha256 over every file of `tree` (paths and contents; links as their target)."""
    digest = hashlib.sha256()
    for directory, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted([*files, *(d for d in dirs if Path(directory, d).is_symlink())]):
            path = Path(directory, name)
            digest.update(str(path.relative_to(tree)).encode() + b"\0")
            if path.is_symlink():
                digest.update(b"link:" + os.readlink(path).encode())
            else:
                digest.update(path.read_bytes())
    return digest.hexdigest()
