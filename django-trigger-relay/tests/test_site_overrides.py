"""The site's overrides on polymorphic Trigger, Event and Condition subclasses stay in force
when the relay performs a firing (guarantees §3.2), and the actions of a firing
share one context dict with our idempotency key under a name of ours (guarantees §3.4).

dj-triggers on Celery runs ``event.handle`` → ``trigger.filter_user_queryset`` →
``event.get_user_context`` → ``trigger.on_event`` → ``Activity.lock`` → actions. Before this,
``perform()`` re-implemented those steps and called none of the overrides: a Trigger
subclass that filters out staff users fired for staff, a cap subclass with its own filter
was judged as a plain cap, an ``Event.handle`` or ``Trigger.on_event`` override never ran.

``perform()`` runs here in the test process on the real test database (PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from django.utils import timezone
from relay_e2e import journal
from relay_e2e.models import AnnotatedEvent
from relay_e2e.models import HandoffAction
from relay_e2e.models import StaffFreeTrigger
from relay_e2e.models import UsernameCountCondition
from tasks.models import SendEmailAction
from tasks.models import SentEmail
from tasks.models import TaskCompletedEvent
from tests_support.factories import make_trigger
from tests_support.factories import several_actions_per_trigger
from triggers.models import ActionCountCondition
from triggers.models import ActionFrequencyCondition
from triggers.models import Activity
from triggers.models import Event
from triggers.models import Trigger

from trigger_relay.models import LedgerEntry
from trigger_relay.models import OutboxRow
from trigger_relay.perform.core import perform
from trigger_relay.perform.ledger import IDEMPOTENCY_KEY
from trigger_relay.perform.ledger import idempotency_key

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("_route_to_temporal"),
]


@pytest.fixture
def _route_to_temporal() -> Iterator[None]:
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal"):
        yield


def workflow_input(row: OutboxRow) -> dict[str, Any]:
    """The workflow input the daemon builds from ``row`` (docs/contract.md)."""
    return {
        "outbox_id": row.pk,
        "generation": row.generation,
        "firing_uuid": str(row.firing_uuid),
        "event_id": row.event_id,
        "trigger_id": row.trigger_id,
        "user_pk": row.user_pk,
        "created_at": row.created_at.isoformat(),
        "due_at": row.due_at.isoformat(),
    }


def email_action(trigger: Trigger) -> SendEmailAction:
    return SendEmailAction.objects.create(
        trigger=trigger, subject="{{ task_title }}", body="Hello {{ user.username }}"
    )


def fire(event: Event, user: Any, **context: Any) -> dict[str, Any]:
    """Fire ``event`` for ``user`` and return the workflow input of its outbox row."""
    context = {"task_id": 1, "task_title": "Ship it", "task_important": False, **context}
    event.fire_single(user.pk, **context)
    return workflow_input(OutboxRow.objects.filter(event_id=event.pk).latest("id"))


def staff_free_event(*, decline_on_event: bool = False) -> TaskCompletedEvent:
    trigger = StaffFreeTrigger.objects.create(
        name="Staff-free", is_enabled=True, decline_on_event=decline_on_event
    )
    email_action(trigger)
    return TaskCompletedEvent.objects.create(trigger=trigger)


@pytest.fixture
def journal_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "journal.jsonl"
    monkeypatch.setenv(journal.ENV, str(path))
    return path


def on_event_overrides(path: Path) -> list[dict[str, Any]]:
    return [entry for entry in journal.read(path) if entry["what"] == "on_event_override"]


# -- Trigger.filter_user_queryset and Trigger.on_event ------------------------------------------


def test_trigger_subclass_filter_keeps_out_staff(user: Any) -> None:
    """The user became staff between the firing and its due time (``Event.fire()`` runs the
    same filter, so staff are not even recorded). Before: performed for the staff user,
    the override was never called at due time."""
    firing = fire(staff_free_event(), user)
    get_user_model().objects.filter(pk=user.pk).update(is_staff=True)

    result = perform(firing)

    assert (result.outcome, result.reason) == ("skipped", "user_filtered_out")
    assert not SentEmail.objects.exists()
    assert not Activity.objects.exists()


def test_trigger_subclass_filter_lets_others_through_exactly_once(user: Any) -> None:
    firing = fire(staff_free_event(), user)

    result = perform(firing)
    again = perform(firing)

    assert (result.outcome, len(result.performed)) == ("done", 1)
    assert (again.outcome, again.performed, again.already_performed) == (
        "done",
        [],
        result.performed,
    )
    assert SentEmail.objects.filter(user=user).count() == 1
    assert LedgerEntry.objects.filter(outbox_id=firing["outbox_id"]).count() == 1


def test_on_event_override_runs_and_reaches_the_relays_lock(user: Any, journal_path: Path) -> None:
    """The override runs (journal) and its ``super().on_event`` is the relay's: the ledger
    records the action and the Activity counts it once."""
    event = staff_free_event()
    firing = fire(event, user)

    result = perform(firing)

    assert result.outcome == "done"
    assert [entry["user"] for entry in on_event_overrides(journal_path)] == [user.pk]
    assert LedgerEntry.objects.filter(outbox_id=firing["outbox_id"]).count() == 1
    assert Activity.objects.get(trigger_id=event.trigger_id, user=user).action_count == 1


def test_on_event_override_that_declines_performs_nothing(user: Any, journal_path: Path) -> None:
    event = staff_free_event(decline_on_event=True)
    firing = fire(event, user)

    result = perform(firing)

    assert (result.outcome, result.reason) == ("skipped", "not_handled")
    assert len(on_event_overrides(journal_path)) == 1
    assert not SentEmail.objects.exists()
    assert not LedgerEntry.objects.exists()


def test_overrides_outside_a_firing_are_dj_triggers_own(user: Any) -> None:
    """Outside ``perform()`` (a Celery worker in the same process, a shell) dj-triggers'
    methods are upstream's: ``on_event`` performs without a ledger."""
    event = staff_free_event()
    firing = fire(event, user)
    perform(firing)  # installs the relay's versions
    trigger = Trigger.objects.get(pk=event.trigger_id)

    trigger.on_event(user, {"task_title": "By hand"})

    assert SentEmail.objects.filter(user=user).count() == 2
    assert LedgerEntry.objects.count() == 1


