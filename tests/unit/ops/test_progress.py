"""Long steps show where they are without -v: phases as lines with the time since the
command started, countable work as a bar on a terminal and as lines in a log."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from fleetflow._progress import PROGRESS_LOGGER, phase, step
from fleetflow.lab._image import _BuildProgress
from fleetflow.ops._progress import ProgressHandler, show_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logger() -> Iterator[None]:
    logger = logging.getLogger(PROGRESS_LOGGER)
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.mark.usefixtures("restore_logger")
def test_in_a_log_phases_are_lines_and_steps_a_few_lines() -> None:
    out = io.StringIO()
    show_progress(out)
    phase("server: healthy after %.1f s", 7.25)
    for done in range(1, 130):
        step("packages downloaded", done)  # counted, total not known: first one, then few
    step("workers online", 1, 3)
    step("workers online", 2, 3)  # within seconds of the first: no line of its own
    step("workers online", 3, 3)
    lines = out.getvalue().splitlines()
    assert [line.split("s  ", 1)[1] for line in lines] == [
        "server: healthy after 7.2 s",
        "packages downloaded: 1",
        "workers online: 1/3",
        "workers online: 3/3",
    ]
    assert all(line.lstrip()[0].isdigit() for line in lines)


@pytest.mark.usefixtures("restore_logger")
def test_a_terminal_gets_one_bar_redrawn_in_place_and_closed_when_done() -> None:
    out = _Terminal()
    show_progress(out)
    step("hosts started", 1, 4)
    step("hosts started", 4, 4)
    phase("next")
    text = out.getvalue()
    first, second = text.split("\r")[1:3]
    assert "[" + "#" * 7 + "." * 23 + "] 1/4" in first and "\n" not in first
    assert "[" + "#" * 30 + "] 4/4\x1b[K\n" in second
    assert text.endswith("next\n") and text.count("\n") == 2


@pytest.mark.usefixtures("restore_logger")
def test_an_unfinished_bar_is_closed_by_the_next_line_and_not_shown_twice_with_v() -> None:
    out, verbose = _Terminal(), io.StringIO()
    root = logging.getLogger()
    shown_by_v = logging.StreamHandler(verbose)  # what -v does: the root logger shows INFO
    root.addHandler(shown_by_v)
    try:
        show_progress(out)
        show_progress(out)  # a second call replaces the handler instead of adding one
        step("packages downloaded", 57)
        phase("image: ready")
    finally:
        root.removeHandler(shown_by_v)
    assert verbose.getvalue() == ""
    assert out.getvalue().count("packages downloaded 57") == 1
    assert "57\x1b[K\n" in out.getvalue() and out.getvalue().endswith("image: ready\n")
    handlers = logging.getLogger(PROGRESS_LOGGER).handlers
    assert sum(isinstance(h, ProgressHandler) for h in handlers) == 1


DEBOOTSTRAP = """I: Retrieving InRelease
I: Validating Packages
I: Retrieving adduser 3.134
I: Validating adduser 3.134
I: Retrieving apt 2.6.1
I: Validating apt 2.6.1
I: Extracting adduser...
I: Unpacking adduser...
I: Unpacking apt...
I: Configuring adduser...
I: Base system installed successfully.
"""


def test_debootstrap_output_counts_downloads_then_installs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = _BuildProgress()
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        for line in DEBOOTSTRAP.splitlines(keepends=True):
            tracker.feed(line)
    assert [r.getMessage() for r in caplog.records] == [
        "image: packages downloaded: 1",
        "image: packages downloaded: 2",
        "image: packages installed: 1/2",
        "image: packages installed: 2/2",
    ]
