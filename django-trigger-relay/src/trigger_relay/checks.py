"""System checks for misconfiguration (``manage.py check``)."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import cast

from django.apps import AppConfig
from django.apps import apps
from django.conf import settings
from django.core import checks
from django.db import DEFAULT_DB_ALIAS
from django.db import DatabaseError
from django.db import connections
from django.db import router
from django.db.models import Model

from trigger_relay import conf
from trigger_relay.schema import not_postgresql

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
def check_temporal_ui_url_setting(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    problem = conf.temporal_ui_url_problem(getattr(settings, conf.TEMPORAL_UI_URL, None))
    if problem is None:
        return []
    return [
        checks.Error(
            problem,
            hint=(
                "Set it to the Temporal UI's address, such as 'http://127.0.0.1:8233' or "
                "'https://cloud.temporal.io', or leave it unset. Meanwhile no row or trigger "
                "links to the UI."
            ),
            id="trigger_relay.E013",
        )
    ]


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
def check_codec_keys_setting(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Payload encryption keys the worker could not use: it would refuse to start, so say it
    at deploy time, in ``manage.py check``, too. Reads the file, never shows a key."""
    try:
        conf.codec_keys()
    except conf.KeyFileError as problem:
        return [
            checks.Error(
                str(problem),
                hint=(
                    f"Set both {conf.KEYS_FILE} (a file of `<key id>=<base64 of 32 bytes>` "
                    f"lines, the daemon's) and {conf.CURRENT_KEY_ID} (the key that encrypts), "
                    "or neither. Meanwhile `manage.py trigger_relay_worker` refuses to start."
                ),
                id="trigger_relay.E015",
            )
        ]
    return []


