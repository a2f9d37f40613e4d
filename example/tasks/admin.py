from __future__ import annotations

from django.contrib import admin

from tasks.models import SentEmail
from tasks.models import Task


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "user", "important", "completed_at")
    list_filter = ("important",)


@admin.register(SentEmail)
class SentEmailAdmin(admin.ModelAdmin):
    list_display = ("id", "sent_at", "user", "trigger_name", "subject")
    list_filter = ("trigger_name",)
