from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TriggerRelayConfig(AppConfig):
    name = "trigger_relay"
    label = "trigger_relay"
    verbose_name = _("Trigger relay")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from trigger_relay import checks  # noqa: F401  (registers the system checks)
        from trigger_relay.receivers import install

        install()
