"""``perform_firing`` checks that the row is still the workflow's firing (guarantees §4.3, §3.4),
and performs what the row says, not what the workflow input says (guarantees §3.7).

A row id is not a firing's identity: after a point-in-time restore or ``TRUNCATE ...
RESTART IDENTITY`` a new firing gets the id of an old one whose workflow may still be
waiting on its timer. Schema version 3 gives each row a ``firing_uuid`` and the daemon
passes it in the workflow input; a workflow whose uuid is not the row's performs nothing.

``perform()`` is the activity's body, called here in the test process on the real test
database (PostgreSQL) with the input the daemon sends; the Temporal side is covered end to
end in test_e2e_workflow.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from tasks.models import SentEmail
from tests_support.factories import make_trigger
from tests_support.firings import ABSENT
from tests_support.firings import workflow_input
from triggers.models import Activity

from trigger_relay.models import LedgerEntry
from trigger_relay.models import OutboxRow
from trigger_relay.perform.core import perform

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("_route_to_temporal"),
]


@pytest.fixture
def _route_to_temporal() -> Iterator[None]:
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal"):
        yield


def fired_row(user: Any, name: str = "Note on completion") -> tuple[OutboxRow, Any]:
    event = make_trigger(name)
    event.fire_single(user.pk, task_id=1, task_title="Ship it", task_important=False)
    return OutboxRow.objects.get(event_id=event.pk), event


def nothing_performed(row: OutboxRow, event: Any, user: Any) -> bool:
    return (
        not SentEmail.objects.filter(user=user).exists()
        and not LedgerEntry.objects.filter(outbox_id=row.pk).exists()
        and not Activity.objects.filter(trigger_id=event.trigger_id, user_id=user.pk).exists()
    )


def test_new_rows_get_a_firing_uuid_from_the_database(user: Any) -> None:
    """Schema 3: every row inserted by the add-on has its own uuid (gen_random_uuid())."""
    first, _ = fired_row(user, "first")
    second, _ = fired_row(user, "second")
    assert isinstance(first.firing_uuid, uuid.UUID)
    assert isinstance(second.firing_uuid, uuid.UUID)
    assert first.firing_uuid != second.firing_uuid


def test_matching_firing_uuid_performs(user: Any) -> None:
    row, event = fired_row(user)
    firing = workflow_input(row)
    assert firing["firing_uuid"] == str(row.firing_uuid)  # canonical: lowercase, hyphens

    result = perform(firing)

    assert (result.outcome, result.reason) == ("done", None)
    (email,) = SentEmail.objects.filter(user=user)
    assert result.performed == [email.action_id]
    assert list(
        LedgerEntry.objects.filter(outbox_id=row.pk).values_list("action_id", flat=True)
    ) == [email.action_id]
    assert Activity.objects.get(trigger_id=event.trigger_id, user_id=user.pk).action_count == 1


def test_mismatched_firing_uuid_performs_nothing(user: Any) -> None:
    """The workflow of an earlier firing that had this row id (the row was reused after a
    restore or TRUNCATE ... RESTART IDENTITY) is skipped with ``firing_mismatch``."""
    row, event = fired_row(user)
    other_firing = str(uuid.uuid4())

    result = perform(workflow_input(row, firing_uuid=other_firing))

    assert (result.outcome, result.reason) == ("skipped", "firing_mismatch")
    assert (result.performed, result.already_performed) == ([], [])
    assert nothing_performed(row, event, user)
    # Still the row's own firing to perform, once, by its own workflow.
    assert perform(workflow_input(row)).outcome == "done"
    assert SentEmail.objects.filter(user=user).count() == 1


def test_input_without_firing_uuid_does_not_perform_a_row_that_has_one(user: Any) -> None:
    """A workflow started before schema 3 (input without ``firing_uuid``) whose row id now
    belongs to a firing recorded after it is not that firing's workflow."""
    row, event = fired_row(user)

    for firing in (workflow_input(row, firing_uuid=None), workflow_input(row, firing_uuid=ABSENT)):
        result = perform(firing)
        assert (result.outcome, result.reason) == ("skipped", "firing_mismatch")
    assert nothing_performed(row, event, user)


def test_row_from_before_schema_3_is_performed_by_its_workflow(user: Any) -> None:
    """Rows that existed before the migration keep firing_uuid NULL; their workflows (input
    without the key) perform them, and a workflow naming a uuid does not."""
    row, event = fired_row(user)
    OutboxRow.objects.filter(pk=row.pk).update(firing_uuid=None)
    row.refresh_from_db()

    result = perform(workflow_input(row, firing_uuid=str(uuid.uuid4())))
    assert (result.outcome, result.reason) == ("skipped", "firing_mismatch")
    assert nothing_performed(row, event, user)

    result = perform(workflow_input(row, firing_uuid=ABSENT))
    assert (result.outcome, result.reason) == ("done", None)
    assert SentEmail.objects.filter(user=user).count() == 1


