"""Deprecated: the 0.1 path of what is now :mod:`trigger_relay.celery` (the guard, the broker
reader, the adoption) and :class:`trigger_relay.models.CeleryTaskClaim` (docs/architecture.md
shows the add-on's parts). Importing it warns; it goes in 0.3."""

from __future__ import annotations

import warnings

from trigger_relay.celery.adoption import *  # noqa: F403
from trigger_relay.celery.broker import *  # noqa: F403
from trigger_relay.celery.guard import *  # noqa: F403
from trigger_relay.models import CeleryTaskClaim as CeleryTaskClaim

warnings.warn(
    "trigger_relay.adoption is deprecated; import CeleryTaskClaim from trigger_relay.models and "
    "the rest from trigger_relay.celery.guard, .broker or .adoption",
    DeprecationWarning,
    stacklevel=2,
)
