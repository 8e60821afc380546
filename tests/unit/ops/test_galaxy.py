"""requirements.yml: what it may say, how galaxy/ compares with it, the hint `fleetflow
check` gives, and the install's bookkeeping (ansible-galaxy itself faked here; the real
one runs in tests/integration/test_galaxy.py)."""

from __future__ import annotations

import configparser
import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from fleetflow.exceptions import ConfigurationError, FleetflowError
from fleetflow.ops import galaxy
from fleetflow.ops.galaxy import (
    COLLECTIONS_DIR,
    REQUIREMENTS_FILE,
    ROLES_DIR,
    CollectionRequirement,
    RoleRequirement,
    install,
    install_status,
    load_requirements,
)

from ...conftest import REPO


def _requirements(tmp_path: Path, text: str) -> Path:
    path = tmp_path / REQUIREMENTS_FILE
    path.write_text(textwrap.dedent(text))
    return path


def test_every_source_form_and_the_name_it_installs_as(tmp_path: Path) -> None:
    found = load_requirements(
        _requirements(
            tmp_path,
            """\
            roles:
              - geerlingguy.git
              - https://git.example.com/ansible/role-pip.git,v2.1.0
              - git+https://git.example.com/ansible/role-pip.git,v2.1.0,pip
              - src: git+file:///srv/roles/banner.git
                version: v1.0.0
              - src: https://artifacts.example.com/roles/supervisor-1.4.0.tar.gz
                name: supervisor
              - name: geerlingguy.supervisor
                version: "3.1.0"
              - role: old.style
            collections:
              - community.general:>=9.0.0
              - name: ansible.posix
                version: ">=1.5.0"
                source: https://hub.example.com/api/galaxy/
              - name: vendor/acme-tools-1.2.0.tar.gz
                type: file
            """,
        )
    )
    assert [r.name for r in found.roles] == [
        "geerlingguy.git",
        "role-pip",
        "pip",
        "banner",
        "supervisor",
        "geerlingguy.supervisor",
        "old.style",
    ]
    assert found.roles[3] == RoleRequirement("banner", "git+file:///srv/roles/banner.git")
    assert [c.fqcn for c in found.collections] == ["community.general", "ansible.posix", None]
    assert found.collections[2] == CollectionRequirement("vendor/acme-tools-1.2.0.tar.gz", "file")
    assert not found.empty


def test_the_repository_file_is_empty_and_its_commented_example_is_valid(
    tmp_path: Path,
) -> None:
    path = REPO / REQUIREMENTS_FILE
    assert load_requirements(path).empty
    example = "\n".join(
        line.removeprefix("# ")
        for line in path.read_text().splitlines()
        if re.match(r"# (roles|collections|  )", line)
    )
    found = load_requirements(_requirements(tmp_path, example))
    assert [r.name for r in found.roles] == ["geerlingguy.git", "pip", "supervisor"]
    assert [c.type for c in found.collections] == ["galaxy", "git", "file"]


