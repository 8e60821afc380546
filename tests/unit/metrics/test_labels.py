"""Metric labels take the repository's playbook and inventory names, else "other"."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetflow.metrics._labels import OTHER, RepositoryNames


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for name in ("ping.yml", "site.yaml", "notes.txt"):
        (tmp_path / "playbooks" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "playbooks" / name).write_text("[]\n")
    for env in ("lab", "production"):
        (tmp_path / "inventory" / env).mkdir(parents=True)
    (tmp_path / "inventory" / "README.md").write_text("not an environment\n")
    return tmp_path


@pytest.fixture
def names(repo: Path) -> RepositoryNames:
    return RepositoryNames(project_dir=lambda: repo)


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("ping", "ping"),
        ("site", "site"),
        ("x" * 200_000, OTHER),
        ("/tmp/evil.yml", OTHER),
        ("evil", OTHER),
        ("notes", OTHER),
        ("playbooks/ping.yml", OTHER),
        (None, OTHER),
    ],
)
def test_playbook_labels_are_repository_names(
    names: RepositoryNames, value: object, label: str
) -> None:
    assert names.playbook(value) == label


def test_absolute_paths_count_only_inside_the_playbooks_folder(
    names: RepositoryNames, repo: Path
) -> None:
    playbooks = repo.resolve() / "playbooks"
    assert names.playbook(str(playbooks / "ping.yml")) == "ping"
    assert names.playbook(str(playbooks / "site.yaml")) == "site"
    assert names.playbook(str(playbooks / "notes.txt")) == OTHER
    assert names.playbook(str(playbooks / "sub" / "ping.yml")) == OTHER
    assert names.playbook(f"{playbooks}/../../tmp/ping.yml") == OTHER
    assert names.playbook(str(repo.resolve() / "elsewhere" / "ping.yml")) == OTHER
    assert names.playbook(str(playbooks)) == OTHER


def test_inventory_labels_are_environment_directories(names: RepositoryNames, repo: Path) -> None:
    inventory = repo.resolve() / "inventory"
    assert names.inventory("lab") == "lab"
    assert names.inventory(str(inventory / "production")) == "production"
    assert names.inventory(str(inventory / "production" / "hosts.yml")) == "production"
    assert names.inventory("README.md") == OTHER
    assert names.inventory("/tmp/evil") == OTHER
    assert names.inventory("x" * 200_000) == OTHER
    assert names.inventory(str(inventory / ".." / "inventory2" / "lab")) == OTHER


def test_the_listing_is_reread_at_most_every_minute(repo: Path) -> None:
    now = [0.0]
    reads = []

    def project_dir() -> Path:
        reads.append(now[0])
        return repo

    names = RepositoryNames(project_dir=project_dir, clock=lambda: now[0])
    assert names.playbook("deploy") == OTHER
    (repo / "playbooks" / "deploy.yml").write_text("[]\n")
    now[0] = 59.0
    assert names.playbook("deploy") == OTHER  # still the cached listing
    now[0] = 61.0
    assert names.playbook("deploy") == "deploy"
    assert reads == [0.0, 61.0]


def test_the_project_dir_comes_from_fleetflow_settings(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETFLOW_PROJECT_DIR", str(repo))
    names = RepositoryNames()
    assert names.playbook("ping") == "ping" and names.inventory("production") == "production"
