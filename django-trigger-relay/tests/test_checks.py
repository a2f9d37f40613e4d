"""System checks for misconfiguration (guarantees §2.3; README "System checks")."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from triggers import tasks
from triggers.models import Event

from trigger_relay.checks import app_order_problems
from trigger_relay.checks import check_app_order
from trigger_relay.checks import check_database
from trigger_relay.checks import check_database_routing
from trigger_relay.checks import check_original_receiver
from trigger_relay.checks import check_routes
from trigger_relay.checks import check_temporal_ui_url_setting
from trigger_relay.conf import temporal_ui_url
from trigger_relay.firing import receivers

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "example"


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [message.id or "" for message in messages]


def test_configured_site_has_no_problems() -> None:
    call_command("check")  # raises SystemCheckError on any error
    assert check_app_order() == []
    assert check_routes() == []
    assert check_original_receiver() == []
    assert check_database() == []
    assert check_database_routing() == []


def test_app_order() -> None:
    assert app_order_problems(["polymorphic", "triggers", "trigger_relay"]) == []
    assert ids(app_order_problems(["trigger_relay", "triggers"])) == ["trigger_relay.E001"]
    assert ids(app_order_problems(["polymorphic", "trigger_relay"])) == ["trigger_relay.E001"]


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ({"Welcome": "temporal", 3: "celery"}, []),
        ({"Welcome": "kafka"}, ["trigger_relay.E002"]),
        ({True: "temporal"}, ["trigger_relay.E002"]),
        ({2.5: "sqs", "ok": "celery"}, ["trigger_relay.E002", "trigger_relay.E002"]),
        ([("Welcome", "temporal")], ["trigger_relay.E002"]),
        ({"Welcome": "Temporal"}, ["trigger_relay.E002"]),
    ],
)
def test_routes(routes: object, expected: list[str]) -> None:
    with override_settings(TRIGGER_RELAY_ROUTES=routes):
        assert ids(check_routes()) == expected


@pytest.mark.parametrize(
    ("default", "expected"),
    [
        ("temporal", []),
        ("celery", []),
        ("both", ["trigger_relay.E003"]),
        (None, ["trigger_relay.E003"]),
    ],
)
def test_default_route(default: object, expected: list[str]) -> None:
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE=default):
        assert ids(check_routes()) == expected


@pytest.mark.parametrize(
    ("url", "expected", "link_base"),
    [
        (None, [], None),
        ("  ", [], None),
        ("http://127.0.0.1:8233/", [], "http://127.0.0.1:8233"),
        ("https://cloud.temporal.io", [], "https://cloud.temporal.io"),
        # Each would make the admin's links paths relative to the page they are on.
        ("localhost:8233", ["trigger_relay.E013"], None),
        ("temporal-ui.internal", ["trigger_relay.E013"], None),
        ("ftp://temporal-ui.internal", ["trigger_relay.E013"], None),
        ("https://", ["trigger_relay.E013"], None),
        (8233, ["trigger_relay.E013"], None),
        (["http://127.0.0.1:8233"], ["trigger_relay.E013"], None),
    ],
)
def test_temporal_ui_url(url: object, expected: list[str], link_base: str | None) -> None:
    """A malformed ``TRIGGER_RELAY_TEMPORAL_UI_URL`` is named by a check, and no link is made
    from it (guarantees §6.6)."""
    with override_settings(TRIGGER_RELAY_TEMPORAL_UI_URL=url):
        messages = check_temporal_ui_url_setting()
        assert ids(messages) == expected
        assert all(repr(url) in message.msg for message in messages)
        assert temporal_ui_url() == link_base


def test_misconfiguration_fails_manage_py_check() -> None:
    with (
        override_settings(TRIGGER_RELAY_ROUTES={"Welcome": "kafka"}),
        pytest.raises(SystemCheckError, match=r"trigger_relay\.E002"),
    ):
        call_command("check")


class OutboxToSqlite:
    def db_for_write(self, model: type, **hints: object) -> str | None:
        return "sqlite" if model._meta.app_label == "trigger_relay" else None


def test_outbox_database_must_be_postgresql() -> None:
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.OutboxToSqlite"]):
        (error,) = check_database()
    assert error.id == "trigger_relay.E006"
    assert "'sqlite' is sqlite, not PostgreSQL" in error.msg


@pytest.fixture
def reconnected_original() -> Iterator[None]:
    """dj-triggers' receiver connected again, as a stray import or a test might do."""
    Event.fired.connect(tasks.on_event_fired)
    try:
        yield
    finally:
        Event.fired.disconnect(tasks.on_event_fired)


@pytest.mark.usefixtures("reconnected_original")
def test_original_receiver_connected_again() -> None:
    assert ids(check_original_receiver()) == ["trigger_relay.E005"]


@pytest.fixture
def installation_state() -> Iterator[receivers._Installation]:
    saved = receivers._Installation(**vars(receivers.installation))
    try:
        yield receivers.installation
    finally:
        for name, value in vars(saved).items():
            setattr(receivers.installation, name, value)


def test_original_receiver_not_found(installation_state: receivers._Installation) -> None:
    installation_state.original = None
    installation_state.import_error = "ImportError: cannot import name 'on_event_fired'"
    (error,) = check_original_receiver()
    assert error.id == "trigger_relay.E004"
    assert "on_event_fired" in error.msg


