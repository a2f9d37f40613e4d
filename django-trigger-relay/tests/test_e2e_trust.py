"""Workflows that are not a row's own, started by whoever can start workflows in the
namespace, neither perform the row nor write its outcome (README, "Security model").

The attacker has what namespace access gives: a real row's workflow input, copied from its
history, and the activity names and task queues the daemon serves. Against a real dev
server, the real daemon (relay and Rust workflow worker) and the real Python worker:

- a new ``trigger_workflow`` started with the copied input and ``due_at`` moved to now;
- a workflow of the attacker's own (served by a worker in this test process) that calls
  ``trigger_relay.record_outcome`` on the daemon's queue with an outcome of its choosing,
  and ``trigger_relay.perform_firing`` on the Django queue with the copied input;
- the row's own workflow id started again after terminating its run.

The row stays as the relay left it, nothing is performed early, and the real workflow still
performs it once at its due time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from tasks.models import SentEmail
from temporalio import workflow
from temporalio.client import Client
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import RetryPolicy
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker import Worker
from tests_support.factories import make_trigger
from tests_support.harness import DJANGO_TASK_QUEUE
from tests_support.harness import FINAL_STATES
from tests_support.harness import WORKFLOW_TASK_QUEUE
from tests_support.harness import Harness
from tests_support.harness import serve

from trigger_relay.models import OutboxRow
from trigger_relay.perform.core import WORKFLOW_MISMATCH

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, reset_sequences=True),
    pytest.mark.usefixtures("route_everything_to_temporal"),
]

#: Due this long after firing: long enough for the attacks to finish first.
DELAY = dt.timedelta(seconds=20)
ONCE = RetryPolicy(maximum_attempts=1)


@workflow.defn(name="forger", sandboxed=False)
class Forger:
    """The attacker's own workflow: calls the daemon's and the worker's activities by name."""

    @workflow.run
    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        recorded = await workflow.execute_activity(
            "trigger_relay.record_outcome",
            args["outcome"],
            task_queue=WORKFLOW_TASK_QUEUE,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=ONCE,
        )
        performed = await workflow.execute_activity(
            "trigger_relay.perform_firing",
            args["firing"],
            task_queue=DJANGO_TASK_QUEUE,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=ONCE,
        )
        return {"recorded": recorded, "performed": performed}


@pytest.fixture(scope="module")
def module_harness(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: Any
) -> Iterator[Harness]:
    harness = Harness(tmp_path_factory.mktemp("e2e-trust"), run_id=str(settings.RUN_ID))
    yield from serve(harness, django_db_blocker)


@pytest.fixture
def harness(module_harness: Harness, transactional_db: None) -> Harness:
    module_harness.begin_test()
    return module_harness


def fire_delayed(harness: Harness, user: Any, name: str) -> OutboxRow:
    """One firing due in :data:`DELAY`, once the relay dispatched it (run id recorded)."""
    event = make_trigger(name, delay=DELAY)
    with transaction.atomic():
        event.fire_single(user.pk, task_id=1, task_title="Ship it", task_important=False)
    row = OutboxRow.objects.get(event_id=event.pk)
    return harness.wait(
        lambda: OutboxRow.objects.filter(pk=row.pk, run_id__isnull=False).first(),
        what="the row dispatched",
        timeout=30,
    )


def copied_input(harness: Harness, row: OutboxRow) -> dict[str, Any]:
    """The row's workflow input, as anyone with namespace access reads it from the history."""
    assert row.workflow_id
    (started, *_) = harness.history(row.workflow_id)
    payload = started.workflow_execution_started_event_attributes.input.payloads[0]
    return json.loads(payload.data)  # type: ignore[no-any-return]


def call(harness: Harness, work: Any) -> Any:
    async def run() -> Any:
        client = await Client.connect(harness.temporal.address)
        return await work(client)

    return asyncio.run(run())


def untouched(row: OutboxRow) -> bool:
    """The row as the relay left it: dispatched, no outcome, no error."""
    now = OutboxRow.objects.get(pk=row.pk)
    return (now.state, now.skip_reason, now.last_error, now.finished_at, now.run_id) == (
        "dispatched",
        None,
        None,
        None,
        row.run_id,
    )


def test_forged_workflows_neither_perform_nor_record(harness: Harness, tx_user: Any) -> None:
    row = fire_delayed(harness, tx_user, "Trust: forged workflows")
    forged = {**copied_input(harness, row), "due_at": dt.datetime.now(dt.UTC).isoformat()}
    outcome = {
        "outbox_id": row.pk,
        "generation": row.generation,
        "firing_uuid": str(row.firing_uuid),
        "state": "cancelled",
        "reason": None,
        "error": "\x1b[2J\x1b]0;pwned\x07",
        "performed": [],
    }

    async def attack(client: Client) -> tuple[Any, Any]:
        # A new trigger_workflow with the copied input, due now, run by the daemon's worker.
        copy = await client.execute_workflow(
            "trigger_workflow",
            forged,
            id=f"{row.workflow_id}-copy",
            task_queue=WORKFLOW_TASK_QUEUE,
            execution_timeout=timedelta(seconds=60),
        )
        # The attacker's own workflow, calling the activities by name.
        queue = f"forger-{uuid.uuid4().hex[:8]}"
        async with Worker(
            client,
            task_queue=queue,
            workflows=[Forger],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            own = await client.execute_workflow(
                Forger.run,
                {"outcome": outcome, "firing": forged},
                id=queue,
                task_queue=queue,
                execution_timeout=timedelta(seconds=60),
            )
        return copy, own

    copy, own = call(harness, attack)

    assert (copy["state"], copy["reason"]) == ("skipped", WORKFLOW_MISMATCH)
    assert own["recorded"] is False
    assert (own["performed"]["outcome"], own["performed"]["reason"]) == (
        "skipped",
        WORKFLOW_MISMATCH,
    )
    assert untouched(row)
    assert not SentEmail.objects.exists()

    # The row's own workflow performs it at its due time, once.
    done = harness.wait(
        lambda: OutboxRow.objects.filter(pk=row.pk, state__in=FINAL_STATES).first(),
        what="the real firing performed",
        timeout=90,
    )
    assert (done.state, done.last_error) == ("done", None)
    (email,) = SentEmail.objects.all()
    assert email.sent_at >= row.due_at


def test_the_rows_workflow_id_started_again_performs_nothing(
    harness: Harness, tx_user: Any
) -> None:
    """Terminating the row's run and starting its workflow id again (id conflict policy
    TERMINATE_EXISTING) with the input made due now: the new run is not the one the relay
    recorded, so it performs nothing and records nothing."""
    row = fire_delayed(harness, tx_user, "Trust: terminated and started again")
    forged = {**copied_input(harness, row), "due_at": dt.datetime.now(dt.UTC).isoformat()}
    assert row.workflow_id

    async def attack(client: Client) -> tuple[Any, Any]:
        result = await client.execute_workflow(
            "trigger_workflow",
            forged,
            id=row.workflow_id,
            task_queue=WORKFLOW_TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
            execution_timeout=timedelta(seconds=60),
        )
        original = await client.get_workflow_handle(row.workflow_id, run_id=row.run_id).describe()
        return result, original.status

    result, original_status = call(harness, attack)

    assert original_status == WorkflowExecutionStatus.TERMINATED
    assert (result["state"], result["reason"]) == ("skipped", WORKFLOW_MISMATCH)
    assert untouched(row)
    assert not SentEmail.objects.exists()
