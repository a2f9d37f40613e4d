"""``perform_firing`` records the outcome on the row itself (docs/performance.md), and says so in
its result (``recorded``), so that the workflow counts the outcome and schedules no
``record_outcome``. Called here in the test process on the real test database, as the activity calls
it; the Temporal side is in test_e2e_workflow.py."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings
from tasks.models import SentEmail
from tests_support.factories import make_trigger
from tests_support.firings import workflow_input

from trigger_relay.models import OutboxRow
from trigger_relay.perform.outcome import OutcomeRecorder
from trigger_relay.perform.outcome import perform_and_record

pytestmark = pytest.mark.django_db


def fired_row(user: Any) -> OutboxRow:
    """A fired row as the relay's claim leaves it: naming the workflow it starts."""
    event = make_trigger("Recorded by perform")
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal"):
        event.fire_single(user.pk, task_id=1, task_title="Ship it", task_important=False)
    row = OutboxRow.objects.get(event_id=event.pk)
    OutboxRow.objects.filter(pk=row.pk).update(workflow_id=f"trigger-outbox-{row.pk}-g0")
    return row


def recorder_of(row: OutboxRow, generation: int | None = None) -> OutcomeRecorder:
    return OutcomeRecorder(
        outbox_id=row.pk,
        generation=row.generation if generation is None else generation,
        firing_uuid=str(row.firing_uuid),
        workflow_id=f"trigger-outbox-{row.pk}-g{row.generation}",
        run_id="run-1",
    )


def test_a_retry_after_a_lost_result_reports_the_outcome_recorded(user: Any) -> None:
    """The first attempt commits the action and ``done``; its result is lost (the worker
    killed after the commit), and Temporal retries. The retry performs nothing, finds the row
    holding ``done`` for this generation and firing, and says ``recorded``: the workflow
    counts the outcome once instead of running ``record_outcome``, which would leave the
    final row alone and count nothing (the outcome metric then missed the firing)."""
    row = fired_row(user)

    first = perform_and_record(workflow_input(row, record_outcome=True), recorder_of(row))
    assert (first.outcome, first.recorded) == ("done", True)
    done = OutboxRow.objects.get(pk=row.pk)
    assert (done.state, done.workflow_id) == ("done", f"trigger-outbox-{row.pk}-g0")

    retry = perform_and_record(workflow_input(row, record_outcome=True), recorder_of(row))

    assert (retry.outcome, retry.recorded) == ("done", True)
    assert retry.already_performed  # nothing performed twice
    assert SentEmail.objects.filter(user=user).count() == 1
    assert OutboxRow.objects.get(pk=row.pk).finished_at == done.finished_at  # left alone


def test_a_row_holding_another_generations_outcome_is_not_recorded(user: Any) -> None:
    """A recorder for another generation (a replay by hand gave the row a new one) neither
    writes nor claims the outcome: the workflow records through ``record_outcome``, which
    leaves the row alone too."""
    row = fired_row(user)
    assert perform_and_record(workflow_input(row, record_outcome=True), recorder_of(row)).recorded

    stale = perform_and_record(
        workflow_input(row, record_outcome=True), recorder_of(row, generation=1)
    )

    assert (stale.outcome, stale.recorded) == ("done", False)
