"""Every run traceable to the commit it ran, workers running committed content only.

A git repository of its own (a clone of this one plus a `stamp` playbook and the lab as
environment `fleet`) is pushed to a bare remote standing in for the bank's git server and
deployed as `playbook/git` on the queue `git`. The only worker on that queue starts in an
empty directory, with no checkout and no FLEETFLOW_PROJECT_DIR: whatever it runs, its pull
step fetched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from fleetflow.lab import Lab
from fleetflow.stack._procs import MARK_VARIABLE

from ..conftest import REPO
from ..gitrepo import git
from .faults import CONFIG
from .stacks import AUTH, BIN, RunningStack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAMP = "/var/tmp/ff-source-stamp"
DEPLOYMENT = "playbook/git"
PREFECT_YAML = """\
name: fleetflow-source-test
prefect-version: 3.9.1
build: null
push: null
pull:
  - prefect.deployments.steps.set_working_directory:
      directory: "{{ $FLEETFLOW_PROJECT_DIR }}"
deployments:
  - name: git
    entrypoint: flows/playbook.py:playbook
    parameters: {inventory: fleet, time_limit: 600}
    fleetflow: {refs: ["release/*"]}
    work_pool: {name: fleetflow, work_queue_name: git}
"""
PLAYBOOK = """\
---
- name: Stamp the host with this commit's word
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the word
      ansible.builtin.copy:
        content: "{word}\\n"
        dest: {stamp}
        mode: "0644"
