"""System checks for misconfiguration (``manage.py check``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.apps import apps
from django.core import checks
from django.db import connections
from django.db import router

from trigger_relay import conf

APP_NAME = "trigger_relay"
TRIGGERS_APP_NAME = "triggers"


@checks.register()
def check_app_order(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    names = [config.name for config in apps.get_app_configs()]
    return app_order_problems(names)


def app_order_problems(app_names: Sequence[str]) -> list[checks.CheckMessage]:
    """``trigger_relay`` must come after ``triggers`` in ``INSTALLED_APPS``."""
    if TRIGGERS_APP_NAME not in app_names:
        return [
            checks.Error(
                "'triggers' (dj-triggers) is not in INSTALLED_APPS.",
                hint="Add 'triggers' to INSTALLED_APPS, before 'trigger_relay'.",
                id="trigger_relay.E001",
            )
        ]
    if APP_NAME in app_names and app_names.index(APP_NAME) < app_names.index(TRIGGERS_APP_NAME):
        return [
            checks.Error(
                "'trigger_relay' comes before 'triggers' in INSTALLED_APPS.",
                hint=(
                    "Put 'trigger_relay' after 'triggers', so that it takes over Event.fired "
                    "from dj-triggers once dj-triggers is ready."
                ),
                id="trigger_relay.E001",
            )
        ]
    return []


@checks.register()
def check_routes(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = [
        checks.Error(
            problem,
            hint="TRIGGER_RELAY_ROUTES = {'<trigger name>' or <trigger pk>: 'temporal' | 'celery'}",
            id="trigger_relay.E002",
        )
        for problem in conf.routes_problems(conf.routes())
    ]
    default = conf.default_route()
    if not conf.is_route(default):
        messages.append(
            checks.Error(
                f"TRIGGER_RELAY_DEFAULT_ROUTE is {default!r}.",
                hint=f"Use one of {', '.join(map(repr, conf.ROUTE_VALUES))} (default 'celery').",
                id="trigger_relay.E003",
            )
        )
    return messages


@checks.register()
def check_retry_setting(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    try:
        conf.retry_application_errors()
    except ValueError as problem:
        return [
            checks.Error(
                str(problem),
                hint=(
                    "Leave it unset (application errors fail the firing at once, as on "
                    "Celery) or set it to a boolean."
                ),
                id="trigger_relay.E007",
            )
        ]
    return []


@checks.register()
def check_fire_outside_atomic_setting(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    try:
        conf.fire_outside_atomic()
    except ValueError as problem:
        return [
            checks.Error(
                str(problem),
                hint=(
                    "Leave it unset ('warn': a firing outside transaction.atomic() is logged) "
                    "or use 'error' or 'ignore'. Meanwhile every Temporal-routed firing "
                    "raises ImproperlyConfigured."
                ),
                id="trigger_relay.E008",
            )
        ]
    return []


@checks.register()
def check_original_receiver(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    from trigger_relay.receivers import installation
    from trigger_relay.receivers import is_connected

    if not installation.installed:
        return []
    if installation.original is None:
        return [
            checks.Error(
                "dj-triggers' receiver triggers.tasks.on_event_fired was not found "
                f"({installation.import_error}); Celery-routed firings cannot be handled.",
                hint="Install a dj-triggers version that has triggers.tasks.on_event_fired.",
                id="trigger_relay.E004",
            )
        ]
    from triggers.models import Event

    messages: list[checks.CheckMessage] = []
    if is_connected(Event.fired, installation.original):
        messages.append(
            checks.Error(
                "dj-triggers' receiver triggers.tasks.on_event_fired is connected to "
                "Event.fired again: Temporal-routed firings would also go to Celery.",
                hint=(
                    "Something reconnected it after trigger_relay's AppConfig.ready(); remove that."
                ),
                id="trigger_relay.E005",
            )
        )
    if not installation.original_was_connected:
        messages.append(
            checks.Warning(
                "dj-triggers' receiver triggers.tasks.on_event_fired was not connected to "
                "Event.fired when trigger_relay took over.",
                hint=(
                    "trigger_relay calls it for Celery-routed firings anyway. If your site "
                    "disconnected it on purpose, silence this check."
                ),
                id="trigger_relay.W001",
            )
        )
    return messages


@checks.register()
def check_database(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    # The backend's vendor is known without connecting.
    return database_problems()


def database_problems() -> list[checks.CheckMessage]:
    from trigger_relay.models import OutboxRow

    alias = router.db_for_write(OutboxRow)
    vendor = connections[alias].vendor
    if vendor != "postgresql":
        return [
            checks.Error(
                f"The outbox database {alias!r} is {vendor}, not PostgreSQL.",
                hint=(
                    "trigger_relay's outbox (sql/schema/) and the relay daemon need "
                    "PostgreSQL: LISTEN/NOTIFY, jsonb, FOR UPDATE SKIP LOCKED."
                ),
                id="trigger_relay.E006",
            )
        ]
    return []