def test_uppercase_spelling_of_the_same_uuid_is_the_same_firing(user: Any) -> None:
    row, _ = fired_row(user)
    result = perform(workflow_input(row, firing_uuid=str(row.firing_uuid).upper()))
    assert result.outcome == "done"


def test_superseded_generation_is_reported_before_the_firing(user: Any) -> None:
    """A replay of a row from before schema 3 gives it a uuid and a new generation: its old
    workflow was superseded (the reason an operator expects), not misdirected."""
    row, event = fired_row(user)
    OutboxRow.objects.filter(pk=row.pk).update(generation=1)

    result = perform(workflow_input(row, generation=0, firing_uuid=ABSENT))

    assert (result.outcome, result.reason) == ("skipped", "superseded")
    assert nothing_performed(row, event, user)


# -- guarantees §3.7: the row, not the workflow input, says what is performed ----------------


def test_input_naming_another_user_trigger_and_context_performs_nothing(user: Any) -> None:
    """Whoever can start workflows in the namespace can write any input. One that names a
    real outbox row (id, generation, firing uuid) but another user, another trigger and
    another context performs nothing for that user, nor for the row's own user."""
    row, _ = fired_row(user)
    other_user = get_user_model().objects.create(username="mallory", email="m@example.com")
    other_event = make_trigger("Someone else's trigger")
    forged = workflow_input(
        row,
        event_id=other_event.pk,
        trigger_id=other_event.trigger_id,
        user_pk=str(other_user.pk),
        context_json=json.dumps({"task_title": "forged"}),
    )

    result = perform(forged)

    assert (result.outcome, result.reason) == ("skipped", "input_mismatch")
    assert (result.performed, result.already_performed) == ([], [])
    assert not SentEmail.objects.exists()
    assert not LedgerEntry.objects.exists()
    assert not Activity.objects.exists()
    # The row's own workflow still performs it, for its user, once.
    assert perform(workflow_input(row)).outcome == "done"
    (email,) = SentEmail.objects.all()
    assert (email.user_id, email.context["task_title"]) == (user.pk, "Ship it")


@pytest.mark.parametrize("field", ["event_id", "trigger_id", "user_pk"])
def test_any_identity_field_that_disagrees_with_the_row_is_a_mismatch(
    user: Any, field: str
) -> None:
    row, _ = fired_row(user)
    other_user = get_user_model().objects.create(username="mallory", email="m@example.com")
    other_event = make_trigger("Someone else's trigger")
    other = {
        "event_id": other_event.pk,
        "trigger_id": other_event.trigger_id,
        "user_pk": str(other_user.pk),
    }[field]

    for value in (other, ABSENT, None, "not a number"):
        result = perform(workflow_input(row, **{field: value}))
        assert (result.outcome, result.reason) == ("skipped", "input_mismatch"), value
    assert not SentEmail.objects.exists()
    assert not LedgerEntry.objects.exists()
    assert not Activity.objects.exists()


def test_user_pk_spelled_as_a_number_is_the_same_user(user: Any) -> None:
    """The daemon sends the row's user_pk as text; an int of the same value names the same
    user (the stored column is text), so it is no mismatch."""
    row, _ = fired_row(user)
    assert perform(workflow_input(row, user_pk=int(row.user_pk))).outcome == "done"


def test_context_is_the_rows_whatever_the_input_says(user: Any) -> None:
    """The context is read from the row's jsonb column (integers exact): the input's copy,
    ``context_json`` or the older ``context`` object, is not what the actions get."""
    event = make_trigger("Big numbers")
    event.fire_single(user.pk, task_title="from the row", n=2**70)
    row = OutboxRow.objects.get(event_id=event.pk)

    forged = workflow_input(row, context_json=json.dumps({"task_title": "forged", "n": 1}))
    assert perform(forged).outcome == "done"
    legacy = workflow_input(row, context_json=ABSENT, context={"task_title": "old", "n": 2})
    assert perform(legacy).outcome == "done"  # the ledger: performed once, by the first

    (email,) = SentEmail.objects.all()
    assert email.subject == "Big numbers #1: from the row"
    assert (type(email.context["n"]), email.context["n"]) == (int, 2**70)
