"""``manage.py trigger_relay_adopt_celery``: move dj-triggers' firings still waiting in
Celery into the outbox, with their original due time and context (guarantees §2.5).
See "Adopting firings waiting in Celery" in the README.

    manage.py trigger_relay_adopt_celery --dry-run            # what would be adopted
    manage.py trigger_relay_adopt_celery                      # adopt every waiting firing
    manage.py trigger_relay_adopt_celery --trigger "Welcome" --trigger 12

Only firings of triggers routed to Temporal are adopted: route them first
(``trigger_relay_route``), so that no new firing goes to Celery meanwhile. Rerunning adopts
nothing twice.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand
from django.core.management.base import CommandError
from django.core.management.base import CommandParser
from django.utils import timezone

from trigger_relay import conf
from trigger_relay.celery import adoption
from trigger_relay.celery import broker
from trigger_relay.firing.routes import resolve
from trigger_relay.management.triggers import select_triggers
from trigger_relay.models import CeleryTaskClaim

PROGRESS_EVERY = 50


class Command(BaseCommand):
    help = (
        "Adopt dj-triggers' handle_event tasks still waiting in Celery (queued, or held by "
        "workers until their ETA) into the outbox, due at their original time; Celery then "
        "skips them, even when the broker delivers them again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--trigger",
            action="append",
            default=[],
            metavar="NAME|PK",
            help="Only firings of this trigger, by pk or exact name (repeatable).",
        )
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            metavar="NAME",
            help="Celery queue(s) to read (default: the queue handle_event is routed to).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be adopted; write nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        selected = self._select(options["trigger"])
        dry_run: bool = options["dry_run"]
        try:
            tasks = list(broker.find_tasks(queues=options["queue"]))
        except broker.UnsupportedBroker as exc:
            raise CommandError(f"Cannot read the waiting tasks: {exc}.") from exc
        where = Counter(task.where for task in tasks)
        self.stdout.write(
            f"found {len(tasks)} handle_event task(s) waiting in Celery"
            + "".join(f"; {count} {place}" for place, count in sorted(where.items()))
        )
        events = self._events(task.event_id for task in tasks if not task.problem)
        routes: dict[int, str] = {}
        claimed = adoption.existing_claims(task.task_id for task in tasks) if dry_run else {}
        outcome: Counter[str] = Counter()
        now = timezone.now()
        for number, task in enumerate(tasks, start=1):
            result = self._one(task, events, routes, selected, claimed, now, dry_run)
            outcome[result] += 1
            if result.startswith("skipped") or result == adoption.STARTED_IN_CELERY:
                self.stdout.write(f"  task {task.task_id} ({task.where}): {result}")
            if number % PROGRESS_EVERY == 0 or number == len(tasks):
                self.stdout.write(
                    f"{number}/{len(tasks)} examined, {outcome[adoption.ADOPTED]} adopted"
                    + (f", {outcome['would adopt']} would be adopted" if dry_run else "")
                )
        self._summary(len(tasks), outcome, dry_run)

    def _one(
        self,
        task: broker.WaitingTask,
        events: dict[Any, int],
        routes: dict[int, str],
        selected: set[int] | None,
        claimed: dict[str, str],
        now: Any,
        dry_run: bool,
    ) -> str:
        if task.problem:
            return f"skipped: {task.problem}"
        trigger_id = events.get(task.event_id)
        if trigger_id is None:
            return "skipped: event deleted (Celery fails it as it would have)"
        if selected is not None and trigger_id not in selected:
            return "not selected (--trigger)"
        if task.expires is not None and task.expires <= now:
            return "skipped: expired (Celery discards it)"
        if trigger_id not in routes:
            routes[trigger_id] = resolve(trigger_id, self._trigger_name(trigger_id)).route
        if routes[trigger_id] != conf.TEMPORAL:
            return f"skipped: trigger {trigger_id} is routed to celery (route it to temporal first)"
        if dry_run:
            owner = claimed.get(task.task_id)
            if owner == CeleryTaskClaim.Owner.TEMPORAL:
                return adoption.ALREADY_ADOPTED
            if owner == CeleryTaskClaim.Owner.CELERY:
                return adoption.STARTED_IN_CELERY
            return "would adopt"
        result, _row = adoption.adopt(task, trigger_id)
        return result

    def _summary(self, found: int, outcome: Counter[str], dry_run: bool) -> None:
        self.stdout.write(f"summary{' (dry run, nothing written)' if dry_run else ''}:")
        self.stdout.write(f"  found:           {found}")
        if dry_run:
            self.stdout.write(f"  would adopt:     {outcome.pop('would adopt', 0)}")
        else:
            self.stdout.write(f"  adopted:         {outcome.pop(adoption.ADOPTED, 0)}")
        self.stdout.write(f"  already adopted: {outcome.pop(adoption.ALREADY_ADOPTED, 0)}")
        for reason, count in sorted(outcome.items()):
            self.stdout.write(f"  {reason}: {count}")

    def _select(self, selectors: list[str]) -> set[int] | None:
        if not selectors:
            return None
        return {trigger.pk for trigger in select_triggers(selectors)}

    @staticmethod
    def _events(event_ids: Any) -> dict[Any, int]:
        from triggers.models import Event

        ids = {event_id for event_id in event_ids if isinstance(event_id, int)}
        return dict(
            Event.objects.non_polymorphic().filter(pk__in=ids).values_list("pk", "trigger_id")
        )

    @staticmethod
    def _trigger_name(trigger_id: int) -> str | None:
        from triggers.models import Trigger

        return (
            Trigger.objects.non_polymorphic()
            .filter(pk=trigger_id)
            .values_list("name", flat=True)
            .first()
        )
