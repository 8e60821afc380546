"""Shared fixtures: lab fleets that are always torn down."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetflow.lab import Lab

REPO = Path(__file__).resolve().parents[1]


def unique_lab_name(tag: str) -> str:
    """Lab names unique per test process, so parallel sessions on one machine don't clash."""
    return f"t{os.getpid() % 100000}-{tag}"


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Three running lab hosts (web, db, batch) shared by the session's integration tests."""
    inventory_dir = tmp_path_factory.mktemp("lab-inventory")
    fleet = Lab(unique_lab_name("s"), inventory_dir=inventory_dir)
    try:
        fleet.up(3)
        yield fleet
    finally:
        fleet.down()
