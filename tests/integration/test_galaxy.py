"""Roles and collections from outside the repository (requirements.yml, `make galaxy`),
for real. Galaxy is not reachable here, so the sources are local: a collection made and
built with ansible-galaxy, a role from a git repository (at a tag, with a later commit
that must not be installed) and a role from a tarball. They are installed by the make
target's own command into a project copy, run by fleetflow on the lab hosts over SSH,
and read by `fleetflow check`: syntax-checked, not linted."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import flow

from fleetflow import HostStatus, PlaybookResult, run_playbook
from fleetflow.lab import Lab

from ..conftest import REPO
from .runs import fleetflow_check

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
HOST_FILES = ("/etc/ff-banner", "/etc/ff-sysnote", "/etc/ff-motd", "/etc/ff-stamp")

# Vendored content in its authors' style, which is not ours: no FQCN, key=value
# arguments, `yes`, a task without a name. The linters must not see it.
BANNER_TASKS = """\
- name: write the banner
  copy: dest=/etc/ff-banner content="banner {{ banner_release }}\\n" mode=0644
- file: path=/etc/ff-banner owner=root
  become: yes
"""
STAMP_MODULE = '''\
#!/usr/bin/python
DOCUMENTATION = r"""
module: stamp
short_description: Write one line to a file.
options:
  path: {type: path, required: true, description: The file.}
  text: {type: str, required: true, description: Its line.}
"""
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={"path": {"type": "path", "required": True},
                       "text": {"type": "str", "required": True}},
    )
    path, text = module.params["path"], module.params["text"] + "\\n"
    try:
        with open(path) as current:
            same = current.read() == text
    except FileNotFoundError:
        same = False
    if not same:
        with open(path, "w") as new:
            new.write(text)
    module.exit_json(changed=not same, path=path)


if __name__ == "__main__":
    main()
'''
PLAYBOOK = """\
---
- name: Use roles and a collection from outside the repository
  hosts: all
  roles:
    - role: banner
    - role: sysnote
    - role: acme.tools.motd
  tasks:
    - name: Stamp each host with the collection's module
      acme.tools.stamp:
        path: /etc/ff-stamp
        text: "stamped {{ inventory_hostname }}"
"""
# One problem of each linter in a file of ours: the linters ran and would say so.
OWN_STYLE = """\
---
- name: A playbook of ours with a style problem
  hosts: all
  tasks:
    - name: Run a command that changes nothing
      ansible.builtin.command: "true"
      become: yes
