"""The context of a firing must be JSON values (SPEC §2.2).

dj-triggers passes the keyword arguments of ``Event.fire()`` through to the handler as its
context. The outbox stores them as ``jsonb`` and the Temporal workflow carries them, so only
JSON values can make the trip unchanged. Anything else is refused at ``fire()`` time, where
the caller can still fix it, instead of failing later in the relay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

JSON_HINT = (
    "pass JSON values only (str, int, float, bool, None, lists, and dicts with str keys), "
    "e.g. an object's pk instead of the object"
)


def check_context(context: Mapping[str, Any], *, where: str = "") -> None:
    """Raise ``TypeError`` naming the context key whose value is not a JSON value."""
    for key, value in context.items():
        problem = _problem(value, path=f"[{key!r}]")
        if problem is not None:
            path, message = problem
            at = f" (at context{path})" if path != f"[{key!r}]" else ""
            raise TypeError(f"context key {key!r}{where}{at}: {message}; {JSON_HINT}.")


def _problem(value: object, *, path: str) -> tuple[str, str] | None:
    """``(path, message)`` of the first non-JSON part of ``value``, or ``None``."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return path, f"value {value!r} is not a finite number (JSON has no NaN or Infinity)"
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problem = _problem(item, path=f"{path}[{index}]")
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, (
                    f"dict key {key!r} of type {type(key).__name__} is not a str "
                    "(JSON object keys are strings)"
                )
            problem = _problem(item, path=f"{path}[{key!r}]")
            if problem is not None:
                return problem
        return None
    return path, f"value of type {type(value).__name__} is not JSON-serializable"