def test_original_receiver_was_not_connected(installation_state: receivers._Installation) -> None:
    installation_state.original_was_connected = False
    assert ids(check_original_receiver()) == ["trigger_relay.W001"]


def test_app_order_check_on_installed_apps() -> None:
    from django.conf import settings

    apps = [app for app in settings.INSTALLED_APPS if app != "trigger_relay"]
    wrong = [*apps[: apps.index("triggers")], "trigger_relay", *apps[apps.index("triggers") :]]
    with override_settings(INSTALLED_APPS=wrong):
        assert ids(check_app_order()) == ["trigger_relay.E001"]
    assert check_app_order() == []
    assert not receivers.is_connected(Event.fired, tasks.on_event_fired)


# --- Multiple databases: one alias for the outbox, the ledger and dj-triggers' models --------
# The check consults the routers only, so the aliases named here need no real database.


def relay_messages(id_: str) -> list[checks.CheckMessage]:
    """What ``manage.py check`` reports under ``id_`` (every registered check runs)."""
    return [message for message in checks.run_checks() if message.id == id_]


class ActivityElsewhere:
    def db_for_read(self, model: type, **hints: object) -> str | None:
        return "sqlite" if model._meta.label == "triggers.Activity" else None

    db_for_write = db_for_read


class ReadReplica:
    def db_for_read(self, model: type, **hints: object) -> str | None:
        return "replica"


class SiteEventsElsewhere:
    """The site's subclasses (app ``tasks``) apart from dj-triggers' own tables."""

    def db_for_write(self, model: type, **hints: object) -> str | None:
        return "sqlite" if model._meta.app_label == "tasks" else None


class EverythingOnOtherDatabase:
    """All of it together, but not on the default database."""

    def db_for_read(self, model: type, **hints: object) -> str | None:
        return "other"

    db_for_write = db_for_read


class NoRelayTables:
    def allow_migrate(self, db: str, app_label: str, **hints: object) -> bool | None:
        return False if app_label == "trigger_relay" else None


def test_activity_on_another_database() -> None:
    """guarantees §3.4: exactly-once needs the ledger and Activity's lock in one transaction."""
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.ActivityElsewhere"]):
        (error,) = relay_messages("trigger_relay.E010")
    assert error.level == checks.ERROR
    assert "is written to database 'default'" in error.msg
    assert "triggers.Activity (write -> 'sqlite', read -> 'sqlite')" in error.msg
    assert "trigger_relay.LedgerEntry" not in error.msg
    assert "DATABASE_ROUTERS" in (error.hint or "")


def test_read_replica_router() -> None:
    """Conditions and caps read on a replica would see stale counts."""
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.ReadReplica"]):
        (error,) = relay_messages("trigger_relay.E010")
    for label in ("trigger_relay.OutboxRow", "trigger_relay.LedgerEntry", "triggers.Activity"):
        assert f"{label} (read -> 'replica')" in error.msg


def test_site_subclasses_of_dj_triggers_models_count() -> None:
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.SiteEventsElsewhere"]):
        (error,) = relay_messages("trigger_relay.E010")
    assert "tasks.TaskCompletedEvent (write -> 'sqlite')" in error.msg
    assert "tasks.SendEmailAction (write -> 'sqlite')" in error.msg


def test_one_database_but_not_the_default() -> None:
    """dj-triggers' Activity.lock opens transaction.atomic() on the default database."""
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.EverythingOnOtherDatabase"]):
        (error,) = relay_messages("trigger_relay.E010")
        # A router's alias missing from DATABASES is reported, not a crash of the check.
        (missing,) = relay_messages("trigger_relay.E006")
    assert "routed to database 'other', not 'default'" in error.msg
    assert "Activity.lock" in error.msg
    assert "'other', chosen by DATABASE_ROUTERS, is not in DATABASES" in missing.msg


def test_outbox_tables_not_migrated_on_the_outbox_database() -> None:
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.NoRelayTables"]):
        (error,) = relay_messages("trigger_relay.E010")
    assert "refuses trigger_relay.OutboxRow, trigger_relay.LedgerEntry on database" in error.msg


def test_first_migrate_of_a_new_site_prints_no_warning(tmp_path: Any) -> None:
    """A new site's first ``manage.py migrate`` runs the database checks before it creates
    any table: the route check (W003) must not warn about the tables it is about to create.
    Afterwards ``check --database default`` is clean too. The example site, a fresh
    database, real subprocesses."""
    name = f"trigger_relay_first_migrate_{os.getpid()}"
    admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {name}")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{name}",
        "DJANGO_SETTINGS_MODULE": "example_site.settings",
    }
    manage = [sys.executable, str(EXAMPLE_DIR / "manage.py")]
    try:
        for command in (["migrate", "--verbosity", "0"], ["check", "--database", "default"]):
            result = subprocess.run(
                [*manage, *command], env=env, capture_output=True, text=True, timeout=300
            )
            output = result.stdout + result.stderr
            assert result.returncode == 0, output
            assert "trigger_relay.W" not in output, output
            assert "trigger_relay.E" not in output, output
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
