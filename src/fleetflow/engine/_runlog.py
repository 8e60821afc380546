"""A run's log: masked lines, shipped to Prefect in batches, off ansible-runner's thread.

Events arrive on ansible-runner's read loop. A log call through Prefect's handlers costs
about 2 ms here (console formatting, the API handler), so logging there capped a run at
a few hundred events/s and, with a slow consumer, left ansible-playbook blocked on a
full pipe. Lines are queued instead; a pump thread joins what arrived within `interval`
into one record per level (a failed host's ERROR line stays a record of its own level).
Masking happens there too, once per record, with the secrets' forms worked out once.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from types import TracebackType
from typing import Any

from fleetflow.engine.secrets import Masker

_Line = tuple[int, str]


class RunLog(logging.LoggerAdapter[Any]):
    """Use as a context manager: leaving it ships every queued line before returning."""

    def __init__(self, logger: Any, secrets: list[str], interval: float = 0.25) -> None:
        super().__init__(logger, {})
        self.secrets = secrets
        self._mask = Masker(secrets)
        self.interval = interval
        self.lines = 0  # log volume is a metric
        self._queue: queue.SimpleQueue[_Line | None] = queue.SimpleQueue()
        self._pump = threading.Thread(target=self._run, name="fleetflow-log", daemon=True)
        self._pump.start()

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        self.lines += 1
        text = str(msg) % args if args else str(msg)
        self._queue.put((level, text))

    def close(self) -> None:
        if self._pump.is_alive():
            self._queue.put(None)
            self._pump.join()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> None:
        last = 0.0
        while True:
            batch = [self._queue.get()]
            # The first line after a quiet spell goes out at once; a burst waits for the rest.
            time.sleep(max(0.0, last + self.interval - time.monotonic()))
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._emit([line for line in batch if line is not None])
            last = time.monotonic()
            if None in batch:
                return

    def _emit(self, lines: list[_Line]) -> None:
        for level, group in itertools.groupby(lines, key=lambda line: line[0]):
            try:
                self.logger.log(level, "%s", self._mask("\n".join(text for _, text in group)))
            except Exception:  # a broken handler must not stop the pump (or the run)
                logging.getLogger(__name__).exception("could not ship run log lines")
