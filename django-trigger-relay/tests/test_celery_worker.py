"""Celery-routed firings reach Celery only, Temporal-routed ones never do (guarantees §2.3).

A real Celery worker (the example site's app, solo pool) runs in a subprocess against the
run's own Redis queue and the test database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from tasks.models import SentEmail
from tests_support.broker import CeleryQueue
from tests_support.celery_worker import celery_worker as start_celery_worker
from tests_support.factories import make_task
from tests_support.factories import make_trigger
from tests_support.processes import tail
from tests_support.processes import wait_for

from trigger_relay.models import OutboxRow


@pytest.fixture
def celery_worker(
    transactional_db: None, tmp_path: Path, celery_queue: CeleryQueue
) -> Iterator[Path]:
    """A Celery worker on the test database (tests_support/celery_worker.py); yields its log
    file."""
    with start_celery_worker(tmp_path / "celery-worker.log") as worker:
        yield worker.log


def wait_for_email(subject_prefix: str, log: Path) -> SentEmail:
    return wait_for(
        lambda: SentEmail.objects.filter(subject__startswith=subject_prefix).first(),
        timeout=60,
        interval=0.2,
        what=f"SentEmail {subject_prefix!r} from the worker",
        log=log,
    )


@override_settings(
    TRIGGER_RELAY_ROUTES={"Via Temporal": "temporal", "Via Celery": "celery"},
    TRIGGER_RELAY_DEFAULT_ROUTE="celery",
)
def test_celery_route_runs_in_celery_only_and_temporal_route_never_reaches_celery(
    tx_user: Any, celery_worker: Path, celery_queue: CeleryQueue
) -> None:
    """guarantees §2.3: a firing goes to exactly one of Temporal and Celery."""
    via_temporal = make_trigger("Via Temporal")
    via_celery = make_trigger("Via Celery")
    task = make_task(tx_user, "Routed work")

    # Fires both triggers in event id order: the Temporal-routed one first, so that had it
    # reached the broker, the worker (one queue, solo pool) would have run it before the other.
    task.complete()

    email = wait_for_email("Via Celery #1", celery_worker)
    assert email.user == tx_user
    assert email.context == {
        "task_id": task.pk,
        "task_title": "Routed work",
        "task_important": False,
    }
    assert email.subject == "Via Celery #1: Routed work"

    (row,) = OutboxRow.objects.all()
    assert (row.trigger_id, row.event_id) == (via_temporal.trigger_id, via_temporal.pk)
    assert not OutboxRow.objects.filter(trigger_id=via_celery.trigger_id).exists()
    assert not SentEmail.objects.filter(trigger_name="Via Temporal").exists()
    assert celery_queue.tasks() == []
    assert "ERROR" not in tail(celery_worker, 200)


def test_switching_route_between_firings(
    tx_user: Any, celery_worker: Path, celery_queue: CeleryQueue
) -> None:
    """guarantees §2.3: routes change at any time without losing or doubling a firing."""
    make_trigger("Switching")
    first, second, third = (make_task(tx_user, title) for title in ("one", "two", "three"))

    with override_settings(TRIGGER_RELAY_ROUTES={"Switching": "celery"}):
        first.complete()
    with override_settings(TRIGGER_RELAY_ROUTES={"Switching": "temporal"}):
        second.complete()
    with override_settings(TRIGGER_RELAY_ROUTES={"Switching": "celery"}):
        third.complete()

    wait_for_email("Switching #1: three", celery_worker)
    sent = list(SentEmail.objects.order_by("id").values_list("subject", flat=True))
    assert sent == ["Switching #1: one", "Switching #1: three"]
    assert [row.context["task_title"] for row in OutboxRow.objects.all()] == ["two"]