def test_a_list_is_the_older_roles_only_format(tmp_path: Path) -> None:
    found = load_requirements(_requirements(tmp_path, "- src: geerlingguy.git\n"))
    assert [r.name for r in found.roles] == ["geerlingguy.git"] and not found.collections


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("role: []\n", "requirements.yml: unknown key 'role' (only 'roles' and 'collections')"),
        (
            "roles:\n  - src: geerlingguy.git\n    verison: 1.0.0\n",
            "requirements.yml: roles[0]: unknown key 'verison' (a role takes name, scm, src, "
            "version)",
        ),
        (
            "collections:\n  - name: a.b\n    typ: file\n",
            "requirements.yml: collections[0]: unknown key 'typ'",
        ),
        (
            "collections:\n  - name: ./acme-tools-1.0.0.tar.gz\n",
            "collections[0]: './acme-tools-1.0.0.tar.gz' is not namespace.collection",
        ),
        ("collections:\n  - name: a.b\n    type: svn\n", "collections[0]: type 'svn' is not"),
        ("roles:\n  - src: x\n    scm: svn\n", "roles[0]: scm 'svn' is not one of git, hg"),
        ("roles:\n  - version: 1.0.0\n", "roles[0]: a role needs 'src'"),
        ("roles:\n  - [a, b]\n", "roles[0]: a role is a name or a mapping"),
        ("roles:\n  - a,b,c,d\n", "roles[0]: 'a,b,c,d' is not 'source[,version[,name]]'"),
        ("roles: geerlingguy.git\n", "requirements.yml: 'roles' is a list"),
        ("collections:\n  - {}\n", "collections[0]: a collection needs a 'name'"),
        ("just text\n", "requirements.yml: expected 'roles:' and 'collections:' lists"),
        ("roles: [\n", "requirements.yml is not valid YAML: "),
    ],
)
def test_a_bad_file_is_refused_saying_where(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_requirements(_requirements(tmp_path, text))
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_missing_file_is_refused_saying_what_it_is_for(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"requirements.yml not found .*roles: \[\]"):
        load_requirements(tmp_path / REQUIREMENTS_FILE)


LISTED = """\
roles:
  - name: banner
    src: git+file:///srv/banner.git
collections:
  - community.general
  - name: /srv/acme-tools-1.0.0.tar.gz
    type: file
"""


def _installed(root: Path, roles: list[str], collections: list[str], digest: str) -> None:
    for role in roles:
        (root / ROLES_DIR / role / "tasks").mkdir(parents=True)
    for fqcn in collections:
        (root / COLLECTIONS_DIR / "ansible_collections" / fqcn.replace(".", "/")).mkdir(
            parents=True
        )
    stamp = {"digest": digest, "roles": roles, "collections": collections}
    (root / "galaxy/.installed.json").write_text(json.dumps(stamp))


def test_status_nothing_to_install(tmp_path: Path) -> None:
    assert install_status(tmp_path).requirements is None
    _requirements(tmp_path, "roles: []\ncollections: []\n")
    assert install_status(tmp_path).pending == ()


def test_status_says_what_is_not_installed(tmp_path: Path) -> None:
    digest = load_requirements(_requirements(tmp_path, LISTED)).digest
    assert install_status(tmp_path).pending == ("not installed yet",)

    _installed(tmp_path, ["banner"], ["community.general", "acme.tools"], digest)
    assert install_status(tmp_path).pending == ()

    (tmp_path / COLLECTIONS_DIR / "ansible_collections/acme/tools").rmdir()
    (tmp_path / ROLES_DIR / "banner/tasks").rmdir()
    (tmp_path / ROLES_DIR / "banner").rmdir()
    assert install_status(tmp_path).pending == (
        "role banner is missing from galaxy/",
        "collection acme.tools is missing from galaxy/",
    )

    _requirements(tmp_path, LISTED + "  - ansible.posix\n")
    assert install_status(tmp_path).pending == ("changed since the last install",)


@pytest.mark.parametrize(
    ("output", "hint"),
    [
        (
            "[ERROR]: The role 'banner' was not found in: /p/roles:/p/galaxy/roles",
            "banner is listed in requirements.yml but not installed: run `make galaxy`",
        ),
        (
            "[ERROR]: couldn't resolve module/action 'community.general.ini_file'. This often",
            "community.general.ini_file is listed in requirements.yml but not installed: "
            "run `make galaxy`",
        ),
        (
            "[ERROR]: The role 'acme.tools.motd' was not found in: /p/roles",
            "requirements.yml: not installed yet: run `make galaxy`",
        ),
        ("[ERROR]: conflicting action statements: copy, file", None),
    ],
)
def test_the_hint_for_a_playbook_that_needs_the_install(
    tmp_path: Path, output: str, hint: str | None
) -> None:
    _requirements(tmp_path, LISTED)
    assert install_status(tmp_path).hint(output) == hint


def test_no_hint_once_installed_as_listed(tmp_path: Path) -> None:
    digest = load_requirements(_requirements(tmp_path, LISTED)).digest
    _installed(tmp_path, ["banner"], ["community.general", "acme.tools"], digest)
    assert install_status(tmp_path).hint("[ERROR]: The role 'banner' was not found") is None


def _no_galaxy(project_dir: Path, kind: str, requirements: Path, into: Path) -> None:
    raise AssertionError(f"ansible-galaxy {kind} install ran")


def test_empty_lists_install_nothing_and_remove_what_was_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(galaxy, "_galaxy", _no_galaxy)
    _requirements(tmp_path, "roles: []\ncollections: []\n")
    assert install(tmp_path).changed is False
    assert not (tmp_path / "galaxy").exists()

    _installed(tmp_path, ["banner"], ["acme.tools"], digest="of an older file")
    result = install(tmp_path)
    assert (result.roles, result.collections, result.changed) == ((), (), True)
    assert sorted(p.name for p in (tmp_path / "galaxy").iterdir()) == [".installed.json"]
    assert install_status(tmp_path).pending == ()
    assert install(tmp_path).changed is False


def test_a_failed_install_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = load_requirements(_requirements(tmp_path, LISTED)).digest
    _installed(tmp_path, ["banner"], ["community.general", "acme.tools"], digest)
    _requirements(tmp_path, LISTED.replace("banner", "banner2"))

    def half_done(project_dir: Path, kind: str, requirements: Path, into: Path) -> None:
        if kind == "collection":
            raise FleetflowError("ansible-galaxy collection install failed")
        (into / "banner2").mkdir(parents=True)

    monkeypatch.setattr(galaxy, "_galaxy", half_done)
    with pytest.raises(FleetflowError, match="collection install failed"):
        install(tmp_path)
    assert sorted(p.name for p in (tmp_path / "galaxy").iterdir()) == [
        ".installed.json",
        "collections",
        "roles",
    ]
    assert [p.name for p in (tmp_path / ROLES_DIR).iterdir()] == ["banner"]
    assert install_status(tmp_path).pending == ("changed since the last install",)


def test_ansible_cfg_reads_where_the_install_writes() -> None:
    """The repository's roles first; collections from galaxy/ only."""
    config = configparser.ConfigParser()
    config.read(REPO / "ansible.cfg")
    assert config["defaults"]["roles_path"].split(":") == ["roles", ROLES_DIR]
    assert config["defaults"]["collections_path"] == COLLECTIONS_DIR


def test_git_and_the_linters_leave_the_install_alone() -> None:
    assert "/galaxy/" in (REPO / ".gitignore").read_text().splitlines()
    yamllint = yaml.safe_load((REPO / ".yamllint").read_text())
    assert "galaxy/" in yamllint["ignore"].splitlines()
    ansible_lint = yaml.safe_load((REPO / ".ansible-lint").read_text())
    assert "galaxy/" in ansible_lint["exclude_paths"]
    assert ansible_lint["offline"] is True  # it would install requirements.yml again itself


def test_make_galaxy_runs_the_installer() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^galaxy:.*\n\t(.+)$", makefile, re.M)
    assert recipe and recipe[1] == "$(BIN)/python -m fleetflow.ops.galaxy"
    for target in ("lint", "demo", "integration"):
        assert re.search(rf"^{target}:.*\bgalaxy\b", makefile, re.M), target