"""


def _sh(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _role_meta(name: str) -> str:
    return textwrap.dedent(f"""\
        galaxy_info:
          role_name: {name}
          author: acme
          description: {name} for the test
          license: MIT
          min_ansible_version: "2.15"
        """)


def _git_role(root: Path) -> Path:
    """A role in a git repository: v1.0.0 is tagged; a later commit says 2.0."""
    repo = root / "banner"
    _write(repo / "tasks/main.yml", BANNER_TASKS)
    _write(repo / "defaults/main.yml", 'banner_release: "1.0"\n')
    _write(repo / "meta/main.yml", _role_meta("banner"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    _sh(["git", "init", "-q"], repo)
    _sh([*git, "add", "."], repo)
    _sh([*git, "commit", "-qm", "Banner 1.0"], repo)
    _sh(["git", "tag", "v1.0.0"], repo)
    (repo / "defaults/main.yml").write_text('banner_release: "2.0"\n')
    _sh([*git, "commit", "-qam", "Banner 2.0"], repo)
    return repo


def _tarball_role(root: Path) -> Path:
    role = root / "sysnote-src" / "sysnote"
    _write(role / "tasks/main.yml", textwrap.dedent("""\
        - name: Write the system note
          ansible.builtin.copy:
            dest: /etc/ff-sysnote
            content: "sysnote\\n"
            mode: "0644"
        """))  # fmt: skip
    _write(role / "meta/main.yml", _role_meta("sysnote"))
    tarball = root / "sysnote-1.0.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(role, arcname="sysnote")
    return tarball


def _collection(root: Path) -> Path:
    """acme.tools 1.0.0 (a module and a role), made and built by ansible-galaxy."""
    galaxy = str(BIN / "ansible-galaxy")
    _sh([galaxy, "collection", "init", "acme.tools", "--init-path", str(root / "src")], root)
    source = root / "src/acme/tools"
    _write(source / "plugins/modules/stamp.py", STAMP_MODULE)
    _write(source / "roles/motd/tasks/main.yml", textwrap.dedent("""\
        - name: Write the message of the day
          ansible.builtin.copy:
            dest: /etc/ff-motd
            content: "motd from acme.tools\\n"
            mode: "0644"
        """))  # fmt: skip
    _sh([galaxy, "collection", "build", str(source), "--output-path", str(root / "dist")], root)
    return root / "dist/acme-tools-1.0.0.tar.gz"


@pytest.fixture(scope="module")
def requirements(tmp_path_factory: pytest.TempPathFactory) -> str:
    """requirements.yml naming the three local sources."""
    root = tmp_path_factory.mktemp("galaxy-sources")
    return textwrap.dedent(f"""\
        ---
        roles:
          - name: banner
            src: git+file://{_git_role(root)}
            version: v1.0.0
          - name: sysnote
            src: file://{_tarball_role(root)}
        collections:
          - name: {_collection(root)}
            type: file
        """)


def _install(project: Path) -> subprocess.CompletedProcess[str]:
    """What `make galaxy` runs, from the project's root."""
    return subprocess.run(
        [str(BIN / "python"), "-m", "fleetflow.ops.galaxy"], cwd=project,
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture
def project(tmp_path: Path, requirements: str) -> Path:
    """A small project: the repository's Ansible and lint settings, the stack file, no
    deployments, a playbook using the outside content, and that content's requirements."""
    root = tmp_path / "project"
    (root / "inventory").mkdir(parents=True)
    for name in ("ansible.cfg", ".yamllint", ".ansible-lint"):
        shutil.copy(REPO / name, root / name)
    _write(root / "deployments/stack.yaml", (REPO / "deployments/stack.yaml").read_text())
    _write(root / "deployments/prefect.yaml", "---\ndeployments: []\n")
    _write(root / "playbooks/external.yml", PLAYBOOK)
    _write(root / "requirements.yml", requirements)
    return root


@flow
def one_run(project_dir: Path, inventory: str) -> PlaybookResult:
    return run_playbook("external", inventory=inventory, project_dir=project_dir)


@pytest.fixture
def clean_hosts(lab: Lab) -> Iterator[None]:
    """The lab is shared by the session: the files this module writes go again after."""
    command = f"rm -f {' '.join(HOST_FILES)}"
    for host in lab.hosts():
        lab.ssh(host.name, command)
    yield
    for host in lab.hosts():
        lab.ssh(host.name, command)


@pytest.mark.usefixtures("prefect_server", "clean_hosts")
def test_installed_roles_and_collection_run_on_the_lab(lab: Lab, project: Path) -> None:
    root = project
    done = _install(root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "installed 2 roles (banner, sysnote), 1 collections (acme.tools)" in done.stdout
    again = _install(root)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr

    result = one_run(root, str(lab.inventory_dir))

    assert sorted(result.hosts) == sorted(h.name for h in lab.hosts())
    for host in lab.hosts():
        assert result.hosts[host.name].status == HostStatus.CHANGED, result.hosts[host.name]
        files = lab.ssh(host.name, f"cat {' '.join(HOST_FILES)}")
        assert files.returncode == 0, f"{host.name}: {files.stderr}"
        # The tag's release, not the later commit's: the version of requirements.yml counts.
        assert files.stdout.splitlines() == [
            "banner 1.0",
            "sysnote",
            "motd from acme.tools",
            f"stamped {host.name}",
        ], host.name


def _errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stdout.splitlines() if line.startswith("ERROR")]


def test_check_syntax_checks_the_installed_content_and_lints_only_ours(project: Path) -> None:
    root = project
    missing = fleetflow_check(root, "--no-lint")
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert sorted(_errors(missing)) == [
        "ERROR playbooks/external.yml: banner is listed in requirements.yml but not "
        "installed: run `make galaxy` ([ERROR]: The role 'banner' was not found in: "
        f"{root}/playbooks/roles:{root}/roles:{root}/galaxy/roles:{root}/playbooks)",
        "ERROR requirements.yml: not installed yet: run `make galaxy`",
    ], missing.stdout

    assert _install(root).returncode == 0
    _write(root / "playbooks/own_style.yml", OWN_STYLE)
    linted = fleetflow_check(root)
    errors = _errors(linted)
    assert [line.split(":")[0] for line in errors] == ["ERROR yamllint", "ERROR ansible-lint"], (
        linted.stdout
    )
    for line in errors:
        assert "playbooks/own_style.yml" in line and "galaxy/" not in line, line
    assert "no-changed-when" in errors[1], errors[1]

    (root / "playbooks/own_style.yml").unlink()
    tasks = root / "galaxy/roles/banner/tasks/main.yml"
    with tasks.open("a") as broken:
        broken.write("- name: Two actions in one task\n  copy: dest=/tmp/x\n  file: path=/tmp/x\n")
    syntax = fleetflow_check(root, "--no-lint")
    assert syntax.returncode == 1, syntax.stdout
    [error] = _errors(syntax)
    assert error.startswith("ERROR playbooks/external.yml: [ERROR]: conflicting action"), error
    assert f"Origin: {tasks}:" in error, error
