"""Deprecated: the 0.1 path of :mod:`trigger_relay.firing.atomicity` (docs/architecture.md shows
the add-on's parts). Importing it warns; it goes in 0.3."""

from __future__ import annotations

import warnings

from trigger_relay.firing.atomicity import *  # noqa: F403

warnings.warn(
    "trigger_relay.atomicity is deprecated; import FiringOutsideTransaction from "
    "trigger_relay.firing.atomicity",
    DeprecationWarning,
    stacklevel=2,
)
