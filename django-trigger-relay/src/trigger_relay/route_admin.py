"""Routes in the Django admin (guarantees §2.3): each trigger's route in dj-triggers' Trigger
changelist and change form, and actions that route the selected triggers to Temporal or to
Celery. Changing a route needs ``trigger_relay.change_triggerroute`` (superusers have it),
in the actions and in the inline alike: storing a trigger's first route, editing it and
removing it (the settings decide again) all take it, and Django's add and delete
permissions of ``TriggerRoute`` give none of them. Every change is written to the admin log.

dj-triggers registers its own ``TriggerAdmin``; :func:`install` replaces it with a subclass
that adds the route. A site that registered an admin class of its own for ``Trigger`` keeps
it: it can add :class:`RouteAdminMixin` to that class.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib import messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from trigger_relay import conf
from trigger_relay.firing.routes import ResolvedRoute
from trigger_relay.firing.routes import resolve_from_settings
from trigger_relay.firing.routes import set_routes
from trigger_relay.models import TriggerRoute

CHANGE_ROUTE_PERMISSION = "trigger_relay.change_triggerroute"


class TriggerRouteInline(admin.StackedInline):
    """The stored route, editable on the trigger's change form."""

    model = TriggerRoute
    extra = 0
    max_num = 1
    fields = ("route", "changed_at", "changed_by")
    readonly_fields = ("changed_at", "changed_by")
    verbose_name = _("route (stored; otherwise the settings decide)")
    verbose_name_plural = _("route")

    # One permission routes, as the actions and the module's docstring say: storing a
    # trigger's first route (an add, to Django) and removing it (a delete: the settings
    # decide again) move its firings as much as editing it does. Django's add and delete
    # permissions of TriggerRoute alone do not; viewing keeps Django's rule (view or
    # change permission).
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_change_routes(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_change_routes(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_change_routes(request)


def may_change_routes(request: HttpRequest) -> bool:
    """Whether the request's user may change routes: in the admin, by the actions or the
    inline (README, "Routing")."""
    return bool(request.user.has_perm(CHANGE_ROUTE_PERMISSION))


def resolved_route(trigger: Any) -> ResolvedRoute:
    """The trigger's route without a query when its stored route was selected with it."""
    try:
        stored = trigger.relay_route
    except TriggerRoute.DoesNotExist:
        return resolve_from_settings(trigger.pk, trigger.name)
    return ResolvedRoute(stored.route, "database")


class RouteAdminMixin:
    """Adds the route to a ``ModelAdmin`` of dj-triggers' ``Trigger``."""

    actions = ("route_to_temporal", "route_to_celery")

    @admin.display(description=_("action"))
    def get_action(self, action: Any) -> Any:
        """dj-triggers 1.0.1's TriggerAdmin names its "action" list column ``get_action``,
        which shadows ``ModelAdmin.get_action`` and with it every admin action of the
        changelist. Called with a trigger: that column; otherwise: Django's own."""
        if isinstance(action, models.Model):
            return super().get_action(action)  # type: ignore[misc]
        return admin.ModelAdmin.get_action(self, action)  # type: ignore[arg-type]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset: QuerySet[Any] = super().get_queryset(request)  # type: ignore[misc]
        return queryset.select_related("relay_route")

    def get_list_display(self, request: HttpRequest) -> Any:
        return (*super().get_list_display(request), "relay_route_display")  # type: ignore[misc]

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        return (*super().get_inlines(request, obj), TriggerRouteInline)  # type: ignore[misc]

    @admin.display(description=_("route"))
    def relay_route_display(self, trigger: Any) -> str:
        resolved = resolved_route(trigger)
        return f"{resolved.route} ({resolved.source})"

    def has_change_route_permission(self, request: HttpRequest) -> bool:
        return may_change_routes(request)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is TriggerRoute:
            for route in formset.save(commit=False):
                route.changed_by = f"admin: {request.user.get_username()}"
                route.save()
            for deleted in formset.deleted_objects:
                deleted.delete()
            return
        super().save_formset(request, form, formset, change)  # type: ignore[misc]

    def _route(self, request: HttpRequest, queryset: QuerySet[Any], route: conf.Route) -> None:
        triggers = list(queryset)
        changed = set(
            set_routes(
                [trigger.pk for trigger in triggers],
                route,
                changed_by=f"admin: {request.user.get_username()}",
            )
        )
        for trigger in triggers:
            if trigger.pk in changed:
                self.log_change(request, trigger, f"Routed to {route} (trigger_relay).")  # type: ignore[attr-defined]
        self.message_user(  # type: ignore[attr-defined]
            request,
            f"Routed {len(changed)} trigger(s) to {route}; "
            f"{len(triggers) - len(changed)} already were.",
            messages.SUCCESS,
        )

    @admin.action(
        description=_("Route selected triggers to Temporal"), permissions=["change_route"]
    )
    def route_to_temporal(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._route(request, queryset, conf.TEMPORAL)

    @admin.action(description=_("Route selected triggers to Celery"), permissions=["change_route"])
    def route_to_celery(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._route(request, queryset, conf.CELERY)


def install(site: admin.AdminSite = admin.site) -> None:
    """Replace dj-triggers' own ``TriggerAdmin`` on ``site`` with one that shows routes."""
    from triggers import admin as triggers_admin
    from triggers.models import Trigger

    registered = site._registry.get(Trigger)
    original = getattr(triggers_admin, "TriggerAdmin", None)
    if registered is None or original is None or type(registered) is not original:
        return
    routed = type("TriggerAdmin", (RouteAdminMixin, original), {"__module__": __name__})
    site.unregister(Trigger)
    site.register(Trigger, routed)
