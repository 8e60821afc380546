"""The deployments' pull step and what `fleetflow deploy` pins: real git, a bare remote in
a temporary directory standing in for the bank's git server."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetflow.engine.source import SOURCE_VARIABLE, Source, changed_paths, content_digest, describe
from fleetflow.exceptions import CheckoutError, ConfigurationError
from fleetflow.ops import checkout as checkout_module
from fleetflow.ops.checkout import CACHE_VARIABLE, checkout, valid_ref, warm
from fleetflow.ops.deploy import CHECKOUT_STEP, DeploymentRules, load_rules, pin_commit

from ...gitrepo import git


def commit(work: Path, path: str, text: str, message: str = "change") -> str:
    (work / path).parent.mkdir(parents=True, exist_ok=True)
    (work / path).write_text(text)
    git(work, "add", path)
    git(work, "commit", "-q", "-m", message)
    return git(work, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path, str]]:
    """(working clone, bare remote, commit A pushed); the cache and cwd restored after."""
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    commit(work, "playbooks/stamp.yml", "- hosts: all\n  tasks: []\n")
    a = commit(work, "ansible.cfg", "[defaults]\n")
    git(work, "remote", "add", "origin", str(remote))
    git(work, "push", "-q", "origin", "main")
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "cache"))
    # checkout() sets these in os.environ, as it must in a run: set then unset here so
    # that monkeypatch puts back what was there before, not what the test left.
    for name in ("PREFECT__FLOW_RUN_ID", SOURCE_VARIABLE, "FLEETFLOW_PROJECT_DIR"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    cwd = Path.cwd()
    yield work, remote, a
    os.chdir(cwd)


def _tags(monkeypatch: pytest.MonkeyPatch, *tags: str) -> None:
    """The tags the run being checked out carries (read from the API in a real run)."""
    monkeypatch.setattr(checkout_module, "_run_tags", lambda: list(tags))


def test_a_run_gets_the_deployed_commit_not_what_the_remote_has_now(
    repo: tuple[Path, Path, str],
) -> None:
    work, remote, a = repo
    commit(work, "playbooks/stamp.yml", "B\n")
    git(work, "push", "-q", "origin", "main")
    done = checkout(remote.as_uri(), a, ref="main")
    tree = Path(done["directory"])
    assert Path.cwd() == tree and os.environ["FLEETFLOW_PROJECT_DIR"] == str(tree)
    assert (tree / "playbooks/stamp.yml").read_text().startswith("- hosts")
    assert not (tree / ".git").exists()
    assert describe(tree) == Source(commit=a, ref="main", dirty=False, origin="checkout")


def test_a_cached_commit_needs_no_remote_and_a_changed_tree_is_extracted_again(
    repo: tuple[Path, Path, str], tmp_path: Path
) -> None:
    _, remote, a = repo
    tree = Path(checkout(remote.as_uri(), a)["directory"])
    moved = tmp_path / "elsewhere.git"
    remote.rename(moved)  # the git server is down: the cached commit still runs
    assert checkout(remote.as_uri(), a)["directory"] == str(tree)
    (tree / "playbooks/stamp.yml").write_text("tampered\n")
    moved.rename(remote)
    checkout(remote.as_uri(), a)
    assert (tree / "playbooks/stamp.yml").read_text().startswith("- hosts")


def test_a_commit_the_remote_lacks_fails_before_anything_runs(
    repo: tuple[Path, Path, str],
) -> None:
    work, remote, _ = repo
    local_only = commit(work, "playbooks/stamp.yml", "never pushed\n")
    with pytest.raises(CheckoutError, match="not on"):
        checkout(remote.as_uri(), local_only)
    with pytest.raises(CheckoutError, match="names no commit"):
        checkout(remote.as_uri(), "HEAD")


def test_an_operator_picks_an_allowed_ref_and_nothing_else(
    repo: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work, remote, a = repo
    git(work, "checkout", "-q", "-b", "release/2")
    b = commit(work, "playbooks/stamp.yml", "release\n")
    git(work, "push", "-q", "origin", "release/2")
    _tags(monkeypatch, "nightly", "ref:release/2")
    done = checkout(remote.as_uri(), a, ref="main", refs=["release/*"])
    assert (done["commit"], done["ref"]) == (b, "release/2")
    assert json.loads(os.environ[SOURCE_VARIABLE])["commit"] == b
    with pytest.raises(CheckoutError, match="not allowed"):
        checkout(remote.as_uri(), a, refs=[])
    _tags(monkeypatch, "ref:release/2", "ref:main")
    with pytest.raises(CheckoutError, match="several refs"):
        checkout(remote.as_uri(), a, refs=["*"])
    _tags(monkeypatch, "ref:release/3")
    with pytest.raises(CheckoutError, match="no branch or tag"):
        checkout(remote.as_uri(), a, refs=["release/*"])


@pytest.mark.parametrize(
    "ref",
    ["--upload-pack=touch /tmp/x", "main..evil", "HEAD@{1}", "main~1", "a b", "x\n", "-x",
     "refs/../../etc", "main^{tree}", ":/text", "release/.lock"],
)  # fmt: skip
def test_an_attack_ref_is_refused_as_data(
    repo: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch, ref: str, tmp_path: Path
) -> None:
    _, remote, a = repo
    _tags(monkeypatch, f"ref:{ref}")
    with pytest.raises(CheckoutError):
        checkout(remote.as_uri(), a, refs=["*"])
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("repository", ["--upload-pack=touch /tmp/x", "", "a\nb"])
def test_an_option_like_remote_is_refused(repository: str, repo: tuple[Path, Path, str]) -> None:
    with pytest.raises(CheckoutError, match="not a git remote"):
        checkout(repository, repo[2])


def test_valid_refs() -> None:
    assert valid_ref("main") and valid_ref("release/2026-12") and valid_ref("v1.2.3")
    assert not valid_ref("-main") and not valid_ref("a..b") and not valid_ref("a/")


def test_the_working_tree_is_described_by_git(repo: tuple[Path, Path, str], tmp_path: Path) -> None:
    work, _, a = repo
    assert describe(work) == Source(commit=a, ref="main", dirty=False)
    (work / "new.txt").write_text("untracked\n")
    assert describe(work).dirty
    (work / "new.txt").unlink()
    (work / "ansible.cfg").write_text("[defaults]\nforks = 1\n")
    assert describe(work).dirty and "uncommitted" in str(describe(work))
    outside = tmp_path / "plain"
    outside.mkdir()
    assert describe(outside) == Source() and describe(outside).dirty


def test_a_marker_for_another_directory_is_not_believed(
    repo: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv(SOURCE_VARIABLE, json.dumps({"directory": str(repo[0]), "commit": "a"}))
    assert describe(plain) == Source()
    monkeypatch.setenv(SOURCE_VARIABLE, "{not json")
    assert describe(plain) == Source()


def test_deploy_pins_a_clean_pushed_commit_only(repo: tuple[Path, Path, str]) -> None:
    work, remote, a = repo
    pin = pin_commit(work, remote.as_uri())
    assert (pin.commit, pin.ref, pin.repository) == (a, "main", remote.as_uri())
    step = pin.pull_steps(DeploymentRules("lab", "flows/x.py:x", refs=("release/*",)))
    assert step == [{CHECKOUT_STEP: {"repository": remote.as_uri(), "commit": a,
                                     "ref": "main", "refs": ["release/*"]}}]  # fmt: skip
    (work / "playbooks/stamp.yml").write_text("edited\n")
    with pytest.raises(ConfigurationError, match=r"uncommitted changes .*playbooks/stamp.yml"):
        pin_commit(work, remote.as_uri())
    commit(work, "playbooks/stamp.yml", "edited\n")
    with pytest.raises(CheckoutError, match="push it"):
        pin_commit(work, remote.as_uri())
    assert pin_commit(work, None).repository == work.resolve().as_uri()


def test_deploy_refuses_a_directory_outside_git(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="--working-tree"):
        pin_commit(tmp_path, None)


def test_refs_in_prefect_yaml_are_branch_patterns(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "deployments:\n  - name: lab\n    entrypoint: flows/a.py:a\n"
        "    fleetflow: {refs: ['release/*', main]}\n"
    )
    assert load_rules(good)[0].refs == ("release/*", "main")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "deployments:\n  - name: lab\n    entrypoint: flows/a.py:a\n"
        "    fleetflow: {refs: ['--upload-pack=x']}\n"
    )
    with pytest.raises(ConfigurationError, match="refs"):
        load_rules(bad)


def test_the_fingerprint_names_each_changed_file(tmp_path: Path) -> None:
    project = tmp_path / "p"
    for name in ("playbooks/a.yml", "roles/r/tasks/main.yml", "inventory/lab/hosts.yml"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("x\n")
    before = content_digest(project, project / "inventory" / "lab")
    (project / "playbooks/a.yml").write_text("y\n")
    (project / "roles/r/tasks/main.yml").unlink()
    (project / "inventory/lab/group_vars.yml").write_text("z\n")
    after = content_digest(project, project / "inventory" / "lab")
    assert changed_paths(before, after) == [
        "inventory/lab/group_vars.yml (added)",
        "playbooks/a.yml (modified)",
        "roles/r/tasks/main.yml (removed)",
    ]
    assert changed_paths(after, after) == []


def test_warm_fills_the_cache_a_worker_then_reads(repo: tuple[Path, Path, str]) -> None:
    _, remote, a = repo
    tree = warm(remote.as_uri(), a)
    assert (tree / "ansible.cfg").is_file()


FAKE_SSH = """#!/bin/sh
# Records the key git's ssh was given, then serves the remote locally (as sshd would).
while [ $# -gt 1 ]; do
    case "$1" in
        -i) stat -c '%a' "$2" >> "$LOG"; cat "$2" >> "$LOG"; shift 2 ;;
        -o|-p) shift 2 ;;
        -*) shift ;;
        *) host="$1"; shift ;;
    esac
