"""What the engine logs through: a stdlib logger, or an adapter over one (RunLog, Prefect's)."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["Logger"]

Logger = logging.Logger | logging.LoggerAdapter[Any]