@checks.register()
def check_strict_checks_setting(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """A malformed ``TRIGGER_RELAY_STRICT_CHECKS`` is named by every ``manage.py check``, not
    only the database checks it changes: a CI that set it to make typos fail would otherwise
    pass, quietly not strict."""
    try:
        conf.strict_checks()
    except ValueError as problem:
        return [
            checks.Error(
                str(problem),
                hint=(
                    "Use True or False (default False: a TRIGGER_RELAY_ROUTES key that matches "
                    "no trigger is the warning trigger_relay.W004; True makes it the error "
                    "trigger_relay.E011). Meanwhile such a key is only a warning."
                ),
                id="trigger_relay.E014",
            )
        ]
    return []


@checks.register()
def check_max_context_bytes_setting(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """``TRIGGER_RELAY_MAX_CONTEXT_BYTES`` must be a positive number of bytes within the
    daemon's own limit: above it, fire() would accept contexts whose rows the relay then
    fails (README, "Context limits")."""
    try:
        limit = conf.max_context_bytes()
    except ValueError as problem:
        return [
            checks.Error(
                str(problem),
                hint=(
                    f"Use a positive number of bytes (default {conf.DEFAULT_MAX_CONTEXT_BYTES}). "
                    "Meanwhile every Temporal-routed fire() raises this error."
                ),
                id="trigger_relay.E016",
            )
        ]
    try:
        daemon_limit = conf.daemon_max_input_bytes()
    except ValueError as problem:
        return [
            checks.Error(
                str(problem),
                hint="The daemon refuses to start with it: use its limit on a workflow input, "
                "in bytes (default 2097152).",
                id="trigger_relay.E017",
            )
        ]
    if limit > daemon_limit:
        return [
            checks.Error(
                f"{conf.MAX_CONTEXT_BYTES} is {limit} bytes, over the daemon's limit on a "
                f"workflow input ({conf.DAEMON_MAX_INPUT_BYTES} = {daemon_limit}): fire() "
                "would accept contexts whose rows the relay fails.",
                hint=(
                    f"Lower {conf.MAX_CONTEXT_BYTES} to at most half of "
                    f"{conf.DAEMON_MAX_INPUT_BYTES} (the workflow input escapes a context's "
                    "quotes and backslashes once more), or raise the daemon's limit and set "
                    f"{conf.DAEMON_MAX_INPUT_BYTES} here too."
                ),
                id="trigger_relay.E017",
            )
        ]
    return []


@checks.register()
def check_original_receiver(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    from trigger_relay.firing.receivers import installation

    if not installation.installed:
        return []
    messages: list[checks.CheckMessage] = []
    if installation.original is None:
        messages.append(
            checks.Error(
                "dj-triggers' receiver triggers.tasks.on_event_fired was not found "
                f"({installation.import_error}); Celery-routed firings cannot be handled.",
                hint="Install a dj-triggers version that has triggers.tasks.on_event_fired.",
                id="trigger_relay.E004",
            )
        )
    messages.extend(celery_path_receiver_problems())
    if installation.original is not None and not installation.original_was_connected:
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


def celery_path_receiver_problems() -> list[checks.CheckMessage]:
    """Receivers of ``Event.fired``, connected now, that would also enqueue firings on Celery.

    The signal's live registrations are read, not what ``install()`` saw: a module imported
    later (or ``importlib.reload(triggers.tasks)``) may have connected one since.
    """
    from triggers.models import Event

    from trigger_relay.firing import receivers
    from trigger_relay.firing import takeover

    messages: list[checks.CheckMessage] = []
    names = takeover.sender_names()
    for registration in takeover.registrations(Event.fired):
        receiver = registration.receiver
        if receiver is None or receiver is receivers.on_event_fired:
            continue
        if takeover.is_dj_triggers_receiver(receiver):
            messages.append(
                checks.Error(
                    f"dj-triggers' receiver {registration.describe(names)} is connected to "
                    "Event.fired after trigger_relay took over: Temporal-routed firings would "
                    "also be enqueued on Celery.",
                    hint=(
                        "Something connected it after trigger_relay's AppConfig.ready() (a "
                        "module imported later, a second @receiver, "
                        "importlib.reload(triggers.tasks)); remove that. trigger_relay calls "
                        "dj-triggers' receiver itself for Celery-routed firings."
                    ),
                    id="trigger_relay.E005",
                )
            )
            continue
        references = takeover.celery_path_references(
            receiver, relay_receiver=receivers.on_event_fired
        )
        if references:
            messages.append(
                checks.Error(
                    f"The receiver {registration.describe(names)} of Event.fired reaches "
                    f"dj-triggers' Celery path (it refers to {', '.join(references)}): "
                    "Temporal-routed firings would also be enqueued on Celery, and "
                    "Celery-routed ones twice.",
                    hint=(
                        "Connect nothing that enqueues triggers.tasks.handle_event: "
                        "trigger_relay already sends each Celery-routed firing to dj-triggers' "
                        "receiver, and each Temporal-routed one to the outbox. Remove this "
                        "receiver, or keep only its other work in it. trigger_relay does not "
                        "disconnect it because it may do other work."
                    ),
                    id="trigger_relay.E009",
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
    if alias not in connections.settings:
        # A router's typo would otherwise crash `manage.py check` itself.
        return [
            checks.Error(
                f"The outbox database {alias!r}, chosen by DATABASE_ROUTERS, is not in DATABASES.",
                hint="Route trigger_relay's models to a PostgreSQL database of DATABASES.",
                id="trigger_relay.E006",
            )
        ]
    vendor = connections[alias].vendor
    if vendor != "postgresql":
        # The same words as the migrations, which refuse such a database.
        message, hint = not_postgresql(alias, vendor)
        return [checks.Error(message, hint=hint, id="trigger_relay.E006")]
    return []


@checks.register()
def check_database_routing(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    if not apps.is_installed(TRIGGERS_APP_NAME):
        return []  # E001 says so; dj-triggers' models cannot be imported
    # Only the routers are consulted: no connection is opened.
    return database_routing_problems()


def routed_models() -> list[type[Model]]:
    """The models whose rows one firing's exactly-once transaction reads or writes.

    The outbox and the ledger (trigger_relay), dj-triggers' models, and the site's
    subclasses of them (polymorphic, multi-table: a subclass's query joins its parent's
    table, so the two must live together).
    """
    from triggers.models import Action
    from triggers.models import Activity
    from triggers.models import Condition
    from triggers.models import Event
    from triggers.models import Trigger

    from trigger_relay.models import LedgerEntry
    from trigger_relay.models import OutboxRow

    bases = (Trigger, Event, Condition, Action, Activity)
    subclasses = [
        model
        for model in apps.get_models()
        if issubclass(model, bases) and model not in bases and not model._meta.proxy
    ]
    return [OutboxRow, LedgerEntry, *bases, *sorted(subclasses, key=lambda m: m._meta.label)]


def database_routing_problems() -> list[checks.CheckMessage]:
    """Exactly-once (guarantees §3.4) holds only if one transaction covers the ledger entry, the
    Activity's lock and count, and what the conditions read; and a firing's outbox row is
    written where its event lives. So every routed model reads and writes one alias: the
    default one, since dj-triggers' ``Activity.lock`` opens ``transaction.atomic()`` there.
    """
    from trigger_relay.models import OutboxRow

    models = routed_models()
    alias = router.db_for_write(OutboxRow)
    elsewhere = []
    not_migrated = []
    for model in models:
        routes = [("write", router.db_for_write(model)), ("read", router.db_for_read(model))]
        differing = [
            f"{operation} -> {routed!r}" for operation, routed in routes if routed != alias
        ]
        if differing:
            elsewhere.append(f"{model._meta.label} ({', '.join(differing)})")
        allowed = router.allow_migrate(
            alias, model._meta.app_label, model_name=model._meta.model_name
        )
        if not allowed:
            not_migrated.append(model._meta.label)
    hint = (
        "Route trigger_relay's and dj-triggers' models (and your subclasses of "
        "dj-triggers' models) to the default database for reads and writes: in each "
        "router of DATABASE_ROUTERS, return None (or the default alias) for the app labels "
        "'trigger_relay' and 'triggers' from db_for_read, db_for_write and allow_migrate "
        "(a read-replica router must exempt them)."
    )
    messages: list[checks.CheckMessage] = []
    if elsewhere:
        messages.append(
            checks.Error(
                f"The outbox (trigger_relay.OutboxRow) is written to database {alias!r}, but "
                f"the routers send {'; '.join(elsewhere)}. A firing's outbox row, ledger "
                "entries, Activity lock and condition reads must share one database "
                "transaction for exactly-once.",
                hint=hint,
                id="trigger_relay.E010",
            )
        )
    if alias != DEFAULT_DB_ALIAS:
        messages.append(
            checks.Error(
                f"The outbox (trigger_relay.OutboxRow) is routed to database {alias!r}, not "
                f"{DEFAULT_DB_ALIAS!r}: dj-triggers' Activity.lock opens its transaction on "
                f"{DEFAULT_DB_ALIAS!r} (transaction.atomic() without using=), so the "
                "activity worker's ledger and lock would not be in it.",
                hint=hint,
                id="trigger_relay.E010",
            )
        )
    if not_migrated:
        messages.append(
            checks.Error(
                f"The routers' allow_migrate() refuses {', '.join(not_migrated)} on database "
                f"{alias!r}, where the outbox is written: their tables would be missing there.",
                hint=hint,
                id="trigger_relay.E010",
            )
        )
    return messages


def _table_exists(table: str) -> bool:
    """Whether ``table`` exists on the default database; True if that cannot be told (the
    query that follows then reports why)."""
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            return table in connections[DEFAULT_DB_ALIAS].introspection.table_names(cursor)
    except DatabaseError:
        return True


@checks.register(checks.Tags.database)
def check_routes_against_triggers(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[checks.CheckMessage]:
    """Routes in settings and the database against the triggers that exist (guarantees §2.3).

    Database checks: ``manage.py check --database default`` and ``migrate`` run them.
    - W004 (E011 with ``TRIGGER_RELAY_STRICT_CHECKS``): a ``TRIGGER_RELAY_ROUTES`` key (name
      or pk) that matches no trigger: a typo, a trigger not created yet, or one deleted or
      renamed (while no route was stored for it) in the admin. A warning by default, since
      ``migrate`` runs this check and what an admin does to data must not stop a deploy.
    - W002: ``TRIGGER_RELAY_CELERY_FREE`` says the site runs without Celery, but a trigger
      still routes to Celery (its firings would be enqueued on a broker nobody serves).
    """
    if not databases or DEFAULT_DB_ALIAS not in databases:
        return []
    from triggers.models import Trigger

    from trigger_relay.firing.routes import resolve

    routes = conf.routes()
    if conf.routes_problems(routes) or not conf.is_route(conf.default_route()):
        return []  # E002/E003 say what is wrong
    if not _table_exists(Trigger._meta.db_table):
        # A database not migrated yet: `migrate` runs these checks before it creates the
        # tables, and a new site's first `migrate` should not print a warning.
        return []
    try:
        triggers = list(Trigger.objects.non_polymorphic().order_by("pk").values_list("pk", "name"))
    except DatabaseError as exc:  # unreachable, or the login may not read the table
        return [
            checks.Warning(
                f"Routes could not be checked against the triggers: {exc}",
                hint="Run `manage.py migrate`, then `manage.py check --database default`.",
                id="trigger_relay.W003",
            )
        ]
    if not triggers:
        # A new database (a fresh staging or CI environment): nothing to match a name
        # against yet; every key would be reported, and in strict mode stop its `migrate`.
        return []
    try:
        strict = conf.strict_checks()
    except ValueError:
        strict = False  # E014 names the value
    messages = [
        unmatched_route_message(key, strict=strict)
        for key in unmatched_route_keys(cast(Mapping[object, object], routes), triggers)
    ]
    try:
        celery_free = conf.celery_free()
    except ValueError as problem:
        return [
            *messages,
            checks.Error(str(problem), hint="Use True or False.", id="trigger_relay.E012"),
        ]
    if celery_free:
        on_celery = [
            f"{name!r} (pk {pk})" for pk, name in triggers if resolve(pk, name).route == conf.CELERY
        ]
        if on_celery:
            messages.append(
                checks.Warning(
                    f"TRIGGER_RELAY_CELERY_FREE is set, but {len(on_celery)} trigger(s) route "
                    f"to Celery: {', '.join(on_celery[:10])}"
                    + (" ..." if len(on_celery) > 10 else "")
                    + ". Their firings would be enqueued on a broker that no worker serves.",
                    hint=(
                        "Route them to Temporal (`manage.py trigger_relay_route --all --to "
                        "temporal`), or unset TRIGGER_RELAY_CELERY_FREE while Celery runs."
                    ),
                    id="trigger_relay.W002",
                )
            )
    return messages


def unmatched_route_keys(
    routes: Mapping[object, object], triggers: Sequence[tuple[int, str]]
) -> list[object]:
    """The keys of ``routes`` (``TRIGGER_RELAY_ROUTES``, already valid) that match none of
    ``triggers`` (pk, name): a name (str) no trigger has, a pk (int) no trigger has. Their
    routes apply to nothing; the system check and ``trigger_relay_status`` both name them."""
    pks = {pk for pk, _ in triggers}
    names = {name for _, name in triggers}
    return [
        key
        for key in routes
        if (isinstance(key, str) and key not in names) or (isinstance(key, int) and key not in pks)
    ]


def unmatched_route_message(key: object, *, strict: bool) -> checks.CheckMessage:
    """The check message of a route key that matches no trigger: the warning W004, or the
    error E011 with ``TRIGGER_RELAY_STRICT_CHECKS``. A warning by default because the key
    goes stale through the data (a trigger deleted or renamed in the admin, or not created
    yet), and ``migrate`` runs database checks: an error would stop the next deploy."""
    kind = "name" if isinstance(key, str) else "pk"
    message = (
        f"TRIGGER_RELAY_ROUTES has the trigger {kind} {key!r}, which matches no trigger: its "
        "route applies to nothing."
    )
    hint = (
        f"Remove the key {key!r} from TRIGGER_RELAY_ROUTES, fix it to a trigger's name or pk, "
        "or create the trigger. A trigger renamed since keeps its route only if it was stored "
        "(`manage.py trigger_relay_route --trigger <pk> --to <route>`): routes in the database "
        "are kept by pk."
    )
    if strict:
        return checks.Error(message, hint=hint, id="trigger_relay.E011")
    return checks.Warning(
        message,
        hint=f"{hint} Set TRIGGER_RELAY_STRICT_CHECKS = True to make this an error (in CI).",
        id="trigger_relay.W004",
    )
