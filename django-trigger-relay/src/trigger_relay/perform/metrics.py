"""The worker's own metrics (guarantees §6.5), through the Temporal SDK's metric meter.

``manage.py trigger_relay_worker`` with ``TRIGGER_RELAY_WORKER_METRICS_ADDR`` set serves
the SDK's Prometheus endpoint (the runtime's metrics: activity schedule-to-start and
execution latency, failures, task slots, pollers); :func:`install` gives the add-on's own
instruments the same runtime's meter, so they appear on that endpoint too, labelled with the
worker's ``namespace`` and ``task_queue`` (and the SDK's ``service_name``). Without the
setting the runtime's meter is the SDK's no-op one; outside the worker (tests calling
:func:`trigger_relay.perform.core.perform`, a shell) nothing is installed and recording does
nothing.

The names as Prometheus shows them (the SDK adds no prefix or suffix to these):

- ``trigger_relay_worker_firings_total`` (counter; ``outcome``, ``reason``): one per attempt
  of ``perform_firing`` that ended: ``done`` (reason empty), ``skipped`` (reason: the skip
  reason, docs/contract.md), ``failed`` (the firing fails: a non-retryable error, or any
  error on the retry policy's last attempt; reason ``site_error`` or
  ``infrastructure_error``), ``retryable`` (an error Temporal retries: attempts are left;
  same reasons);
- ``trigger_relay_worker_action_errors_total`` (counter; ``action_type``, the action's class
  name): an action's ``perform`` raised (``Activity.Cancel`` is no error);
- ``trigger_relay_worker_ledger_skips_total`` (counter): actions not performed because the
  ledger had them already (a retry, a replay, a duplicate delivery);
- ``trigger_relay_worker_lock_wait_seconds`` (histogram): time to take ``Activity.lock`` (the
  user's Activity of the trigger, ``SELECT ... FOR UPDATE``), waiting for other firings of
  the same user and trigger included.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from temporalio.common import MetricCounter
from temporalio.common import MetricHistogramFloat
from temporalio.common import MetricMeter

from trigger_relay.states import Outcome
from trigger_relay.states import State

FIRINGS: Final = "trigger_relay_worker_firings_total"
ACTION_ERRORS: Final = "trigger_relay_worker_action_errors_total"
LEDGER_SKIPS: Final = "trigger_relay_worker_ledger_skips_total"
LOCK_WAIT: Final = "trigger_relay_worker_lock_wait_seconds"

#: Buckets of the lock wait, in seconds: an uncontended lock takes a statement's time (well
#: under 5 ms); a wait is as long as the holder's actions, up to TRIGGER_RELAY_LOCK_TIMEOUT
#: (default 30).
LOCK_WAIT_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: Outcomes of ``trigger_relay_worker_firings_total`` besides the firing's own
#: (:class:`trigger_relay.states.Outcome`): the firing fails (its row becomes ``failed``), or
#: the attempt is retried.
FAILED: Final = State.FAILED.value
RETRY: Final = "retryable"
#: Reasons of a failed or retried attempt.
SITE_ERROR: Final = "site_error"
INFRASTRUCTURE_ERROR: Final = "infrastructure_error"


@dataclass(frozen=True)
class _Instruments:
    firings: MetricCounter
    action_errors: MetricCounter
    ledger_skips: MetricCounter
    lock_wait: MetricHistogramFloat


_instruments: _Instruments | None = None
_lock = threading.Lock()


def install(meter: MetricMeter, *, namespace: str, task_queue: str) -> None:
    """Record into ``meter`` (the worker's runtime's) from now on, every series labelled with
    the worker's namespace and task queue. The series a dashboard and alerts read are
    exported at 0 at once, before the first firing."""
    global _instruments
    labelled = meter.with_additional_attributes({"namespace": namespace, "task_queue": task_queue})
    instruments = _Instruments(
        firings=labelled.create_counter(
            FIRINGS, "Attempts of perform_firing that ended, by outcome and reason."
        ),
        action_errors=labelled.create_counter(
            ACTION_ERRORS, "Exceptions raised by an action's perform, by the action's class."
        ),
        ledger_skips=labelled.create_counter(
            LEDGER_SKIPS, "Actions not performed because the ledger had them already."
        ),
        lock_wait=labelled.create_histogram_float(
            LOCK_WAIT, "Seconds taken to lock the user's Activity of the trigger."
        ),
    )
    instruments.firings.add(0, {"outcome": Outcome.DONE.value, "reason": ""})
    instruments.firings.add(0, {"outcome": FAILED, "reason": SITE_ERROR})
    instruments.ledger_skips.add(0)
    with _lock:
        _instruments = instruments


def uninstall() -> None:
    """Stop recording: the instruments hold the runtime, which the worker must be able to
    drop before the interpreter exits (see :func:`trigger_relay.worker.process.run`)."""
    global _instruments
    with _lock:
        _instruments = None


def firing(outcome: str, reason: str | None) -> None:
    instruments = _instruments
    if instruments is not None:
        # Plain text for the SDK's metric attributes (an outcome may be a str enum member).
        instruments.firings.add(1, {"outcome": str(outcome), "reason": str(reason or "")})


def action_error(action: object) -> None:
    instruments = _instruments
    if instruments is not None:
        instruments.action_errors.add(1, {"action_type": type(action).__name__})


def ledger_skips(count: int) -> None:
    instruments = _instruments
    if instruments is not None and count > 0:
        instruments.ledger_skips.add(count)


def lock_wait(seconds: float) -> None:
    instruments = _instruments
    if instruments is not None:
        instruments.lock_wait.record(max(seconds, 0.0))


#: Buckets of the SDK's activity latencies, in seconds, finer than its defaults (0.1, 0.5, 1,
#: 5, 10, 100, 1000 for schedule-to-start): a p95 of schedule-to-start between 0.1 s and
#: 0.5 s is the difference between a worker that keeps up and one that does not.
SCHEDULE_TO_START: Final = "temporal_activity_schedule_to_start_latency"
EXECUTION: Final = "temporal_activity_execution_latency"
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    1800.0,
)


def bucket_overrides() -> Mapping[str, list[float]]:
    """For the SDK's ``PrometheusConfig.histogram_bucket_overrides``."""
    return {
        LOCK_WAIT: list(LOCK_WAIT_BUCKETS),
        SCHEDULE_TO_START: list(LATENCY_BUCKETS),
        EXECUTION: list(LATENCY_BUCKETS),
    }
