"""``manage.py trigger_relay_status``: may Celery be stopped? (guarantees §2.5)

Per trigger: its route and where it comes from, its firings in the outbox by state, and
what Celery still holds of dj-triggers' ``handle_event`` tasks for it (queued in the broker,
held by a worker until their ETA), with those adopted into the outbox counted apart (Celery
skips them); with ``TRIGGER_RELAY_TEMPORAL_UI_URL`` set, a link to the trigger's firings in
the Temporal UI. Then the ``TRIGGER_RELAY_ROUTES`` keys that match no trigger, if any (the
system check trigger_relay.W004 names them too), and last one verdict line. ``--json`` for
scripts; the exit status is 0 whatever the verdict (it is an answer, not a failure), 1 when
the broker cannot be read.
"""

from __future__ import annotations

import json
from collections import Counter
from collections import defaultdict
from collections.abc import Mapping
from typing import Any
from typing import cast

from django.core.management.base import BaseCommand
from django.core.management.base import CommandError
from django.core.management.base import CommandParser
from kombu.exceptions import OperationalError as KombuOperationalError

from trigger_relay import conf
from trigger_relay.celery.adoption import existing_claims
from trigger_relay.celery.broker import UnsupportedBroker
from trigger_relay.celery.broker import find_tasks
from trigger_relay.checks import unmatched_route_keys
from trigger_relay.firing.routes import resolve
from trigger_relay.models import CeleryTaskClaim

CAN_STOP = "Celery holds nothing for dj-triggers: it can be stopped."


class Command(BaseCommand):
    help = (
        "Per trigger: route, outbox rows by state, and dj-triggers tasks Celery still holds; "
        "then whether Celery can be stopped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON.")
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            help="A Celery queue to read (repeatable; default: handle_event's queue).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from triggers.models import Event
        from triggers.models import Trigger

        from trigger_relay.models import OutboxRow

        try:
            waiting = list(find_tasks(queues=options["queue"]))
        except UnsupportedBroker as exc:
            raise CommandError(f"cannot read what Celery holds: {exc}") from None
        except (OSError, KombuOperationalError) as exc:
            raise CommandError(f"cannot read what Celery holds: the broker: {exc}") from None
        claims = existing_claims(task.task_id for task in waiting)
        trigger_of_event = dict(
            Event.objects.non_polymorphic()
            .filter(pk__in={task.event_id for task in waiting if task.event_id is not None})
            .values_list("pk", "trigger_id")
        )
        held: dict[Any, Counter[str]] = defaultdict(Counter)
        for task in waiting:
            trigger_id = trigger_of_event.get(task.event_id)
            if claims.get(task.task_id) == CeleryTaskClaim.Owner.TEMPORAL:
                kind = "adopted"
            elif task.where.startswith("queue"):
                kind = "queued"
            else:
                kind = "held"
            held[trigger_id][kind] += 1
        states: dict[int, Counter[str]] = defaultdict(Counter)
        for trigger_id, state in OutboxRow.objects.values_list("trigger_id", "state"):
            states[trigger_id][state] += 1

        triggers = []
        for trigger in Trigger.objects.non_polymorphic().order_by("pk"):
            resolved = resolve(trigger.pk, trigger.name)
            triggers.append(
                {
                    "pk": trigger.pk,
                    "name": trigger.name,
                    "route": resolved.route,
                    "source": resolved.source,
                    "outbox": dict(sorted(states.pop(trigger.pk, Counter()).items())),
                    "celery": _celery_counts(held.pop(trigger.pk, Counter())),
                    # The trigger's firings in the Temporal UI (search attribute TriggerId);
                    # None unless TRIGGER_RELAY_TEMPORAL_UI_URL is set.
                    "temporal_ui": conf.workflows_query_url(f"TriggerId = {trigger.pk}"),
                }
            )
        unmatched = _unmatched_route_keys(triggers)
        # Tasks of events that no longer exist (dj-triggers' task fails on them).
        orphans = _celery_counts(sum(held.values(), Counter()))
        reasons = []
        on_celery = [t["name"] for t in triggers if t["route"] == conf.CELERY]
        if on_celery:
            reasons.append(f"{len(on_celery)} trigger(s) still route to Celery")
        pending = sum(t["celery"]["queued"] + t["celery"]["held"] for t in triggers)
        pending += orphans["queued"] + orphans["held"]
        if pending:
            reasons.append(
                f"Celery still holds {pending} handle_event task(s) not adopted "
                "(run `manage.py trigger_relay_adopt_celery`, or let them run)"
            )
        verdict = CAN_STOP if not reasons else "Celery cannot be stopped yet: " + "; ".join(reasons)
        if options["json"]:
            payload = {
                "triggers": triggers,
                "celery_tasks_of_deleted_events": orphans,
                "unmatched_route_keys": unmatched,
                "can_stop_celery": not reasons,
                "verdict": verdict,
            }
            self.stdout.write(json.dumps(payload, indent=2))
            return
        self.stdout.write(
            f"{'PK':>6}  {'ROUTE':<9} {'SOURCE':<16} {'OUTBOX':<32} {'CELERY':<28} NAME"
        )
        for trigger in triggers:
            outbox = ", ".join(f"{state} {count}" for state, count in trigger["outbox"].items())
            celery = ", ".join(f"{kind} {count}" for kind, count in trigger["celery"].items())
            self.stdout.write(
                f"{trigger['pk']:>6}  {trigger['route']:<9} {trigger['source']:<16} "
                f"{outbox or '-':<32} {celery:<28} {trigger['name']}"
            )
        linked = [t for t in triggers if t["temporal_ui"]]
        if linked:
            self.stdout.write("Firings in the Temporal UI:")
            for trigger in linked:
                self.stdout.write(f"{trigger['pk']:>6}  {trigger['temporal_ui']}")
        if any(orphans.values()):
            self.stdout.write(f"tasks of deleted events: {orphans}")
        if unmatched:
            self.stdout.write(
                "TRIGGER_RELAY_ROUTES keys that match no trigger (their routes apply to "
                f"nothing): {', '.join(map(repr, unmatched))}"
            )
        self.stdout.write(verdict)


def _unmatched_route_keys(triggers: list[dict[str, Any]]) -> list[object]:
    """The ``TRIGGER_RELAY_ROUTES`` keys that match none of the listed ``triggers``: keys left
    by a trigger deleted or renamed in the admin, or a typo. Named here because the check
    that names them is only a warning, which a deploy's ``migrate`` output buries. Unlike the
    check, a database without triggers names every key. Empty for a malformed setting (the
    check trigger_relay.E002 says what is wrong)."""
    routes = conf.routes()
    if conf.routes_problems(routes):
        return []
    return unmatched_route_keys(
        cast(Mapping[object, object], routes), [(t["pk"], t["name"]) for t in triggers]
    )


def _celery_counts(counts: Counter[str]) -> dict[str, int]:
    return {kind: counts.get(kind, 0) for kind in ("queued", "held", "adopted")}
