"""The example site: its commands, its dj-triggers subclasses and the admin (guarantees §2.1)."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.db import DataError
from django.test import Client
from django.test import override_settings
from tasks.management.commands import seed_demo
from tasks.models import SentEmail
from tests_support.broker import CeleryQueue
from tests_support.factories import make_task
from tests_support.factories import make_trigger
from tests_support.factories import several_actions_per_trigger
from triggers.models import Trigger

from trigger_relay.models import OutboxRow

pytestmark = pytest.mark.django_db

EXAMPLE_ROUTES = {
    seed_demo.IMPORTANT_ONCE: "temporal",
    seed_demo.DAILY_REMINDER: "temporal",
    seed_demo.DELAYED_NOTE: "temporal",
    seed_demo.CELERY_NOTE: "celery",
}


@override_settings(TRIGGER_RELAY_ROUTES=EXAMPLE_ROUTES)
def test_seed_and_fire_demo(celery_queue: CeleryQueue) -> None:
    """guarantees §2.2, §2.3: the demo writes Temporal-routed firings to the outbox and sends the
    Celery-routed one to the broker."""
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    call_command("seed_demo", stdout=out)  # idempotent: replaces its triggers and tasks
    assert Trigger.objects.filter(name__in=seed_demo.DEMO_TRIGGERS).count() == 4

    call_command("fire_demo", stdout=out)

    names = dict(Trigger.objects.values_list("id", "name"))
    rows = [
        (names[row.trigger_id], row.context.get("task_title")) for row in OutboxRow.objects.all()
    ]
    assert rows == [
        (seed_demo.DAILY_REMINDER, None),
        (seed_demo.IMPORTANT_ONCE, "Write the quarterly report"),
        (seed_demo.DELAYED_NOTE, "Write the quarterly report"),
        (seed_demo.DELAYED_NOTE, "Water the plants"),
        (seed_demo.DELAYED_NOTE, "Book the dentist"),
    ]
    delayed = OutboxRow.objects.filter(
        trigger_id=Trigger.objects.get(name=seed_demo.DELAYED_NOTE).pk
    )
    assert {row.due_at - row.created_at for row in delayed} == {dt.timedelta(seconds=30)}
    assert [task.args for task in celery_queue.tasks()] == [
        [
            Trigger.objects.get(name=seed_demo.CELERY_NOTE).events.get().pk,
            get_user_model().objects.get(username="demo").pk,
        ]
    ] * 3
    assert "Outbox rows written: 5" in out.getvalue()


def test_send_email_action_renders_templates_with_user_context(
    user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """guarantees §3.2 (dj-triggers' semantics): actions get event.get_user_context(user, context),
    in id order; several actions per trigger on dj-triggers main."""
    actions = 2 if several_actions_per_trigger() else 1
    event = make_trigger("Congratulate", actions=actions)
    task = make_task(user, "Paint the fence")

    with django_capture_on_commit_callbacks(execute=True):
        event.handle(user.pk, task_id=task.pk, task_title=task.title, task_important=False)

    subjects = [f"Congratulate #{n}: Paint the fence" for n in range(1, actions + 1)]
    assert [m.subject for m in mail.outbox] == subjects
    assert mail.outbox[0].body == "Hello ada, you completed Paint the fence."
    assert mail.outbox[0].to == ["ada@example.com"]
    assert list(SentEmail.objects.values_list("subject", flat=True)) == subjects


def test_send_email_action_sends_nothing_when_its_transaction_fails(
    user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """guarantees §3.5: the example's action with an outside effect sends its mail on commit: a
    rendered subject over the 200 characters SentEmail stores fails the action's write, and
    no mail has gone out (sent before the write, it would have, once per attempt)."""
    event = make_trigger("Congratulate")

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(DataError),
    ):
        event.handle(user.pk, task_id=1, task_title="x" * 200, task_important=False)

    assert callbacks == []
    assert mail.outbox == []
    assert not SentEmail.objects.exists()


@override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal")
def test_important_only_and_clock_events(user: Any) -> None:
    """The example's events: TaskCompletedEvent(important_only) and HourlyClockEvent."""
    from tasks.models import HasUncompletedTaskCondition
    from tasks.models import HourlyClockEvent

    important = make_trigger("Important only", important_only=True)
    make_task(user, "minor").complete()
    assert OutboxRow.objects.count() == 0
    make_task(user, "major", important=True).complete()
    assert list(OutboxRow.objects.values_list("event_id", flat=True)) == [important.pk]

    trigger = make_trigger("Clock").trigger
    trigger.events.get().delete()  # keep the trigger and its action, swap the event
    HasUncompletedTaskCondition.objects.create(trigger=trigger)
    clock_event = HourlyClockEvent.objects.create(trigger=trigger)
    make_task(user, "still open")
    idle = get_user_model().objects.create(username="idle", email="idle@example.com")
    out = io.StringIO()
    call_command("fire_clock", stdout=out)
    clock_rows = OutboxRow.objects.filter(event_id=clock_event.pk)
    assert [row.user_pk for row in clock_rows] == [str(user.pk)]  # "idle" has no open task
    assert str(idle.pk) not in {row.user_pk for row in OutboxRow.objects.all()}
    assert "Fired 1 hourly clock event(s)." in out.getvalue()


def test_admin_pages_render(admin_client: Client, user: Any) -> None:
    """guarantees §2.1: dj-triggers' admin stays as it is; the outbox is listed read-only."""
    event = make_trigger("Shown in admin")
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal"):
        event.fire_single(user.pk, task_id=1)
    row = OutboxRow.objects.get()
    for url in [
        "/admin/triggers/trigger/",
        f"/admin/triggers/trigger/{event.trigger_id}/change/",
        "/admin/trigger_relay/outboxrow/",
        f"/admin/trigger_relay/outboxrow/{row.pk}/change/",
        "/admin/tasks/sentemail/",
    ]:
        assert admin_client.get(url).status_code == 200, url
    assert admin_client.get("/admin/trigger_relay/outboxrow/add/").status_code == 403
    assert admin_client.post(f"/admin/trigger_relay/outboxrow/{row.pk}/delete/").status_code == 403
