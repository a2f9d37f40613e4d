from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from triggers.models import Action
from triggers.models import ActionCountCondition
from triggers.models import ActionFrequencyCondition
from triggers.models import Trigger

from tasks.models import HasUncompletedTaskCondition
from tasks.models import HourlyClockEvent
from tasks.models import SendEmailAction
from tasks.models import Task
from tasks.models import TaskCompletedEvent

IMPORTANT_ONCE = "Important task completed: congratulate once"
DAILY_REMINDER = "Remind users with open tasks, at most daily"
DELAYED_NOTE = "Any task completed: delayed note"
CELERY_NOTE = "Any task completed: Celery as before"
DEMO_TRIGGERS = (IMPORTANT_ONCE, DAILY_REMINDER, DELAYED_NOTE, CELERY_NOTE)

DEMO_TASKS = (
    ("Write the quarterly report", True),
    ("Water the plants", False),
    ("Book the dentist", False),
)


def delete_trigger(trigger: Trigger) -> None:
    """Delete a trigger with its events, conditions and actions.

    ``trigger.delete()`` alone is not enough with django-polymorphic 3.x: when a trigger's
    events (or conditions, actions) are of different subclasses, the cascade leaves some
    subclass rows behind and the commit fails on their foreign key. Deleting each
    polymorphic child as its own instance first avoids that.
    """
    for related in (trigger.events, trigger.conditions, Action.objects.filter(trigger=trigger)):
        for child in related.all():
            child.delete()
    trigger.delete()


class Command(BaseCommand):
    help = (
        "Create a demo user with open tasks and the demo triggers (routes in "
        "settings.TRIGGER_RELAY_ROUTES). Replaces the demo triggers and tasks if they exist."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--delay", type=int, default=30, help="delay of the delayed note (s)")

    @transaction.atomic
    def handle(self, *args: Any, username: str, delay: int, **options: Any) -> None:
        user, _ = get_user_model().objects.update_or_create(
            username=username, defaults={"email": f"{username}@example.com", "is_active": True}
        )
        Task.objects.filter(user=user).delete()
        for title, important in DEMO_TASKS:
            Task.objects.create(user=user, title=title, important=important)

        for old in Trigger.objects.filter(name__in=DEMO_TRIGGERS):
            delete_trigger(old)

        trigger = Trigger.objects.create(name=IMPORTANT_ONCE, is_enabled=True)
        TaskCompletedEvent.objects.create(trigger=trigger, important_only=True)
        ActionCountCondition.objects.create(trigger=trigger, limit=1)
        SendEmailAction.objects.create(
            trigger=trigger,
            subject="Well done, {{ user.username }}!",
            body="You completed the important task “{{ task_title }}”. This note comes once.\n",
        )

        trigger = Trigger.objects.create(name=DAILY_REMINDER, is_enabled=True)
        HourlyClockEvent.objects.create(trigger=trigger)
        HasUncompletedTaskCondition.objects.create(trigger=trigger)
        ActionFrequencyCondition.objects.create(trigger=trigger, limit=dt.timedelta(days=1))
        SendEmailAction.objects.create(
            trigger=trigger,
            subject="{{ user.username }}, you have open tasks",
            body=(
                "{% for task in user.tasks.all %}{% if not task.completed_at %}"
                "- {{ task.title }}\n{% endif %}{% endfor %}(clock: {{ fired_at }})\n"
            ),
        )

        trigger = Trigger.objects.create(name=DELAYED_NOTE, is_enabled=True)
        TaskCompletedEvent.objects.create(trigger=trigger, delay=dt.timedelta(seconds=delay))
        SendEmailAction.objects.create(
            trigger=trigger,
            subject="A later note about “{{ task_title }}”",
            body="This note was due some time after you completed “{{ task_title }}”.\n",
        )

        trigger = Trigger.objects.create(name=CELERY_NOTE, is_enabled=True)
        TaskCompletedEvent.objects.create(trigger=trigger)
        SendEmailAction.objects.create(
            trigger=trigger,
            subject="Task done: {{ task_title }}",
            body="Handled by dj-triggers' Celery task, as before the relay.\n",
        )

        self.stdout.write(
            f"Demo user {user.username!r} (pk {user.pk}) with {len(DEMO_TASKS)} open tasks, "
            f"and triggers: {', '.join(DEMO_TRIGGERS)}."
        )
