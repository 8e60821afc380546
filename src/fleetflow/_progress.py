"""Progress of long steps (stack up, lab up, the image build), for the CLI to show.

Library code does not print: it logs each phase to one logger, and a step of countable
work with its count. `fleetflow` shows these by default (with the time since the command
started, a bar on a terminal); a program using the library sees them only if it asks.
"""

from __future__ import annotations

import logging

__all__ = ["PROGRESS_LOGGER", "STEP_ATTRIBUTE", "phase", "step"]

PROGRESS_LOGGER = "fleetflow.progress"
# A step's record carries (done, total, what): total 0 when the total is not known yet.
STEP_ATTRIBUTE = "fleetflow_step"
_log = logging.getLogger(PROGRESS_LOGGER)


def phase(message: str, *args: object) -> None:
    """One line: a phase started or ended (ended phases say how long they took)."""
    _log.info(message, *args)


def step(what: str, done: int, total: int = 0) -> None:
    """Countable work: `done` of `total` (0: not known yet) units of `what` finished."""
    shown = f"{done}/{total}" if total else str(done)
    _log.info("%s: %s", what, shown, extra={STEP_ATTRIBUTE: (done, total, what)})