# -- Event.handle ---------------------------------------------------------------------------


def test_event_handle_override_runs_and_its_context_reaches_the_action(user: Any) -> None:
    """Before: the override never ran, the action saw no ``handled_by``."""
    trigger = Trigger.objects.create(name="Annotated", is_enabled=True)
    email_action(trigger)
    event = AnnotatedEvent.objects.create(trigger=trigger)
    firing = fire(event, user)

    result = perform(firing)

    assert result.outcome == "done"
    (email,) = SentEmail.objects.filter(user=user)
    assert email.context["handled_by"] == "AnnotatedEvent.handle"


# -- caps -------------------------------------------------------------------------------------


def test_cap_subclass_with_its_own_filter_is_honoured(user: Any) -> None:
    """``UsernameCountCondition`` keeps this user out whatever the count (it was added after
    the firing was recorded). Before: judged as a plain ``ActionCountCondition`` (count 0 <
    limit), performed."""
    event = make_trigger("Cap subclass")
    firing = fire(event, user)
    UsernameCountCondition.objects.create(
        trigger_id=event.trigger_id, limit=5, excluded_username=user.username
    )

    result = perform(firing)

    assert (result.outcome, result.reason) == ("skipped", "user_filtered_out")
    assert not SentEmail.objects.exists()


