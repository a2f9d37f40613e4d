"""Routes as data (guarantees §2.3): kept in the database by trigger pk, read at
every firing, changed in the admin or by ``manage.py trigger_relay_route``; settings stay
defaults; a rename changes nothing.

Firings are observed where they go: the outbox table, or the run's own Redis queue (the
``celery_queue`` fixture) holding dj-triggers' ``handle_event`` message.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core import checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.core.management.base import SystemCheckError
from django.test import Client
from django.test import override_settings
from tests_support.broker import CeleryQueue
from tests_support.factories import make_trigger
from triggers.models import Trigger

from trigger_relay.firing.routes import resolve
from trigger_relay.models import OutboxRow
from trigger_relay.models import TriggerRoute

pytestmark = pytest.mark.django_db


def fired_to(event: Any, user: Any, queue: CeleryQueue) -> str:
    """Fire ``event`` once and say where the firing went."""
    rows, tasks = OutboxRow.objects.count(), len(queue.tasks())
    event.fire_single(user.pk, n=1)
    went = (OutboxRow.objects.count() - rows, len(queue.tasks()) - tasks)
    assert went in ((1, 0), (0, 1)), f"one firing went {went} ways"
    return "temporal" if went == (1, 0) else "celery"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("trigger_relay_route", *args, stdout=out)
    return out.getvalue()


# -- resolution -----------------------------------------------------------------------------


def test_stored_route_wins_over_settings_and_takes_effect_at_the_next_firing(
    user: Any, celery_queue: CeleryQueue
) -> None:
    event = make_trigger("Flip me")
    with override_settings(TRIGGER_RELAY_ROUTES={"Flip me": "celery"}):
        assert fired_to(event, user, celery_queue) == "celery"
        TriggerRoute.objects.create(trigger_id=event.trigger_id, route="temporal")
        assert fired_to(event, user, celery_queue) == "temporal"
        TriggerRoute.objects.filter(trigger_id=event.trigger_id).update(route="celery")
        assert fired_to(event, user, celery_queue) == "celery"


@pytest.mark.parametrize(
    ("routes", "default", "expected"),
    [
        ({}, "celery", ("celery", "default")),
        ({}, "temporal", ("temporal", "default")),
        ({"By name": "temporal"}, "celery", ("temporal", "settings (name)")),
    ],
)
def test_settings_are_the_defaults(
    routes: dict[str, str], default: str, expected: tuple[str, str]
) -> None:
    event = make_trigger("By name")
    with override_settings(TRIGGER_RELAY_ROUTES=routes, TRIGGER_RELAY_DEFAULT_ROUTE=default):
        resolved = resolve(event.trigger_id, "By name")
    assert (resolved.route, resolved.source) == expected


def test_settings_pk_key_is_a_source_of_its_own() -> None:
    event = make_trigger("By pk")
    with override_settings(TRIGGER_RELAY_ROUTES={event.trigger_id: "temporal"}):
        resolved = resolve(event.trigger_id, "By pk")
    assert (resolved.route, resolved.source) == ("temporal", "settings (pk)")


def test_rename_changes_nothing(user: Any, celery_queue: CeleryQueue) -> None:
    """A trigger routed by its name in settings keeps its route when renamed: the old
    name's route is stored for its pk. Before: the renamed trigger silently went back to
    the default route (Celery)."""
    event = make_trigger("Welcome")
    with override_settings(TRIGGER_RELAY_ROUTES={"Welcome": "temporal"}):
        assert fired_to(event, user, celery_queue) == "temporal"
        trigger = Trigger.objects.get(pk=event.trigger_id)
        trigger.name = "Welcome aboard"
        trigger.save()
        event.refresh_from_db()
        assert fired_to(event, user, celery_queue) == "temporal"
    stored = TriggerRoute.objects.get(trigger_id=event.trigger_id)
    assert (stored.route, stored.changed_by) == ("temporal", "rename from 'Welcome'")


def test_rename_of_a_trigger_without_a_name_route_stores_nothing() -> None:
    event = make_trigger("Plain")
    trigger = Trigger.objects.get(pk=event.trigger_id)
    trigger.name = "Plainer"
    trigger.save()
    assert not TriggerRoute.objects.exists()


# -- manage.py trigger_relay_route -------------------------------------------------------------


def test_command_routes_by_name_and_pk_and_lists(user: Any, celery_queue: CeleryQueue) -> None:
    first = make_trigger("First")
    second = make_trigger("Second")
    make_trigger("Third")

    out = run("--trigger", "First", "--trigger", str(second.trigger_id), "--to", "temporal")

    assert "routed 2 trigger(s) to temporal (0 already on it)" in out
    assert fired_to(first, user, celery_queue) == "temporal"
    assert fired_to(second, user, celery_queue) == "temporal"
    assert set(TriggerRoute.objects.values_list("changed_by", flat=True)) == {
        "manage.py trigger_relay_route"
    }
    listing = json.loads(run("--json"))
    assert [(row["name"], row["route"], row["source"]) for row in listing] == [
        ("First", "temporal", "database"),
        ("Second", "temporal", "database"),
        ("Third", "celery", "default"),
    ]
    text = run()
    assert "3 trigger(s): 2 on temporal, 1 on celery" in text


def test_command_dry_run_stores_nothing(user: Any, celery_queue: CeleryQueue) -> None:
    event = make_trigger("Careful")
    out = run("--all", "--to", "temporal", "--dry-run")
    assert "would route 1 trigger(s) to temporal" in out
    assert not TriggerRoute.objects.exists()
    assert fired_to(event, user, celery_queue) == "celery"


def test_command_all_to_celery_then_back() -> None:
    make_trigger("A")
    make_trigger("B")
    run("--all", "--to", "temporal")
    out = run("--all", "--to", "temporal")
    assert "routed 0 trigger(s) to temporal (2 already on it)" in out
    run("--all", "--to", "celery")
    assert set(TriggerRoute.objects.values_list("route", flat=True)) == {"celery"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trigger", "Nope", "--to", "temporal"], "No trigger has the name or pk 'Nope'"),
        (["--trigger", "A"], "need --to"),
        (["--to", "temporal"], "Name the triggers"),
        (["--all", "--trigger", "A", "--to", "celery"], "Name the triggers"),
    ],
)
def test_command_errors_change_nothing(args: list[str], message: str) -> None:
    make_trigger("A")
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not TriggerRoute.objects.exists()


def test_command_refuses_a_name_that_is_another_triggers_pk() -> None:
    first = make_trigger("First")
    make_trigger(str(first.trigger_id))  # named like First's pk
    with pytest.raises(CommandError, match="both the name of trigger"):
        run("--trigger", str(first.trigger_id), "--to", "temporal")
    assert not TriggerRoute.objects.exists()


# -- the admin ----------------------------------------------------------------------------------


@pytest.fixture
def superuser_client(db: None) -> Client:
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def viewer_client(db: None) -> Client:
    """Staff who may view and change triggers, but not routes."""
    viewer = get_user_model().objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="triggers", codename__in=["view_trigger", "change_trigger"]
        )
    )
    client = Client()
    client.force_login(viewer)
    return client


CHANGELIST = "/admin/triggers/trigger/"


def test_admin_changelist_shows_routes_and_routes_selected_triggers(
    superuser_client: Client, user: Any, celery_queue: CeleryQueue
) -> None:
    event = make_trigger("From the admin")
    page = superuser_client.get(CHANGELIST)
    assert page.status_code == 200
    assert "celery (default)" in page.content.decode()
    assert "route_to_temporal" in page.content.decode()

    response = superuser_client.post(
        CHANGELIST,
        {"action": "route_to_temporal", "_selected_action": [str(event.trigger_id)]},
    )

    assert response.status_code == 302
    assert fired_to(event, user, celery_queue) == "temporal"
    stored = TriggerRoute.objects.get(trigger_id=event.trigger_id)
    assert stored.changed_by == "admin: root"
    (entry,) = LogEntry.objects.filter(object_id=str(event.trigger_id))
    assert "Routed to temporal" in entry.get_change_message()
    assert "temporal (database)" in superuser_client.get(CHANGELIST).content.decode()


def test_admin_route_actions_need_the_add_ons_permission(
    viewer_client: Client, user: Any, celery_queue: CeleryQueue
) -> None:
    event = make_trigger("Not yours to route")
    page = viewer_client.get(CHANGELIST)
    assert page.status_code == 200
    assert "route_to_temporal" not in page.content.decode()

    viewer_client.post(
        CHANGELIST,
        {"action": "route_to_temporal", "_selected_action": [str(event.trigger_id)]},
    )

    assert not TriggerRoute.objects.exists()
    assert fired_to(event, user, celery_queue) == "celery"


def test_admin_change_form_shows_and_edits_the_route(superuser_client: Client) -> None:
    event = make_trigger("Form")
    url = f"{CHANGELIST}{event.trigger_id}/change/"
    page = superuser_client.get(url)
    assert page.status_code == 200
    assert "relay_route-TOTAL_FORMS" in page.content.decode()


# -- system checks ------------------------------------------------------------------------------


def route_check_ids(**settings: Any) -> list[tuple[str, str]]:
    from trigger_relay.checks import check_routes_against_triggers

    with override_settings(**settings):
        return [
            (message.id or "", message.msg)
            for message in check_routes_against_triggers(databases=["default"])
        ]


def test_settings_key_matching_no_trigger_is_a_warning_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stale key is what an admin's delete or rename leaves: a warning naming it, never an
    error, since ``migrate`` runs this check."""
    monkeypatch.delenv("TRIGGER_RELAY_STRICT_CHECKS", raising=False)
    event = make_trigger("Real")
    routes = {"Real": "temporal", "Gone": "temporal", event.trigger_id + 99: "celery"}

    found = route_check_ids(TRIGGER_RELAY_ROUTES=routes)

    assert [message_id for message_id, _ in found] == ["trigger_relay.W004", "trigger_relay.W004"]
    assert "trigger name 'Gone'" in found[0][1]
    assert f"trigger pk {event.trigger_id + 99}" in found[1][1]
    assert route_check_ids(TRIGGER_RELAY_ROUTES=routes, TRIGGER_RELAY_STRICT_CHECKS=False) == found
    assert route_check_ids(TRIGGER_RELAY_ROUTES={"Real": "temporal"}) == []


