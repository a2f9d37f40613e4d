"""Routes as data (guarantees §2.3): each trigger's route, kept in the database
by trigger pk, so that flipping a trigger needs no deploy and a rename changes nothing.

Where a trigger's route comes from, first match wins:

1. its row in ``trigger_relay_route`` (set in the admin or by ``manage.py
   trigger_relay_route``);
2. ``TRIGGER_RELAY_ROUTES`` by pk, then by name (settings: defaults for a whole site);
3. ``TRIGGER_RELAY_DEFAULT_ROUTE`` (``celery`` unless set).

The row is read at every firing, in the firing's own transaction: one primary-key lookup,
no cache to go stale across processes, so a flip takes effect for every process with its
commit, and each firing goes exactly one way, the one its route named when it fired.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal
from typing import cast

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from trigger_relay import conf
from trigger_relay.models import TriggerRoute

if TYPE_CHECKING:
    from triggers.models import Event

Source = Literal["database", "settings (pk)", "settings (name)", "default"]


@dataclass(frozen=True)
class ResolvedRoute:
    route: conf.Route
    source: Source


def resolve(trigger_id: int, trigger_name: str | None) -> ResolvedRoute:
    """The route of a trigger now, and where it comes from (see the module's docstring).

    ``trigger_name`` is only needed when ``TRIGGER_RELAY_ROUTES`` has name keys; pass None
    to skip the name lookup. A malformed setting raises ``ImproperlyConfigured`` rather
    than guessing where a firing should go.
    """
    stored = (
        TriggerRoute.objects.filter(trigger_id=trigger_id).values_list("route", flat=True).first()
    )
    if stored is not None:
        if not conf.is_route(stored):
            raise ImproperlyConfigured(
                f"trigger_relay_route has route {stored!r} for trigger {trigger_id}; use one "
                f"of {', '.join(map(repr, conf.ROUTE_VALUES))}."
            )
        return ResolvedRoute(cast(conf.Route, stored), "database")
    return resolve_from_settings(trigger_id, trigger_name)


def resolve_from_settings(trigger_id: int, trigger_name: str | None) -> ResolvedRoute:
    """Steps 2 and 3 of the module's docstring: what settings say of this trigger."""
    routes = conf.routes()
    problems = conf.routes_problems(routes)
    if problems:
        raise ImproperlyConfigured(" ".join(problems))
    routes = cast(Mapping[object, conf.Route], routes)
    if trigger_id in routes:
        return ResolvedRoute(routes[trigger_id], "settings (pk)")
    if trigger_name is not None and trigger_name in routes:
        return ResolvedRoute(routes[trigger_name], "settings (name)")
    default = conf.default_route()
    if not conf.is_route(default):
        raise ImproperlyConfigured(
            f"TRIGGER_RELAY_DEFAULT_ROUTE is {default!r}; use one of "
            f"{', '.join(map(repr, conf.ROUTE_VALUES))}."
        )
    return ResolvedRoute(cast(conf.Route, default), "default")


def settings_have_names() -> bool:
    """Whether ``TRIGGER_RELAY_ROUTES`` has any name keys (the only reason to load a
    trigger's name at firing time)."""
    routes = conf.routes()
    return isinstance(routes, Mapping) and any(isinstance(key, str) for key in routes)


def set_routes(trigger_ids: Iterable[int], route: conf.Route, *, changed_by: str) -> list[int]:
    """Store ``route`` for each trigger, in one transaction; the pks whose route changed
    (a trigger whose stored route already was ``route`` is left untouched)."""
    if not conf.is_route(route):
        raise ValueError(f"route {route!r}; use one of {', '.join(map(repr, conf.ROUTE_VALUES))}")
    changed = []
    with transaction.atomic():
        for trigger_id in trigger_ids:
            current = (
                TriggerRoute.objects.select_for_update()
                .filter(trigger_id=trigger_id)
                .values_list("route", flat=True)
                .first()
            )
            if current == route:
                continue
            TriggerRoute.objects.update_or_create(
                trigger_id=trigger_id, defaults={"route": route, "changed_by": changed_by}
            )
            changed.append(trigger_id)
    return changed


def pin_route_on_rename(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    """``pre_save`` of dj-triggers' Trigger (and subclasses): a rename changes no route.

    A trigger routed by its *name* in ``TRIGGER_RELAY_ROUTES`` would silently take another
    route when renamed. Before the new name is saved, the route the old name gave is
    stored for the trigger's pk (``changed_by = "rename from '<old name>'"``), unless the
    database already holds one, which a rename does not affect anyway.
    """
    from triggers.models import Trigger

    if raw or not isinstance(instance, Trigger) or instance.pk is None:
        return
    old_name = Trigger.objects.filter(pk=instance.pk).values_list("name", flat=True).first()
    if old_name is None or old_name == instance.name:
        return
    if TriggerRoute.objects.filter(trigger_id=instance.pk).exists():
        return
    try:
        before = resolve_from_settings(instance.pk, old_name)
        after = resolve_from_settings(instance.pk, instance.name)
    except ImproperlyConfigured:
        return  # the system checks report it; a rename is no time to guess
    if before != after:
        TriggerRoute.objects.create(
            trigger_id=instance.pk, route=before.route, changed_by=f"rename from {old_name!r}"
        )


def route_for(event: Event) -> conf.Route:
    """Route of ``event``'s trigger as it is now (guarantees §2.3): its stored route, else
    ``TRIGGER_RELAY_ROUTES`` (pk, then name), else ``TRIGGER_RELAY_DEFAULT_ROUTE``; see
    the module's docstring. Read in the firing's transaction, so a flip committed by
    any process takes effect at the next firing. A malformed setting raises
    ``ImproperlyConfigured`` rather than guessing where a firing should go.
    """
    # Event.fire() has already loaded the trigger, so its name costs no query; it is only
    # read when settings route by name.
    name = event.trigger.name if settings_have_names() else None
    return resolve(event.trigger_id, name).route