def test_count_cap_is_judged_on_this_triggers_activity_alone(user: Any) -> None:
    """dj-triggers' cross-trigger bug stays worked around at perform time: by due time the
    user has an Activity of this trigger (count 0) and a busy one of another trigger.
    Upstream's query excludes them (and would keep ``Event.fire()`` from recording the
    firing at all, see the README); the relay performs, and a second firing is capped."""
    event = make_trigger("Capped")
    ActionCountCondition.objects.create(trigger_id=event.trigger_id, limit=1)
    first_firing, second_firing = fire(event, user), fire(event, user)
    other = make_trigger("Busy elsewhere")
    Activity.objects.create(trigger_id=event.trigger_id, user=user, action_count=0)
    Activity.objects.create(trigger_id=other.trigger_id, user=user, action_count=9)
    upstream = Trigger.objects.get(pk=event.trigger_id).filter_user_queryset(
        get_user_model().objects.filter(pk=user.pk)
    )
    assert not upstream.exists(), "upstream's query no longer has the cross-trigger bug"

    first = perform(first_firing)
    second = perform(second_firing)

    assert first.outcome == "done"
    assert (second.outcome, second.reason) == ("skipped", "user_filtered_out")
    assert SentEmail.objects.filter(user=user).count() == 1


def test_frequency_cap_is_judged_on_this_triggers_activity_alone(user: Any) -> None:
    event = make_trigger("Daily")
    ActionFrequencyCondition.objects.create(trigger_id=event.trigger_id, limit=dt.timedelta(days=1))
    first_firing, second_firing = fire(event, user), fire(event, user)
    other = make_trigger("Just now elsewhere")
    Activity.objects.create(trigger_id=event.trigger_id, user=user)
    Activity.objects.create(
        trigger_id=other.trigger_id, user=user, last_action_datetime=timezone.now()
    )

    first = perform(first_firing)
    second = perform(second_firing)

    assert first.outcome == "done"
    assert (second.outcome, second.reason) == ("skipped", "user_filtered_out")


# -- one context dict per firing, our key namespaced (guarantees §3.2, §3.4) -------------------


def test_site_idempotency_key_in_the_context_is_left_alone(user: Any) -> None:
    """Before: the relay wrote ``idempotency_key`` over the site's own."""
    event = make_trigger("Site key")
    firing = fire(event, user, idempotency_key="site-order-42")

    perform(firing)

    (email,) = SentEmail.objects.filter(user=user)
    (action,) = SendEmailAction.objects.filter(trigger_id=event.trigger_id)
    assert email.context["idempotency_key"] == "site-order-42"
    assert email.context[IDEMPOTENCY_KEY] == idempotency_key(firing["outbox_id"], action.pk)


def test_context_keys_named_like_the_relays_own_parameters(user: Any) -> None:
    """A firing's context reaches ``Event.handle`` as keyword arguments: keys that happen to
    be the names of the relay's own parameters are the site's data like any other."""
    event = make_trigger("Odd keys")
    firing = fire(event, user, firing="f", original="o", cap="c", relay_version="r")

    result = perform(firing)

    assert result.outcome == "done"
    (email,) = SentEmail.objects.filter(user=user)
    assert {key: email.context[key] for key in ("firing", "original", "cap", "relay_version")} == {
        "firing": "f",
        "original": "o",
        "cap": "c",
        "relay_version": "r",
    }


def test_actions_share_one_context_dict(user: Any) -> None:
    """dj-triggers main passes one dict to every action of a firing; actions use it to hand
    data on. Before: each action got a copy, the hand-off was lost."""
    if not several_actions_per_trigger():
        pytest.skip("dj-triggers 1.0.1 has one action per trigger (DJT_SCHEMA=main only)")
    trigger = Trigger.objects.create(name="Hand-off", is_enabled=True)
    handoff = HandoffAction.objects.create(trigger=trigger)
    email = email_action(trigger)
    event = TaskCompletedEvent.objects.create(trigger=trigger)
    firing = fire(event, user)

    result = perform(firing)

    assert result.performed == [handoff.pk, email.pk]
    (sent,) = SentEmail.objects.filter(user=user)
    assert sent.context["handed_on_by"] == handoff.pk
    # Each action still gets its own key, in the shared dict.
    assert sent.context[IDEMPOTENCY_KEY] == idempotency_key(firing["outbox_id"], email.pk)