done
exec sh -c "$1"
"""


def test_a_deploy_key_from_a_secret_block_is_used_for_the_fetch_only(
    repo: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, remote, a = repo
    bin_dir, log = tmp_path / "bin", tmp_path / "ssh.log"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("LOG", str(log))
    monkeypatch.setenv("FLEETFLOW_SECRET_GIT_DEPLOY_KEY", "-----BEGIN KEY-----\nsecret\n")
    monkeypatch.delenv("GIT_SSH_COMMAND", raising=False)
    checkout(f"ssh://git.example{remote}", a, ssh_key_secret="git-deploy-key")
    assert log.read_text().splitlines() == ["600", "-----BEGIN KEY-----", "secret"]
    assert "GIT_SSH_COMMAND" not in os.environ
    assert not list(Path(tempfile.gettempdir()).glob("fleetflow-git-*"))


def test_old_unused_trees_are_pruned_recent_ones_kept(
    repo: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work, remote, first = repo
    monkeypatch.setattr(checkout_module, "KEEP_TREES", 1)
    tree = Path(checkout(remote.as_uri(), first)["directory"])
    second = commit(work, "playbooks/stamp.yml", "second\n")
    git(work, "push", "-q", "origin", "main")
    checkout(remote.as_uri(), second)
    assert tree.is_dir()  # beyond KEEP_TREES but used within PRUNE_AFTER
    old = time.time() - checkout_module.PRUNE_AFTER - 60
    os.utime(tree.parent / f"{first}.digest", (old, old))
    third = commit(work, "playbooks/stamp.yml", "third\n")
    git(work, "push", "-q", "origin", "main")
    checkout(remote.as_uri(), third)
    assert not tree.exists() and (tree.parent / third).is_dir()
