"""Which way a firing goes: Temporal (the outbox) or Celery (dj-triggers' own task)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trigger_relay import conf
from trigger_relay.routes import resolve
from trigger_relay.routes import settings_have_names

if TYPE_CHECKING:
    from triggers.models import Event


def route_for(event: Event) -> conf.Route:
    """Route of ``event``'s trigger as it is now (guarantees §2.3): its stored route, else
    ``TRIGGER_RELAY_ROUTES`` (pk, then name), else ``TRIGGER_RELAY_DEFAULT_ROUTE``; see
    :mod:`trigger_relay.routes`. Read in the firing's transaction, so a flip committed by
    any process takes effect at the next firing. A malformed setting raises
    ``ImproperlyConfigured`` rather than guessing where a firing should go.
    """
    # Event.fire() has already loaded the trigger, so its name costs no query; it is only
    # read when settings route by name.
    name = event.trigger.name if settings_have_names() else None
    return resolve(event.trigger_id, name).route
