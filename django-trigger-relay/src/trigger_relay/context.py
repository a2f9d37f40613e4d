"""Deprecated: the 0.1 path of :mod:`trigger_relay.firing.context` (docs/architecture.md shows
the add-on's parts). Importing it warns; it goes in 0.3."""

from __future__ import annotations

import warnings

from trigger_relay.firing.context import *  # noqa: F403

warnings.warn(
    "trigger_relay.context is deprecated; import ContextTooLarge and MAX_CONTEXT_DEPTH from "
    "trigger_relay.firing.context",
    DeprecationWarning,
    stacklevel=2,
)
