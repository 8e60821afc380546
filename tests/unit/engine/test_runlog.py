"""The run log: lines leave the runner's thread at once and reach Prefect in batches."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from fleetflow.engine._runlog import RunLog

LOGGER = logging.getLogger("ff-runlog-test")


def test_a_burst_becomes_one_record_per_level_in_order(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, LOGGER.name), RunLog(LOGGER, [], interval=0.5) as log:
        log.info("first, after a quiet spell")
        time.sleep(0.1)  # the pump has shipped the first line alone by now
        for n in range(3):
            log.info("h%d | ok | Task", n)
        log.error("h9 | failed | Task: boom")
        log.info("TASK [Next]")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "first, after a quiet spell"),
        ("INFO", "h0 | ok | Task\nh1 | ok | Task\nh2 | ok | Task"),
        ("ERROR", "h9 | failed | Task: boom"),
        ("INFO", "TASK [Next]"),
    ]
    assert log.lines == 6


def test_logging_never_waits_for_the_handlers(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            release.wait(5)

    slow = Slow()
    LOGGER.addHandler(slow)
    try:
        with caplog.at_level(logging.INFO, LOGGER.name), RunLog(LOGGER, []) as log:
            started = time.monotonic()
            for n in range(5000):
                log.info("h%d | ok | Task", n)
            assert time.monotonic() - started < 2  # the handler is still blocked
            release.set()
    finally:
        LOGGER.removeHandler(slow)
    lines = [line for r in caplog.records for line in r.getMessage().splitlines()]
    assert len(lines) == 5000 and lines[-1] == "h4999 | ok | Task"


def test_lines_below_the_level_are_not_counted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, LOGGER.name), RunLog(LOGGER, []) as log:
        log.debug("h1 | skipped | Task")
        log.info("h1 | ok | Task")
    assert log.lines == 1 and caplog.messages == ["h1 | ok | Task"]
