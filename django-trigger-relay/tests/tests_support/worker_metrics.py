"""A harness whose Python worker serves its metrics (``TRIGGER_RELAY_WORKER_METRICS_ADDR``)."""

from __future__ import annotations

from tests_support.harness import Harness
from tests_support.harness import HarnessError
from tests_support.processes import free_port
from trigger_relay.worker import METRICS_ADDR


def start_with_worker_metrics(harness: Harness) -> str:
    """Start ``harness`` with the worker's metrics on a free port; returns that address. The
    caller holds the database unblocked and the settings the firings need."""
    harness.worker.env[METRICS_ADDR] = f"127.0.0.1:{free_port()}"
    try:
        harness.start()
    except HarnessError:
        # free_port() picked a port that another process took first: once more.
        if "Address already in use" not in harness.worker.tail(10):
            raise
        harness.worker.env[METRICS_ADDR] = f"127.0.0.1:{free_port()}"
        harness.start_worker()
    return harness.worker.env[METRICS_ADDR]