def test_settings_key_matching_no_trigger_is_an_error_in_strict_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRIGGER_RELAY_STRICT_CHECKS", raising=False)
    event = make_trigger("Real")
    routes = {"Real": "temporal", "Gone": "temporal", event.trigger_id + 99: "celery"}

    found = route_check_ids(TRIGGER_RELAY_ROUTES=routes, TRIGGER_RELAY_STRICT_CHECKS=True)

    assert [message_id for message_id, _ in found] == ["trigger_relay.E011", "trigger_relay.E011"]
    assert "'Gone'" in found[0][1]
    assert (
        route_check_ids(TRIGGER_RELAY_ROUTES={"Real": "temporal"}, TRIGGER_RELAY_STRICT_CHECKS=True)
        == []
    )
    monkeypatch.setenv("TRIGGER_RELAY_STRICT_CHECKS", "true")  # CI sets it alone
    assert [i for i, _ in route_check_ids(TRIGGER_RELAY_ROUTES=routes)] == [
        "trigger_relay.E011",
        "trigger_relay.E011",
    ]


@pytest.mark.parametrize(
    ("setting", "environment", "named"),
    [
        ("yes", None, "settings.TRIGGER_RELAY_STRICT_CHECKS is 'yes'"),
        (1, None, "settings.TRIGGER_RELAY_STRICT_CHECKS is 1"),
        (True, "strict", "TRIGGER_RELAY_STRICT_CHECKS='strict' in the environment"),
    ],
)
def test_strict_checks_must_be_a_boolean(
    setting: object, environment: str | None, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``manage.py check`` names a malformed value (not only the database checks), and
    a stale key stays a warning meanwhile."""
    from trigger_relay.checks import check_strict_checks_setting

    if environment is None:
        monkeypatch.delenv("TRIGGER_RELAY_STRICT_CHECKS", raising=False)
    else:
        monkeypatch.setenv("TRIGGER_RELAY_STRICT_CHECKS", environment)
    make_trigger("Real")
    with override_settings(TRIGGER_RELAY_STRICT_CHECKS=setting):
        (error,) = check_strict_checks_setting()
        with pytest.raises(SystemCheckError, match=r"trigger_relay\.E014"):
            call_command("check")
    assert error.id == "trigger_relay.E014"
    assert named in error.msg
    found = route_check_ids(
        TRIGGER_RELAY_ROUTES={"Gone": "temporal"}, TRIGGER_RELAY_STRICT_CHECKS=setting
    )
    assert [i for i, _ in found] == ["trigger_relay.W004"]


def test_check_does_nothing_without_the_database() -> None:
    from trigger_relay.checks import check_routes_against_triggers

    with override_settings(TRIGGER_RELAY_ROUTES={"Gone": "temporal"}):
        assert check_routes_against_triggers(databases=None) == []


def test_celery_free_site_warns_about_a_trigger_on_celery() -> None:
    """guarantees §2.5: with TRIGGER_RELAY_CELERY_FREE, a trigger routed back to Celery is
    a warning naming it."""
    first = make_trigger("On Temporal")
    second = make_trigger("Back on Celery")
    run("--all", "--to", "temporal")
    assert route_check_ids(TRIGGER_RELAY_CELERY_FREE=True) == []

    run("--trigger", str(second.trigger_id), "--to", "celery")
    found = route_check_ids(TRIGGER_RELAY_CELERY_FREE=True)

    assert [message_id for message_id, _ in found] == ["trigger_relay.W002"]
    assert f"'Back on Celery' (pk {second.trigger_id})" in found[0][1]
    assert str(first.trigger_id) not in found[0][1].split("route to Celery:")[1]
    assert route_check_ids(TRIGGER_RELAY_CELERY_FREE=False) == []
    assert [i for i, _ in route_check_ids(TRIGGER_RELAY_CELERY_FREE="yes")] == [
        "trigger_relay.E012"
    ]


def test_trigger_deleted_in_the_admin_does_not_stop_migrate(
    superuser_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin deletes a trigger that settings route by name: the next deploy's
    ``migrate`` must still run (what an admin does to data never stops a deploy), and
    ``check --database default`` still names the key, as a warning. Before, ``migrate``
    raised SystemCheckError (trigger_relay.E011) until someone edited settings."""
    monkeypatch.delenv("TRIGGER_RELAY_STRICT_CHECKS", raising=False)
    make_trigger("Kept")
    event = make_trigger("Deleted in the admin")
    with override_settings(TRIGGER_RELAY_ROUTES={"Deleted in the admin": "temporal"}):
        response = superuser_client.post(f"{CHANGELIST}{event.trigger_id}/delete/", {"post": "yes"})
        assert response.status_code == 302, response.content.decode()
        assert not Trigger.objects.filter(pk=event.trigger_id).exists()

        call_command("migrate", skip_checks=False, interactive=False, verbosity=0)

        found = [
            (message.id, message.msg)
            for message in checks.run_checks(databases=["default"], include_deployment_checks=False)
            if (message.id or "").startswith("trigger_relay.")
        ]
        out, err = io.StringIO(), io.StringIO()
        call_command("check", "--database", "default", stdout=out, stderr=err)
    assert [message_id for message_id, _ in found] == ["trigger_relay.W004"]
    assert "'Deleted in the admin'" in found[0][1]
    reported = out.getvalue() + err.getvalue()
    assert "(trigger_relay.W004)" in reported
    assert "'Deleted in the admin'" in reported
