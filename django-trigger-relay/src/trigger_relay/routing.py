"""Deprecated: the 0.1 path of :mod:`trigger_relay.firing.routes` (docs/architecture.md shows
the add-on's parts). Importing it warns; it goes in 0.3."""

from __future__ import annotations

import warnings

from trigger_relay.firing.routes import *  # noqa: F403

warnings.warn(
    "trigger_relay.routing is deprecated; import route_for from trigger_relay.firing.routes",
    DeprecationWarning,
    stacklevel=2,
)
