"""Settings of the add-on, read at call time so that ``override_settings`` and changes
between firings take effect at once (SPEC §2.3: routes change at any time)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from typing import Literal

from django.conf import settings

Route = Literal["temporal", "celery"]

TEMPORAL: Final = "temporal"
CELERY: Final = "celery"
ROUTE_VALUES: Final[tuple[Route, ...]] = (TEMPORAL, CELERY)

#: Installing the add-on changes nothing until routes are set.
DEFAULT_ROUTE: Final[Route] = CELERY


def routes() -> object:
    """``TRIGGER_RELAY_ROUTES``: ``{trigger name (str) or trigger pk (int): route}``.

    Returned unvalidated: the system checks report a malformed value and
    :func:`trigger_relay.routing.route_for` refuses to guess.
    """
    value: object = getattr(settings, "TRIGGER_RELAY_ROUTES", {})
    return value


def default_route() -> object:
    """``TRIGGER_RELAY_DEFAULT_ROUTE``: route of triggers not in ``TRIGGER_RELAY_ROUTES``."""
    value: object = getattr(settings, "TRIGGER_RELAY_DEFAULT_ROUTE", DEFAULT_ROUTE)
    return value


def is_route(value: object) -> bool:
    return isinstance(value, str) and value in ROUTE_VALUES


def is_route_key(key: object) -> bool:
    """A trigger name or a trigger pk (``bool`` is an ``int`` but no pk)."""
    return isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool))


def routes_problems(value: object) -> list[str]:
    """Everything wrong with a ``TRIGGER_RELAY_ROUTES`` value, as sentences."""
    if not isinstance(value, Mapping):
        return [f"TRIGGER_RELAY_ROUTES must be a dict, not {type(value).__name__}."]
    problems = []
    for key, route in value.items():
        if not is_route_key(key):
            problems.append(
                f"TRIGGER_RELAY_ROUTES key {key!r} is a {type(key).__name__}; use a trigger "
                "name (str) or a trigger pk (int)."
            )
        if not is_route(route):
            problems.append(
                f"TRIGGER_RELAY_ROUTES[{key!r}] is {route!r}; use one of "
                f"{', '.join(map(repr, ROUTE_VALUES))}."
            )
    return problems