"""


@dataclass
class GitStack:
    stack: RunningStack  # commands run in the working clone
    work: Path
    remote: Path
    cache: Path

    def stamp(self, word: str, branch: str = "main") -> str:
        """Commit (and push) the playbook writing `word`; its commit."""
        (self.work / "playbooks" / "stamp.yml").write_text(PLAYBOOK.format(word=word, stamp=STAMP))
        git(self.work, "add", "playbooks/stamp.yml")
        git(self.work, "commit", "-q", "-m", f"stamp {word}")
        git(self.work, "push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        return git(self.work, "rev-parse", "HEAD")

    def deploy(self) -> subprocess.CompletedProcess[str]:
        return self.stack.cli(str(BIN / "fleetflow"), "deploy", "--remote", self.remote.as_uri())

    def run(self, tags: tuple[str, ...] = (), **params: Any) -> str:
        found = self.stack.api("GET", f"/deployments/name/{DEPLOYMENT}")
        body: dict[str, Any] = {"parameters": {"playbook": "stamp", **params}, "tags": list(tags)}
        run = self.stack.api("POST", f"/deployments/{found['id']}/create_flow_run", body)
        return str(run["id"])


def _clone(directory: Path, lab: Lab) -> tuple[Path, Path]:
    remote, work = directory / "remote.git", directory / "work"
    # This repository's last commit as the first commit of a history of its own.
    work.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    git(work, "remote", "add", "origin", remote.as_uri())
    git(work, "add", "-A")
    fleet = work / "inventory" / "fleet"
    shutil.copytree(lab.inventory_dir, fleet, symlinks=False)
    (fleet / ".gitignore").unlink(missing_ok=True)
    (work / "prefect.yaml").unlink()
    (work / "prefect.yaml").write_text(PREFECT_YAML)
    git(work, "add", "-f", "inventory/fleet", "prefect.yaml")
    git(work, "commit", "-q", "-m", "the lab as environment fleet; one deployment")
    return work, remote


@contextlib.contextmanager
def _bare_worker(stack: RunningStack, home: Path) -> Iterator[Path]:
    """A worker on queue `git` started in an empty directory: no checkout, no project dir."""
    home.mkdir()
    env = {
        k: v
        for k, v in stack.env.items()
        if not k.startswith(("FLEETFLOW_PROJECT", "FLEETFLOW_DATABASE"))
    }
    env.update(
        PATH=f"{BIN}:{os.environ['PATH']}", PREFECT_HOME=str(home / "prefect"),
        PREFECT_API_AUTH_STRING=AUTH, PREFECT_WORKER_QUERY_SECONDS="1",
        FLEETFLOW_CODE_CACHE=str(home / "code"), HOME=str(home),
        **{MARK_VARIABLE: str(stack.directory.resolve())},
    )  # fmt: skip
    log = (home / "worker.log").open("w")
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "fleetflow", "--type", "process",
         "--name", "worker-bare", "--work-queue", "git"],
        cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield home / "code"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        log.close()


@pytest.fixture(scope="module")
def source(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitStack]:
    directory = tmp_path_factory.mktemp("source")
    work, remote = _clone(directory, lab)
    (directory / "stack").mkdir()
    with running_stack(directory / "stack", str(lab.inventory_dir), CONFIG) as stack:
        in_clone = replace(
            stack, project=work, env={**stack.env, "FLEETFLOW_PROJECT_DIR": str(work)}
        )
        with _bare_worker(stack, directory / "bare") as cache:
            yield GitStack(in_clone, work, remote, cache)


def _stamp_on_hosts(lab: Lab) -> set[str]:
    return {lab.ssh(h.name, f"cat {STAMP} 2>/dev/null").stdout.strip() for h in lab.hosts()}


def _table_description(stack: RunningStack, run_id: str) -> str:
    rows = stack.query(
        "SELECT description FROM artifact WHERE flow_run_id::text = %s AND type = 'table'",
        run_id,
    )
    return " ".join(str(r[0]) for r in rows)


def test_runs_use_the_deployed_commit_until_the_next_deploy(source: GitStack, lab: Lab) -> None:
    a = source.stamp("alpha")
    deployed = source.deploy()
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert f"runs commit {a[:12]}" in deployed.stdout
    b = source.stamp("bravo")  # committed and pushed, not deployed
    first = source.run()
    source.stack.wait_state(first, "COMPLETED", timeout=240)
    assert _stamp_on_hosts(lab) == {"alpha"}
    assert f"commit {a[:12]} (main)" in _table_description(source.stack, first)
    _wait_history(source.stack, lab.hosts()[0].name, f"last changed by commit {a[:12]}")
    assert source.deploy().returncode == 0
    second = source.run()
    source.stack.wait_state(second, "COMPLETED", timeout=240)
    assert _stamp_on_hosts(lab) == {"bravo"}
    assert f"commit {b[:12]} (main)" in _table_description(source.stack, second)
    assert list(source.cache.glob(f"*/trees/{b}/playbooks/stamp.yml")), "not fetched by the worker"


def test_an_operator_runs_an_allowed_ref_and_is_refused_another(source: GitStack, lab: Lab) -> None:
    if source.deploy().returncode != 0:
        pytest.fail("deploy failed")
    git(source.work, "checkout", "-q", "-b", "release/1")
    release = source.stamp("release-one", branch="release/1")
    git(source.work, "checkout", "-q", "main")
    picked = source.run(tags=("ref:release/1",))
    source.stack.wait_state(picked, "COMPLETED", timeout=240)
    assert _stamp_on_hosts(lab) == {"release-one"}
    assert f"commit {release[:12]} (release/1)" in _table_description(source.stack, picked)
    refused = source.run(tags=("ref:main",))
    source.stack.wait_final(refused)
    state = source.stack.state(refused)
    assert state[0] == "FAILED" and "ref 'main' is not allowed" in state[2], state
    assert _stamp_on_hosts(lab) == {"release-one"}  # nothing ran


def _wait_history(stack: RunningStack, host: str, needle: str, timeout: float = 90) -> None:
    """`fleetflow history HOST` says `needle` (events are stored a moment after the run)."""
    deadline = time.monotonic() + timeout
    while needle not in (said := stack.cli(str(BIN / "fleetflow"), "history", host)).stdout:
        assert time.monotonic() < deadline, said.stdout + said.stderr
        time.sleep(2)


def test_a_dirty_tree_is_refused_at_deploy(source: GitStack) -> None:
    edited = source.work / "playbooks" / "ping.yml"
    original = edited.read_text()
    edited.write_text(original + "# an edit nobody committed\n")
    try:
        refused = source.deploy()
    finally:
        edited.write_text(original)
    assert refused.returncode != 0
    assert "uncommitted changes" in refused.stderr and "playbooks/ping.yml" in refused.stderr


def test_an_approved_plan_is_not_applied_when_the_playbook_changed(
    source: GitStack, lab: Lab
) -> None:
    planned = source.stamp("charlie")
    assert source.deploy().returncode == 0
    run_id = source.run(approval=True)
    source.stack.wait_state(run_id, "PAUSED", timeout=240)
    [tree] = source.cache.glob(f"*/trees/{planned}")
    (tree / "playbooks" / "stamp.yml").write_text(PLAYBOOK.format(word="swapped", stamp=STAMP))
    answer = {"decision": "approve", "approver": "alice", "comment": "ok"}
    response = source.stack.api("POST", f"/flow_runs/{run_id}/resume", {"run_input": answer})
    assert response["status"] == "ACCEPT", response
    final = source.stack.wait_final(run_id)[run_id]
    state = source.stack.state(run_id)
    assert final[0] == "FAILED", state
    assert (
        "content changed since the plan" in state[2]
        and "playbooks/stamp.yml (modified)" in state[2]
    )
    assert _stamp_on_hosts(lab) not in ({"charlie"}, {"swapped"})  # nothing applied
    # The next run of that commit gets the commit's file back, and the changed tree is kept.
    again = source.run()
    source.stack.wait_state(again, "COMPLETED", timeout=240)
    assert _stamp_on_hosts(lab) == {"charlie"}
    assert list(source.cache.glob(f"*/trees/.changed-{planned}-*"))
