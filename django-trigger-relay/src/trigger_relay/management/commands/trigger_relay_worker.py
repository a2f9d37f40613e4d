"""``manage.py trigger_relay_worker``: the Python activity worker of trigger-relay."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.core.management.base import BaseCommand
from django.core.management.base import CommandError

from trigger_relay.worker import ConfigError
from trigger_relay.worker import WorkerSettings
from trigger_relay.worker import run


class Command(BaseCommand):
    help = (
        "Serve trigger-relay's Django-side activities (conditions, actions) on the Temporal "
        "task queue TRIGGER_RELAY_DJANGO_TASK_QUEUE until SIGTERM."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not logging.getLogger().handlers:
            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
            )
        try:
            settings = WorkerSettings.from_env()
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        asyncio.run(run(settings))
