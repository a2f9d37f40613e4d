"""``manage.py trigger_relay_worker``: the Python activity worker of trigger-relay."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand
from django.core.management.base import CommandError

logger = logging.getLogger("trigger_relay.worker")


class Command(BaseCommand):
    help = (
        "Serve trigger-relay's Django-side activities (conditions, actions) on the Temporal "
        "task queue TRIGGER_RELAY_DJANGO_TASK_QUEUE until SIGTERM. Settings come from the "
        "environment, else from Django settings; Temporal is waited for at start."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not logging.getLogger().handlers:
            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
            )
        # Imported here, so that a missing Temporal SDK is a CommandError, not a traceback
        # from Django's command loader.
        try:
            worker_settings = importlib.import_module("trigger_relay.worker.settings")
            worker = importlib.import_module("trigger_relay.worker.process")
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != "temporalio":
                raise
            raise CommandError(
                "the Temporal Python SDK (package temporalio), a dependency of "
                "django-trigger-relay, is not installed: pip install 'temporalio>=1.35,<2'"
            ) from exc
        try:
            settings = worker_settings.WorkerSettings.from_django()
        except worker_settings.ConfigError as exc:
            raise CommandError(str(exc)) from exc
        failure: CommandError | None = None
        try:
            asyncio.run(worker.run(settings))
        except worker_settings.ConfigError as exc:
            # A setting that Temporal's SDK refused: the message names it, no traceback.
            failure = CommandError(str(exc))
        except worker.WorkerFailed as exc:
            failure = CommandError(f"the worker failed: {exc}")
        left = worker.runtime_threads_left()
        if left:
            # run() joins the SDK's threads by dropping its runtime. Should something still hold the
            # runtime, they would outlive the interpreter, and one that wants the GIL while it
            # finalizes aborts the process (exit -6, not the clean exit of guarantees §5.4). There
            # is nothing left to do, so end the process without finalizing, after the logs.
            logger.warning(
                "Temporal SDK threads still running (%s): exiting without finalization",
                ", ".join(left),
            )
            if failure is not None:
                self.stderr.write(f"CommandError: {failure}")
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0 if failure is None else 1)
        if failure is not None:
            raise failure
