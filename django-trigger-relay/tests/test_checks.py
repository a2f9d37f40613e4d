"""System checks for misconfiguration (SPEC §2.3; README "System checks")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from triggers import tasks
from triggers.models import Event

from trigger_relay import receivers
from trigger_relay.checks import app_order_problems
from trigger_relay.checks import check_app_order
from trigger_relay.checks import check_database
from trigger_relay.checks import check_original_receiver
from trigger_relay.checks import check_routes


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [message.id or "" for message in messages]


def test_configured_site_has_no_problems() -> None:
    call_command("check")  # raises SystemCheckError on any error
    assert check_app_order() == []
    assert check_routes() == []
    assert check_original_receiver() == []
    assert check_database() == []


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
