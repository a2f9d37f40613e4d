"""Which way a firing goes: Temporal (the outbox) or Celery (dj-triggers' own task)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import cast

from django.core.exceptions import ImproperlyConfigured

from trigger_relay import conf

if TYPE_CHECKING:
    from triggers.models import Event


def route_for(event: Event) -> conf.Route:
    """Route of ``event``'s trigger, from the settings as they are now (SPEC §2.3).

    A key equal to the trigger's pk wins over one equal to its name; triggers in neither
    take ``TRIGGER_RELAY_DEFAULT_ROUTE``. A malformed setting raises
    ``ImproperlyConfigured`` rather than guessing where a firing should go.
    """
    routes = conf.routes()
    problems = conf.routes_problems(routes)
    if problems:
        raise ImproperlyConfigured(" ".join(problems))
    routes = cast(Mapping[object, conf.Route], routes)
    trigger_id = event.trigger_id
    if trigger_id in routes:
        return routes[trigger_id]
    if any(isinstance(key, str) for key in routes):
        # Event.fire() has already loaded the trigger, so this costs no query.
        name = event.trigger.name
        if name in routes:
            return routes[name]
    default = conf.default_route()
    if not conf.is_route(default):
        raise ImproperlyConfigured(
            f"TRIGGER_RELAY_DEFAULT_ROUTE is {default!r}; use one of "
            f"{', '.join(map(repr, conf.ROUTE_VALUES))}."
        )
    return cast(conf.Route, default)
