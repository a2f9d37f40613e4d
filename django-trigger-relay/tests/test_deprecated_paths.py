"""The 0.1 import paths that the README and the example showed still work, and warn
(CHANGELOG, 0.2: the add-on by its parts; docs/architecture.md)."""

from __future__ import annotations

import importlib
import sys

import pytest

from trigger_relay.firing import atomicity
from trigger_relay.firing import context
from trigger_relay.firing import routes
from trigger_relay.models import CeleryTaskClaim

OLD_PATHS = [
    ("trigger_relay.atomicity", "FiringOutsideTransaction", atomicity.FiringOutsideTransaction),
    ("trigger_relay.context", "ContextTooLarge", context.ContextTooLarge),
    ("trigger_relay.context", "MAX_CONTEXT_DEPTH", context.MAX_CONTEXT_DEPTH),
    ("trigger_relay.routing", "route_for", routes.route_for),
    ("trigger_relay.adoption", "CeleryTaskClaim", CeleryTaskClaim),
]


@pytest.mark.parametrize(("old", "name", "new"), OLD_PATHS)
def test_an_old_path_gives_the_same_object_and_warns(
    old: str, name: str, new: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, old, raising=False)

    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated; import .*{name}"):
        module = importlib.import_module(old)

    assert getattr(module, name) is new
