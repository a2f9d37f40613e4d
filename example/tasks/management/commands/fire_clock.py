from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from tasks.models import HourlyClockEvent


class Command(BaseCommand):
    help = "Fire the hourly clock event for all active users (run it hourly, e.g. from cron)."

    def handle(self, *args: Any, **options: Any) -> None:
        count = HourlyClockEvent.fire_all()
        self.stdout.write(f"Fired {count} hourly clock event(s).")
