"""Bad lab input fails before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetflow.exceptions import ConfigurationError, PrerequisiteMissing
from fleetflow.lab import Lab, _image, _prereq
from fleetflow.settings import FleetflowSettings


@pytest.fixture
def settings(tmp_path: Path) -> FleetflowSettings:
    return FleetflowSettings(lab_dir=tmp_path / "labs", image_dir=tmp_path / "images")


@pytest.mark.parametrize("count", [0, -1, 251, 10_000])
def test_absurd_host_count_is_refused(settings: FleetflowSettings, count: int) -> None:
    lab = Lab("x", settings=settings)
    with pytest.raises(ConfigurationError, match="between 1 and 250"):
        lab.up(count)
    assert not settings.lab_dir.exists()


@pytest.mark.parametrize("name", ["", "UPPER", "1abc", "a" * 17, "a/b", "a b"])
def test_bad_lab_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match="lab name"):
        Lab(name)


def test_non_root_gets_a_clear_message(
    settings: FleetflowSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_prereq.os, "geteuid", lambda: 1000)
    with pytest.raises(PrerequisiteMissing, match="needs root"):
        Lab("x", settings=settings).up(2)
    assert not settings.lab_dir.exists()


def test_missing_debootstrap_says_how_to_install_it(
    settings: FleetflowSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = _prereq.shutil.which
    monkeypatch.setattr(
        _prereq.shutil, "which", lambda tool: None if tool == "debootstrap" else real_which(tool)
    )
    monkeypatch.setattr(_prereq.os, "geteuid", lambda: 0)
    with pytest.raises(PrerequisiteMissing, match="apt-get install -y debootstrap"):
        Lab("x", settings=settings).up(2)
    assert not settings.lab_dir.exists()
    assert not _image.image_path(settings.image_dir, "bookworm").exists()


def test_unknown_host_is_a_configuration_error(settings: FleetflowSettings) -> None:
    with pytest.raises(ConfigurationError, match="not up"):
        Lab("x", settings=settings).cut("x-01")
