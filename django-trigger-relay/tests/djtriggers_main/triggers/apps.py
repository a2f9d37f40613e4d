from __future__ import annotations

from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    verbose_name = "Triggers"

    def ready(self) -> None:
        # Importing the module connects the Celery receiver, as dj-triggers does.
        from triggers import tasks  # noqa: F401
