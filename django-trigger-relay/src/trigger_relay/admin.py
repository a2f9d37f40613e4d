"""A read-only view of the outbox: the relay daemon owns the rows' lifecycle.

The outbox keeps every firing until retention deletes it, so nothing here may read the
whole table to draw a page: the filters offer fixed choices, not ``SELECT DISTINCT``
over a column, and there is no date hierarchy (see ``OutboxRowAdmin``).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from trigger_relay import conf
from trigger_relay import route_admin
from trigger_relay.models import OutboxRow
from trigger_relay.states import ROW_SKIP_REASONS
from trigger_relay.states import State

# Skip reasons a row can hold (docs/contract.md, "Skip reasons"): those of the Python
# activity (trigger_relay.perform.core) but workflow_mismatch, which is never written on a row,
# and the daemon's "unspecified" for a skip that came without one. A fixed list, because
# listing the reasons present would read the table.
SKIP_REASONS = ROW_SKIP_REASONS
# Any other reason (one a newer release introduced), under one choice of its own.
OTHER_SKIP_REASON = "_other"

# What the site passed to Event.fire() and the site's exception messages may hold personal
# data or secrets: shown only to users with this permission (superusers have it), not to
# everyone who may view the rows.
PAYLOAD_PERMISSION = "trigger_relay.view_outbox_payload"
PAYLOAD_FIELDS = ("context", "last_error")
# Shown to the others instead of those fields' values.
HIDDEN = "(hidden: needs the permission “Can view outbox row context and last error”)"


class SkipReasonFilter(admin.SimpleListFilter):
    title = "skip reason"
    parameter_name = "skip_reason"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(reason, reason) for reason in SKIP_REASONS] + [(OTHER_SKIP_REASON, "other")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value is None:
            return None
        # A skip reason implies state 'skipped' (a CHECK constraint of sql/schema/), which
        # lets PostgreSQL use the (state, created_at) index instead of reading every row.
        skipped = queryset.filter(state=State.SKIPPED)
        if value == OTHER_SKIP_REASON:
            return skipped.exclude(Q(skip_reason__in=SKIP_REASONS) | Q(skip_reason=None))
        return skipped.filter(skip_reason=value)


@admin.register(OutboxRow)
class OutboxRowAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "state",
        "trigger_id",
        "event_id",
        "user_pk",
        "created_at",
        "due_at",
        "attempts",
        "dispatched_at",
        "workflow_id",
        "in_temporal",
    )
    list_filter = ("state", SkipReasonFilter)
    search_fields = ("=user_pk", "=workflow_id", "=run_id")
    # Newest first, along the primary key (ids grow with time): a page is an index scan.
    ordering = ("-id",)
    # Sorting by any other column (none of them indexed alone) would sort the whole table.
    sortable_by = ("id",)
    # No date_hierarchy: its year links come from SELECT DISTINCT over the whole table,
    # whatever the index, and no index has created_at (or due_at) first; one more index
    # would be a new schema version for the daemon too.
    show_full_result_count = False

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = [self._shown_as(request, field.name) for field in OutboxRow._meta.fields]
        return (*fields, "in_temporal")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return self.get_fields(request, obj)

    def lookup_allowed(self, lookup: str, value: Any, request: HttpRequest | None = None) -> bool:
        # A filter in the URL (?last_error__contains=...) would tell, row count by row count,
        # what a hidden field holds. Django < 5.0 passes no request: refused for everyone.
        field = lookup.split("__", 1)[0]
        if field in PAYLOAD_FIELDS and not (request and can_view_payload(request)):
            return False
        if request is None:
            # Django 4.2's signature (no request); django-stubs describe 5.2's only.
            return super().lookup_allowed(lookup, value)  # type: ignore[call-arg]
        return super().lookup_allowed(lookup, value, request)

    def _shown_as(self, request: HttpRequest, name: str) -> str:
        if name in PAYLOAD_FIELDS and not can_view_payload(request):
            return f"hidden_{name}"
        return name

    @admin.display(description="Temporal")
    def in_temporal(self, obj: OutboxRow) -> str:
        """A link to the row's workflow in the Temporal UI (``TRIGGER_RELAY_TEMPORAL_UI_URL``,
        read at every page), for rows with a workflow id."""
        url = conf.workflow_url(obj.workflow_id)
        if url is None:
            return "-"
        return format_html('<a href="{}" target="_blank" rel="noopener">workflow</a>', url)

    @admin.display(description="context")
    def hidden_context(self, obj: OutboxRow) -> str:
        return HIDDEN

    @admin.display(description="last error")
    def hidden_last_error(self, obj: OutboxRow) -> str:
        return HIDDEN

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def can_view_payload(request: HttpRequest) -> bool:
    """Whether the user may see rows' ``context`` and ``last_error`` (superusers may)."""
    return bool(request.user.has_perm(PAYLOAD_PERMISSION))


# Routes in dj-triggers' own Trigger admin (changelist column, change-form inline, actions).
route_admin.install()
