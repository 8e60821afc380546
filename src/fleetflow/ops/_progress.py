"""Shows the library's progress records on stderr: phases as lines with the time since
the command started, countable steps as a bar redrawn in place on a terminal (elsewhere a
line now and then, so a CI log still shows how far a slow build got)."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from fleetflow._progress import PROGRESS_LOGGER, STEP_ATTRIBUTE

__all__ = ["ProgressHandler", "show_progress"]

_BAR_WIDTH = 30
_LOG_STEP_SECONDS = 5.0


class ProgressHandler(logging.Handler):
    def __init__(self, stream: TextIO, *, terminal: bool) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.terminal = terminal
        self.started = time.monotonic()
        self._open_bar = False  # a bar line without its newline yet
        self._lines: dict[str, float] = {}  # step -> when its last line was written

    def emit(self, record: logging.LogRecord) -> None:
        try:
            clock = f"{time.monotonic() - self.started:6.1f} s  "
            step = getattr(record, STEP_ATTRIBUTE, None)
            if step is not None and self.terminal:
                self._bar(clock, *step)
            elif step is None or self._worth_a_line(*step):
                self._end_bar()
                self.stream.write(clock + record.getMessage() + "\n")
            self.stream.flush()
        except Exception:  # a progress line must never break the work it reports on
            self.handleError(record)

    def _worth_a_line(self, done: int, total: int, what: str) -> bool:
        """In a log: a step's first and last count, and one line per few seconds between
        (129 lines for the image's downloads would bury everything else)."""
        now = time.monotonic()
        last = self._lines.get(what)
        if last is None or done == total or now - last >= _LOG_STEP_SECONDS:
            self._lines[what] = now
            return True
        return False

    def _bar(self, clock: str, done: int, total: int, what: str) -> None:
        if total:
            filled = _BAR_WIDTH * min(done, total) // total
            bar = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{total}"
        else:
            bar = str(done)
        self.stream.write(f"\r{clock}{what} {bar}\x1b[K")
        self._open_bar = not total or done < total
        if not self._open_bar:
            self.stream.write("\n")

    def _end_bar(self) -> None:
        if self._open_bar:
            self.stream.write("\n")
            self._open_bar = False


def show_progress(stream: TextIO | None = None) -> ProgressHandler:
    """Show progress records on `stream` (stderr) from now on; returns the handler."""
    out = stream or sys.stderr
    handler = ProgressHandler(out, terminal=out.isatty())
    logger = logging.getLogger(PROGRESS_LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, ProgressHandler)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # Shown here only: with -v the root handler would print every line twice.
    logger.propagate = False
    return handler
