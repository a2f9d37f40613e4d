from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TriggerRelayConfig(AppConfig):
    name = "trigger_relay"
    label = "trigger_relay"
    verbose_name = _("Trigger relay")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import pre_save

        from trigger_relay import checks  # noqa: F401  (registers the system checks)
        from trigger_relay.celery.guard import install_celery_guard
        from trigger_relay.firing.receivers import install
        from trigger_relay.firing.routes import pin_route_on_rename

        install()
        # Celery workers skip handle_event tasks adopted into the outbox (celery/guard.py).
        install_celery_guard()
        # Any sender: dj-triggers' Trigger is polymorphic, a subclass sends itself.
        pre_save.connect(pin_route_on_rename, dispatch_uid="trigger_relay.routes.pin_on_rename")
