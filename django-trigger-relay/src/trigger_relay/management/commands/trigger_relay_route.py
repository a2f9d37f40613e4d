"""``manage.py trigger_relay_route``: list every trigger's route, or route triggers to
Temporal or Celery (guarantees §2.3). Routes are stored by trigger pk, so a rename later
changes nothing.

    manage.py trigger_relay_route                          # list: pk, name, route, source
    manage.py trigger_relay_route --trigger "Welcome" --trigger 12 --to temporal
    manage.py trigger_relay_route --all --to celery --dry-run
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand
from django.core.management.base import CommandError
from django.core.management.base import CommandParser

from trigger_relay import conf
from trigger_relay.firing.routes import resolve
from trigger_relay.firing.routes import set_routes
from trigger_relay.management.triggers import select_triggers

CHANGED_BY = "manage.py trigger_relay_route"


class Command(BaseCommand):
    help = (
        "List every trigger's route (temporal or celery) and where it comes from, or store a "
        "route for triggers (--trigger NAME|PK ... or --all, with --to)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--trigger",
            action="append",
            default=[],
            metavar="NAME|PK",
            help="A trigger, by pk or by exact name (repeatable).",
        )
        parser.add_argument("--all", action="store_true", help="Every trigger.")
        parser.add_argument(
            "--to", choices=conf.ROUTE_VALUES, help="The route to store for the triggers."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would change; store nothing."
        )
        parser.add_argument("--json", action="store_true", help="The listing as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        selectors: list[str] = options["trigger"]
        if options["to"] is None:
            if selectors or options["all"] or options["dry_run"]:
                raise CommandError("--trigger, --all and --dry-run need --to temporal|celery.")
            self._list(as_json=options["json"])
            return
        if bool(selectors) == bool(options["all"]):
            raise CommandError("Name the triggers: --trigger NAME|PK (repeatable) or --all.")
        triggers = self._select(selectors, every=options["all"])
        route: conf.Route = options["to"]
        verb = "would route" if options["dry_run"] else "routed"
        changing = {t.pk for t in triggers if resolve(t.pk, t.name).route != route}
        if not options["dry_run"]:
            # Stored for every named trigger, also those already there through settings or
            # the default: the route is then the database's, safe from settings changes.
            set_routes([t.pk for t in triggers], route, changed_by=CHANGED_BY)
        for trigger in triggers:
            mark = "*" if trigger.pk in changing else " "
            self.stdout.write(f"{mark} {trigger.pk:>6}  {trigger.name}  -> {route}")
        self.stdout.write(
            f"{verb} {len(changing)} trigger(s) to {route} "
            f"({len(triggers) - len(changing)} already on it)"
        )

    def _select(self, selectors: list[str], *, every: bool) -> list[Any]:
        from triggers.models import Trigger

        if every:
            return list(Trigger.objects.non_polymorphic().order_by("pk"))
        return select_triggers(selectors, refused="; nothing was changed")

    def _list(self, *, as_json: bool) -> None:
        from triggers.models import Trigger

        rows = []
        for trigger in Trigger.objects.non_polymorphic().order_by("pk"):
            resolved = resolve(trigger.pk, trigger.name)
            rows.append(
                {
                    "pk": trigger.pk,
                    "name": trigger.name,
                    "route": resolved.route,
                    "source": resolved.source,
                    "enabled": trigger.is_enabled,
                }
            )
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        self.stdout.write(f"{'PK':>6}  {'ROUTE':<9} {'SOURCE':<16} NAME")
        for row in rows:
            disabled = "" if row["enabled"] else "  (disabled)"
            self.stdout.write(
                f"{row['pk']:>6}  {row['route']:<9} {row['source']:<16} {row['name']}{disabled}"
            )
        counts = {route: sum(row["route"] == route for row in rows) for route in conf.ROUTE_VALUES}
        self.stdout.write(
            f"{len(rows)} trigger(s): "
            + ", ".join(f"{count} on {route}" for route, count in counts.items())
        )
