"""A harness whose Python worker serves its metrics (``TRIGGER_RELAY_WORKER_METRICS_ADDR``),
and the firings that make its series move: one done, one skipped, one failed (the tests of
the worker's endpoint and of the dashboard on Prometheus)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from relay_e2e.models import Flag
from relay_e2e.models import FlagCondition
from relay_e2e.models import RecordAction
from tasks.models import TaskCompletedEvent
from triggers.models import Trigger

from tests_support.harness import Harness
from tests_support.harness import HarnessError
from tests_support.processes import free_port
from trigger_relay.models import OutboxRow
from trigger_relay.worker.settings import METRICS_ADDR

#: A failing action fails the row at its first attempt (not retried: an error of the site).
DAEMON_ENV = {
    "TRIGGER_RELAY_PERFORM_HEARTBEAT_TIMEOUT": "5s",
    "TRIGGER_RELAY_PERFORM_MAX_ATTEMPTS": "2",
    "TRIGGER_RELAY_STICKY_TIMEOUT": "2s",
}


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


def outcome_triggers(prefix: str) -> tuple[Trigger, Trigger, Trigger]:
    """Three triggers whose firings end done, skipped (condition false) and failed (an action
    that raises), named ``<prefix> done``, ``<prefix> skipped`` and ``<prefix> failing``."""
    done_trigger = Trigger.objects.create(name=f"{prefix} done", is_enabled=True)
    RecordAction.objects.create(trigger=done_trigger, label="ok")
    skipped_trigger = Trigger.objects.create(name=f"{prefix} skipped", is_enabled=True)
    FlagCondition.objects.create(trigger=skipped_trigger, flag=f"{prefix}-never-on")
    RecordAction.objects.create(trigger=skipped_trigger, label="never")
    failing_trigger = Trigger.objects.create(name=f"{prefix} failing", is_enabled=True)
    Flag.set(f"{prefix}-mail-down", True)
    RecordAction.objects.create(
        trigger=failing_trigger, label="bad", fail_while=f"{prefix}-mail-down"
    )
    return done_trigger, skipped_trigger, failing_trigger


def fire(trigger: Trigger, user: Any) -> OutboxRow:
    """Fire ``trigger`` for ``user`` in a transaction of its own; the row it added."""
    event = TaskCompletedEvent.objects.create(trigger=trigger, delay=dt.timedelta())
    before = set(OutboxRow.objects.values_list("pk", flat=True))
    with transaction.atomic():
        event.fire_single(user.pk, task_id=1, task_title="t", task_important=False)
    (row,) = OutboxRow.objects.exclude(pk__in=before)
    return row
