"""The outbox in the Django admin: read-only, newest first, no query over the whole table
to draw a page, and a row's context and last error only for users allowed to see them; and
the route inline on dj-triggers' Trigger change form, which changes routes only with the
permission the route actions take."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import django
import pytest
from django.contrib.admin.templatetags.admin_list import result_headers
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from trigger_relay.admin import HIDDEN
from trigger_relay.admin import SKIP_REASONS
from trigger_relay.models import OutboxRow
from trigger_relay.models import TriggerRoute

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:trigger_relay_outboxrow_changelist")
SECRET_CONTEXT = "context-secret-4711"
SECRET_ERROR = "error-secret-4712"


def add_row(**fields: Any) -> OutboxRow:
    values = {
        "event_id": 1,
        "trigger_id": 2,
        "user_pk": "3",
        "due_at": timezone.now() + dt.timedelta(hours=1),
        **fields,
    }
    return OutboxRow.objects.create(**values)


@pytest.fixture
def rows() -> dict[str, OutboxRow]:
    return {
        "failed": add_row(
            context={"token": SECRET_CONTEXT}, state="failed", last_error=SECRET_ERROR
        ),
        "condition_false": add_row(state="skipped", skip_reason="condition_false"),
        "not_handled": add_row(state="skipped", skip_reason="not_handled"),
        "from_the_future": add_row(state="skipped", skip_reason="a_reason_of_a_newer_release"),
        "pending": add_row(),
    }


def client_for(*permissions: str, superuser: bool = False) -> Client:
    user = get_user_model().objects.create(
        username=f"staff-{len(permissions)}-{superuser}",
        is_staff=True,
        is_superuser=superuser,
    )
    for codename in permissions:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="trigger_relay", codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


def outbox_queries(client: Client, url: str) -> tuple[Any, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    return response, [
        query["sql"]
        for query in captured.captured_queries
        if "trigger_relay_outbox" in query["sql"]
    ]


def test_changelist_reads_no_column_of_the_whole_table(rows: dict[str, OutboxRow]) -> None:
    """Neither the skip-reason filter (SELECT DISTINCT skip_reason) nor a date hierarchy
    (SELECT DISTINCT date_trunc(...)) reads the table to draw the page; rows come newest
    first, along the primary key."""
    response, queries = outbox_queries(client_for(superuser=True), CHANGELIST)

    assert response.status_code == 200
    assert [sql for sql in queries if "DISTINCT" in sql.upper()] == []
    assert [sql for sql in queries if "DATE_TRUNC" in sql.upper()] == []
    shown = [row.pk for row in response.context["cl"].result_list]
    assert shown == sorted((row.pk for row in rows.values()), reverse=True)


def test_only_the_id_column_offers_sorting() -> None:
    """Any other column has no index of its own: sorting by it would sort the table."""
    response = client_for(superuser=True).get(CHANGELIST)

    headers = result_headers(response.context["cl"])
    assert [str(header["text"]) for header in headers if header["sortable"]] == ["id"]


def test_skip_reason_filter_offers_the_known_reasons(rows: dict[str, OutboxRow]) -> None:
    response = client_for(superuser=True).get(CHANGELIST)

    (skip_filter,) = [
        spec for spec in response.context["cl"].filter_specs if spec.title == "skip reason"
    ]
    offered = [choice["display"] for choice in skip_filter.choices(response.context["cl"])]
    assert offered == ["All", *SKIP_REASONS, "other"]
    assert {"condition_false", "not_handled", "input_mismatch", "firing_mismatch"} <= set(
        SKIP_REASONS
    )


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("condition_false", "condition_false"),
        ("not_handled", "not_handled"),
        ("_other", "from_the_future"),
    ],
)
def test_skip_reason_filter_selects_by_reason(
    rows: dict[str, OutboxRow], reason: str, expected: str
) -> None:
    response, queries = outbox_queries(
        client_for(superuser=True), f"{CHANGELIST}?skip_reason={reason}"
    )

    assert [row.pk for row in response.context["cl"].result_list] == [rows[expected].pk]
    # The state goes with the reason, so that the (state, created_at) index serves it.
    assert all("\"state\" = 'skipped'" in sql for sql in queries if "skip_reason" in sql)


def test_payload_hidden_from_users_who_may_only_view_rows(rows: dict[str, OutboxRow]) -> None:
    """The context and the last error may hold personal data or secrets: the plain view
    permission shows every other column, not them."""
    url = reverse("admin:trigger_relay_outboxrow_change", args=[rows["failed"].pk])

    response = client_for("view_outboxrow").get(url)

    assert response.status_code == 200
    content = response.content.decode()
    assert SECRET_CONTEXT not in content
    assert SECRET_ERROR not in content
    assert content.count(HIDDEN) == 2  # in place of each of the two fields
    assert rows["failed"].user_pk in content


@pytest.mark.parametrize(
    "client_kind",
    ["with the payload permission", "superuser"],
)
def test_payload_shown_with_the_permission(rows: dict[str, OutboxRow], client_kind: str) -> None:
    client = (
        client_for(superuser=True)
        if client_kind == "superuser"
        else client_for("view_outboxrow", "view_outbox_payload")
    )
    url = reverse("admin:trigger_relay_outboxrow_change", args=[rows["failed"].pk])

    content = client.get(url).content.decode()

    assert SECRET_CONTEXT in content
    assert SECRET_ERROR in content
    assert HIDDEN not in content


@pytest.mark.parametrize("lookup", ["last_error__contains", "context__token", "last_error"])
def test_hidden_fields_cannot_be_probed_through_url_filters(
    rows: dict[str, OutboxRow], lookup: str
) -> None:
    """?last_error__contains=... would tell, by the rows it matches, what a hidden field
    holds."""
    response = client_for("view_outboxrow").get(CHANGELIST, {lookup: "error-secret"})

    assert response.status_code == 400


def test_url_filters_on_the_payload_with_the_permission(rows: dict[str, OutboxRow]) -> None:
    client = client_for("view_outboxrow", "view_outbox_payload")

    response = client.get(CHANGELIST, {"last_error__contains": "error-secret"})

    if django.VERSION < (5, 0):
        # ModelAdmin.lookup_allowed() gets no request before Django 5.0: refused for all.
        assert response.status_code == 400
    else:
        assert [row.pk for row in response.context["cl"].result_list] == [rows["failed"].pk]


def test_the_payload_permission_exists_after_migrate() -> None:
    permission = Permission.objects.get(
        content_type__app_label="trigger_relay", codename="view_outbox_payload"
    )
    assert permission.name == "Can view outbox row context and last error"


def test_rows_link_to_their_workflow_in_the_temporal_ui(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """guarantees §6.6: with ``TRIGGER_RELAY_TEMPORAL_UI_URL`` set (read at every page), each
    row with a workflow id links to ``<base>/namespaces/<namespace>/workflows/<id>``."""
    monkeypatch.delenv("TRIGGER_RELAY_TEMPORAL_NAMESPACE", raising=False)
    started = add_row(state="dispatched", workflow_id="trigger-outbox-9-g0-f00d/é")
    add_row()
    client = client_for(superuser=True)
    change = reverse("admin:trigger_relay_outboxrow_change", args=[started.pk])

    settings.TRIGGER_RELAY_TEMPORAL_UI_URL = None
    assert "/namespaces/" not in client.get(CHANGELIST).content.decode()
    assert "/namespaces/" not in client.get(change).content.decode()

    settings.TRIGGER_RELAY_TEMPORAL_UI_URL = "http://temporal-ui.example:8233/"
    link = (
        'href="http://temporal-ui.example:8233/namespaces/default/workflows/'
        'trigger-outbox-9-g0-f00d%2F%C3%A9"'
    )
    page = client.get(CHANGELIST).content.decode()
    assert link in page
    assert page.count("/namespaces/") == 1  # the pending row has no workflow yet
    assert link in client.get(change).content.decode()

    # The namespace of the add-on's settings: the environment first, as for the worker.
    settings.TRIGGER_RELAY_TEMPORAL_NAMESPACE = "site-staging"
    assert "/namespaces/site-staging/workflows/" in client.get(CHANGELIST).content.decode()
    monkeypatch.setenv("TRIGGER_RELAY_TEMPORAL_NAMESPACE", "site-prod")
    assert "/namespaces/site-prod/workflows/" in client.get(CHANGELIST).content.decode()


# -- the route inline on the Trigger change form ------------------------------------------------

ROUTE_CHANGE = "admin:triggers_trigger_change"


def router(*route_permissions: str) -> Client:
    """Staff who may change triggers, with ``route_permissions`` of ``TriggerRoute``."""
    user = get_user_model().objects.create(
        username=f"router-{'-'.join(route_permissions) or 'none'}", is_staff=True
    )
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="triggers", codename__in=["view_trigger", "change_trigger"]
        ),
        *Permission.objects.filter(
            content_type__app_label="trigger_relay", codename__in=route_permissions
        ),
    )
    client = Client()
    client.force_login(user)
    return client


def form_data(page: Any) -> dict[str, Any]:
    """What a browser posts back for the change form ``page`` shows, unchanged."""
    data: dict[str, Any] = {}

    def add(form: Any) -> None:
        for name in form.fields:
            value = form[name].value()
            if value is True:
                data[form.add_prefix(name)] = "on"
            elif value is not None and value is not False:  # 0 (INITIAL_FORMS) is a value
                data[form.add_prefix(name)] = value

    add(page.context["adminform"].form)
    for inline in page.context["inline_admin_formsets"]:
        add(inline.formset.management_form)
        for form in inline.formset.forms:
            add(form)
    return data


def post_route_form(client: Client, trigger: Any, edit: Callable[[dict[str, Any]], None]) -> Any:
    url = reverse(ROUTE_CHANGE, args=[trigger.pk])
    page = client.get(url)
    assert page.status_code == 200
    data = form_data(page)
    edit(data)
    return client.post(url, data)


def add_route(data: dict[str, Any]) -> None:
    data.update(
        {
            "relay_route-TOTAL_FORMS": "1",
            "relay_route-0-route": "temporal",
            "relay_route-0-trigger": data["trigger_pk"],
        }
    )


@pytest.fixture
def trigger() -> Any:
    from triggers.models import Trigger

    return Trigger.objects.create(name="Routed in the admin", is_enabled=True)


def stored_route(trigger: Any) -> str | None:
    route = TriggerRoute.objects.filter(trigger_id=trigger.pk).first()
    return route.route if route else None


@pytest.mark.parametrize(
    ("permissions", "may_change"),
    [
        (("change_triggerroute",), True),
        (("view_triggerroute", "change_triggerroute"), True),
        # Django's own add and delete permissions of the inline's model do not route.
        (("add_triggerroute",), False),
        (("view_triggerroute", "add_triggerroute", "delete_triggerroute"), False),
        (("view_triggerroute",), False),
    ],
)
def test_route_inline_storing_a_first_route_needs_the_change_route_permission(
    trigger: Any, permissions: tuple[str, ...], may_change: bool
) -> None:
    """Storing a trigger's first route (an add, to Django) changes where its firings go:
    it takes ``trigger_relay.change_triggerroute`` as the route actions do (README,
    "Routing"), and ``add_triggerroute`` alone does not give it."""

    def edit(data: dict[str, Any]) -> None:
        data["trigger_pk"] = str(trigger.pk)
        add_route(data)
        del data["trigger_pk"]

    post_route_form(router(*permissions), trigger, edit)
    assert stored_route(trigger) == ("temporal" if may_change else None)


@pytest.mark.parametrize(
    ("permissions", "may_change"),
    [
        (("change_triggerroute",), True),
        (("delete_triggerroute",), False),
        (("view_triggerroute", "delete_triggerroute"), False),
        (("view_triggerroute",), False),
    ],
)
def test_route_inline_editing_or_removing_a_route_needs_the_change_route_permission(
    trigger: Any, permissions: tuple[str, ...], may_change: bool
) -> None:
    """Editing the stored route and removing it (a delete, to Django: the settings decide
    again) both take ``change_triggerroute``; ``delete_triggerroute`` alone does not."""
    TriggerRoute.objects.create(trigger_id=trigger.pk, route="temporal", changed_by="test")
    client = router(*permissions)

    post_route_form(client, trigger, lambda data: data.update({"relay_route-0-route": "celery"}))
    assert stored_route(trigger) == ("celery" if may_change else "temporal")

    post_route_form(client, trigger, lambda data: data.update({"relay_route-0-DELETE": "on"}))
    assert stored_route(trigger) == (None if may_change else "temporal")


def test_route_inline_is_hidden_without_any_route_permission(trigger: Any) -> None:
    page = router().get(reverse(ROUTE_CHANGE, args=[trigger.pk]))
    assert page.status_code == 200
    assert "relay_route-TOTAL_FORMS" not in page.content.decode()
