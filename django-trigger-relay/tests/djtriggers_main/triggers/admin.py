from __future__ import annotations

from django.contrib import admin

from triggers.models import Activity
from triggers.models import Trigger


@admin.register(Trigger)
class TriggerAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "is_enabled")


@admin.register(Activity)
class ActivityAdmin(admin.ModelAdmin):
    list_display = ("trigger", "user", "last_action_datetime", "action_count")
