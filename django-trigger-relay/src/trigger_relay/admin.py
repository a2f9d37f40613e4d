"""A read-only view of the outbox: the relay daemon owns the rows' lifecycle."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from trigger_relay.models import OutboxRow


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
    )
    list_filter = ("state", "skip_reason")
    search_fields = ("=user_pk", "=workflow_id", "=run_id")
    date_hierarchy = "created_at"
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in OutboxRow._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
