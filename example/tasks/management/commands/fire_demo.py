from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.core.management.base import CommandError
from django.db.models import Max
from triggers.models import Event
from triggers.models import Trigger

from tasks.models import HourlyClockEvent
from tasks.models import Task
from trigger_relay.firing.routes import route_for
from trigger_relay.models import OutboxRow


class Command(BaseCommand):
    help = (
        "Fire the demo: fire the hourly clock and complete the demo user's open tasks, "
        "then print the outbox rows written (Celery-routed firings go to the broker)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="demo")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {username!r}: run `manage.py seed_demo` first.") from None
        last_id = OutboxRow.objects.aggregate(last=Max("id"))["last"] or 0

        self.stdout.write("Firing the hourly clock (reminder for open tasks).")
        HourlyClockEvent.fire_all()
        for task in Task.objects.filter(user=user, completed_at__isnull=True):
            self.stdout.write(f"Completing task {task.pk} {task.title!r}.")
            task.complete()

        self.stdout.write("Routes of the demo triggers:")
        for event in Event.objects.select_related("trigger").order_by("trigger__name", "id"):
            self.stdout.write(f"  {event.trigger.name}: {route_for(event)}")

        rows = list(OutboxRow.objects.filter(id__gt=last_id).order_by("id"))
        names = dict(
            Trigger.objects.filter(id__in={row.trigger_id for row in rows}).values_list(
                "id", "name"
            )
        )
        self.stdout.write(f"Outbox rows written: {len(rows)}")
        for row in rows:
            delay = (row.due_at - row.created_at).total_seconds()
            name = names.get(row.trigger_id, "?")
            self.stdout.write(
                f"  #{row.id} {row.state} trigger={row.trigger_id} ({name}) "
                f"event={row.event_id} user_pk={row.user_pk} due_at={row.due_at.isoformat()} "
                f"(+{delay:g}s) context={row.context}"
            )
