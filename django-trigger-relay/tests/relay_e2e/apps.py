from __future__ import annotations

from django.apps import AppConfig


class RelayE2EConfig(AppConfig):
    name = "relay_e2e"
    label = "relay_e2e"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "trigger-relay end-to-end test support"
