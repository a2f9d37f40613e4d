"""Building triggers of the example app for tests (works on both dj-triggers schemas)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tasks.models import SendEmailAction
from tasks.models import Task
from tasks.models import TaskCompletedEvent
from triggers.models import Action
from triggers.models import Trigger


def several_actions_per_trigger() -> bool:
    """True on dj-triggers main (Action.trigger is a foreign key), False on 1.0.1."""
    return not Action._meta.get_field("trigger").one_to_one


def make_trigger(
    name: str,
    *,
    delay: dt.timedelta = dt.timedelta(),
    important_only: bool = False,
    enabled: bool = True,
    actions: int = 1,
) -> TaskCompletedEvent:
    """A trigger on TaskCompletedEvent with ``actions`` SendEmailActions; returns its event."""
    trigger = Trigger.objects.create(name=name, is_enabled=enabled)
    event = TaskCompletedEvent.objects.create(
        trigger=trigger, delay=delay, important_only=important_only
    )
    for number in range(1, actions + 1):
        SendEmailAction.objects.create(
            trigger=trigger,
            subject=f"{name} #{number}: {{{{ task_title }}}}",
            body="Hello {{ user.username }}, you completed {{ task_title }}.",
        )
    return event


def make_task(user: Any, title: str = "Write the report", *, important: bool = False) -> Task:
    return Task.objects.create(user=user, title=title, important=important)
