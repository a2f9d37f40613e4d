"""Only the row's own workflow run may perform it, only while it is pending or dispatched,
not before its due time, and only on its own site (README, "Security model").

Anyone who can start workflows in the namespace can copy a row's input (its id, generation
and firing uuid are in the workflow id) into a workflow of their own. The relay's claim
writes the workflow id on the row before the start and the relay records the run id after
it; the activity compares them with the caller Temporal names (``activity.info()``), never
with the input. Here the activity runs in the test process under Temporal's
``ActivityEnvironment`` on the real test database, and ``perform`` is called with the
caller the activity passes; the same refusals against a real dev server and the real
workers are in test_e2e_workflow.py (``TestTrustBoundaries``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from tasks.models import SentEmail
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from tests_support.factories import make_trigger
from tests_support.firings import workflow_input

from trigger_relay.models import OutboxRow
from trigger_relay.perform.activity import perform_firing
from trigger_relay.perform.core import WORKFLOW_MISMATCH
from trigger_relay.perform.core import Caller
from trigger_relay.perform.core import NotYetDispatched
from trigger_relay.perform.core import NotYetDue
from trigger_relay.perform.core import RowFinished
from trigger_relay.perform.core import perform
from trigger_relay.perform.outcome import OutcomeRecorder
from trigger_relay.perform.outcome import perform_and_record
from trigger_relay.perform.site import own_site

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_route_to_temporal")]

WORKFLOW = "trigger-outbox-1-g0-own"
RUN = "run-own"
OWN = Caller(WORKFLOW, RUN)


@pytest.fixture
def _route_to_temporal() -> Iterator[None]:
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal"):
        yield


def claimed_row(
    user: Any, *, run_id: str | None = RUN, delay: str = "0", name: str = "Trusted firing"
) -> OutboxRow:
    """A fired row as the relay leaves it: the claim wrote its workflow id, the dispatch
    its run id (None: not recorded yet); due ``delay`` seconds from now."""
    event = make_trigger(name)
    event.fire_single(user.pk, task_id=1, task_title="Ship it", task_important=False)
    row = OutboxRow.objects.get(event_id=event.pk)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE trigger_relay_outbox SET workflow_id = %s, run_id = %s, "
            "state = 'dispatched', due_at = now() + make_interval(secs => %s) WHERE id = %s",
            [WORKFLOW, run_id, float(delay), row.pk],
        )
    return OutboxRow.objects.get(pk=row.pk)


def recorder(row: OutboxRow, caller: Caller) -> OutcomeRecorder:
    return OutcomeRecorder(
        outbox_id=row.pk,
        generation=row.generation,
        firing_uuid=str(row.firing_uuid),
        workflow_id=caller.workflow_id,
        run_id=caller.run_id,
    )


@pytest.mark.parametrize(
    "caller",
    [
        Caller("trigger-outbox-1-g0-copied", RUN),  # another workflow, the input copied
        Caller(WORKFLOW, "run-after-terminate"),  # the row's id, started again by hand
    ],
    ids=["other-workflow", "other-run"],
)
def test_a_workflow_that_is_not_the_rows_performs_and_records_nothing(
    user: Any, caller: Caller
) -> None:
    row = claimed_row(user)

    result = perform_and_record(
        workflow_input(row, record_outcome=True), recorder(row, caller), caller
    )

    assert (result.outcome, result.reason, result.recorded) == ("skipped", WORKFLOW_MISMATCH, False)
    assert not SentEmail.objects.exists()
    after = OutboxRow.objects.get(pk=row.pk)
    assert (after.state, after.skip_reason, after.finished_at) == ("dispatched", None, None)
    # The row's own workflow still performs it, once.
    own = perform_and_record(workflow_input(row, record_outcome=True), recorder(row, OWN), OWN)
    assert (own.outcome, own.recorded) == ("done", True)
    assert SentEmail.objects.count() == 1


def test_the_rows_workflow_before_the_relay_recorded_its_run_performs(user: Any) -> None:
    """A quick firing can run before the relay has written the run id: the workflow id,
    written by the claim, is enough then."""
    row = claimed_row(user, run_id=None)
    assert perform(workflow_input(row), Caller(WORKFLOW, "any-run")).outcome == "done"


def test_a_row_that_names_no_workflow_yet_is_retried(user: Any) -> None:
    row = claimed_row(user)
    OutboxRow.objects.filter(pk=row.pk).update(workflow_id=None, run_id=None)
    with pytest.raises(NotYetDispatched):
        perform(workflow_input(row), OWN)
    assert not SentEmail.objects.exists()


def test_a_row_not_yet_due_is_not_performed(user: Any) -> None:
    """Even by its own workflow: a copied input with ``due_at`` now cannot run a delayed
    firing early, and an early timer (the server's clock ahead of the database's) retries at
    the due time. Within the clock-skew margin it performs."""
    row = claimed_row(user, delay="3600")
    with pytest.raises(NotYetDue) as early:
        perform(workflow_input(row, due_at=dt.datetime.now(dt.timezone.utc).isoformat()), OWN)
    assert dt.timedelta(minutes=59) < early.value.wait <= dt.timedelta(hours=1)
    assert not SentEmail.objects.exists()

    soon = claimed_row(user, delay="2", name="Due within the margin")
    assert perform(workflow_input(soon), OWN).outcome == "done"


def test_finished_rows_are_not_performed_again(user: Any) -> None:
    row = claimed_row(user)
    assert perform(workflow_input(row), OWN).outcome == "done"
    OutboxRow.objects.filter(pk=row.pk).update(state="done", finished_at=dt.datetime.now(dt.UTC))
    again = perform(workflow_input(row), OWN)
    assert (again.outcome, again.performed) == ("done", [])
    assert again.already_performed
    OutboxRow.objects.filter(pk=row.pk).update(state="failed", last_error="x")
    with pytest.raises(RowFinished, match="replay"):
        perform(workflow_input(row), OWN)
    assert SentEmail.objects.count() == 1


# The activity manages its thread's connections as the worker does (closing them between
# firings): these tests commit for real.
transactional = pytest.mark.django_db(transaction=True)


def _run_activity(row: OutboxRow, **changes: Any) -> Any:
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(
        environment.info, workflow_id=WORKFLOW, workflow_run_id=RUN
    )
    return environment.run(perform_firing, workflow_input(row, **changes))


@transactional
def test_the_activity_refuses_another_sites_task_before_the_database(tx_user: Any) -> None:
    """Two sites in one namespace with the same task queues: the other site's input is
    refused, retryably (Temporal may hand it to that site's worker), and nothing of this
    site's row with the same id is touched."""
    row = claimed_row(tx_user)
    with pytest.raises(ApplicationError) as refused:
        _run_activity(row, site="another-site")
    assert not refused.value.non_retryable
    assert "belongs to site another-site" in str(refused.value)
    assert not SentEmail.objects.exists()
    assert OutboxRow.objects.get(pk=row.pk).state == "dispatched"

    assert _run_activity(row, site=own_site())["outcome"] == "done"


@transactional
def test_an_input_without_a_site_is_this_sites(tx_user: Any) -> None:
    """Rows dispatched before the site identity existed carry none."""
    row = claimed_row(tx_user)
    assert _run_activity(row)["outcome"] == "done"


def test_the_site_identity_is_the_databases_unless_set(user: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id::text FROM trigger_relay_site")
        (database_site,) = cursor.fetchone()
    assert own_site() == database_site
    with override_settings(TRIGGER_RELAY_SITE="staging"):
        assert own_site() == "staging"


@transactional
def test_the_activity_retries_a_firing_not_yet_due_at_its_due_time(tx_user: Any) -> None:
    row = claimed_row(tx_user, delay="600")
    with pytest.raises(ApplicationError) as early:
        _run_activity(row)
    assert not early.value.non_retryable
    assert early.value.next_retry_delay is not None
    assert dt.timedelta(minutes=9) < early.value.next_retry_delay <= dt.timedelta(minutes=10)
