"""Prometheus metrics for fleetflow, read from the Prefect API (`fleetflow exporter`)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from prefect.client.orchestration import get_client
from prometheus_client import disable_created_metrics, start_http_server

from fleetflow.metrics._exporter import Exporter
from fleetflow.metrics._families import Families, new_families, served_names

__all__ = ["Exporter", "Families", "new_families", "serve", "served_names"]

logger = logging.getLogger(__name__)


def serve(
    address: str,
    port: int,
    interval: float,
    since: datetime | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve /metrics on address:port, reading the Prefect API every `interval` seconds,
    until `stop` is set (or forever)."""
    # _created series double the series count and no dashboard uses them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    families = new_families()
    exporter = Exporter(families, since=since)
    server, thread = start_http_server(port, address, registry=families.registry)
    stop = stop or threading.Event()
    try:
        with get_client(sync_client=True) as client:
            while True:
                try:
                    exporter.poll(client)
                except Exception:  # the API may be down: keep serving, count it, retry
                    families.poll_errors.inc()
                    logger.exception("reading the Prefect API failed; retrying in %s s", interval)
                if stop.wait(interval):
                    break
    finally:
        server.shutdown()
        thread.join(5)
