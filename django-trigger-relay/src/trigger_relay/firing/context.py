"""The context of a firing must be JSON values the relay carries unchanged (guarantees §2.2).

dj-triggers passes the keyword arguments of ``Event.fire()`` through to the handler as its
context. The outbox stores them as ``jsonb`` and the Temporal workflow carries them, so only
JSON values can make the trip unchanged. Anything else is refused at ``fire()`` time, where
the caller can still fix it, instead of failing later in the relay.

Two limits come from the trip itself:

- nesting: the daemon fails a row whose context is nested deeper than
  :data:`MAX_CONTEXT_DEPTH` (the decoders on the way have recursion limits), so such a
  context is refused here, where the caller sees it, rather than by the relay, which could
  only mark the row failed;
- integers: the daemon carries the context as raw JSON, so integers of any size arrive
  exactly; Python itself refuses to convert integers of more than 4300 digits to text
  (``sys.int_max_str_digits``) with an unclear error from ``json.dumps``, so integers are
  limited to :data:`MAX_INT_DIGITS` digits, with an error that names the key.

The walk is iterative and stops at the depth limit, so neither a very deep nor a
self-containing value can reach Python's recursion limit.

A third limit protects the relay's memory: a context larger than
``TRIGGER_RELAY_MAX_CONTEXT_BYTES`` (:func:`check_context_size`) is refused too, measured
as the text PostgreSQL prints for the stored ``jsonb``, which is what the daemon reads and
carries.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Levels of dicts and lists the context may nest, counted as the daemon counts the stored
#: ``context`` column: its own object is level 1, so ``fire(k=[1])`` is depth 2 and a value
#: may hold 63 levels. The daemon has the same constant (MAX_CONTEXT_DEPTH in src/outbox.rs)
#: and fails rows deeper than it with a reason naming the ``context`` column: keep the two
#: equal, and counted the same way, or fire() accepts rows the relay then fails.
MAX_CONTEXT_DEPTH = 64

#: Most decimal digits of an integer in a context (below Python's own 4300, see above).
MAX_INT_DIGITS = 4000

JSON_HINT = (
    "pass JSON values only (str, int, float, bool, None, lists, and dicts with str keys), "
    "e.g. an object's pk instead of the object"
)
DEPTH_HINT = "pass a flatter structure, or a pk and let the action read the data"
INT_HINT = "pass a number this large as a str"
SIZE_HINT = (
    "pass pks and let the action read the data; the daemon fails a row whose workflow "
    "input is over its TRIGGER_RELAY_MAX_INPUT_BYTES"
)

# Beyond this, an integer has more than MAX_INT_DIGITS digits. Compared instead of counting
# the digits of str(value), which is slow for huge values and raises beyond 4300 digits.
_INT_LIMIT = 10**MAX_INT_DIGITS


@dataclass(frozen=True)
class _Path:
    """Where a value sits in the context, linked to its parent's: a deep or wide value
    costs one small object per item, and the whole path is only spelled out for an
    error."""

    parent: _Path | None
    step: str

    def render(self) -> str:
        steps = []
        node: _Path | None = self
        while node is not None:
            steps.append(node.step)
            node = node.parent
        return "".join(reversed(steps))


@dataclass(frozen=True)
class _BadKey:
    """A dict key that is not a str, queued in the walk where its value would be."""

    key: object


def check_context(context: Mapping[str, Any], *, where: str = "") -> None:
    """Raise ``TypeError`` naming the context key whose value the relay cannot carry
    unchanged: not a JSON value, nested deeper than :data:`MAX_CONTEXT_DEPTH`, or an
    integer of more than :data:`MAX_INT_DIGITS` digits."""
    for key, value in context.items():
        top = f"[{key!r}]"
        # The context itself is the first level (see MAX_CONTEXT_DEPTH).
        problem = _problem(value, path=_Path(None, top), outer_depth=1)
        if problem is not None:
            path, message, hint = problem
            at = f" (at context{path})" if path != top else ""
            raise TypeError(f"context key {key!r}{where}{at}: {message}; {hint}.")


def _problem(value: object, *, path: _Path, outer_depth: int) -> tuple[str, str, str] | None:
    """``(path, message, hint)`` of the first part of ``value`` (depth first, in order)
    that the relay cannot carry unchanged, or ``None``. ``outer_depth``: levels of dicts
    and lists that contain ``value``."""
    # (value, where it is, how many dicts and lists contain it)
    stack: list[tuple[object, _Path, int]] = [(value, path, outer_depth)]
    while stack:
        item, at, depth = stack.pop()
        if item is None or isinstance(item, (str, bool)):
            continue
        if isinstance(item, _BadKey):
            key = item.key
            return (
                at.render(),
                f"dict key {key!r} of type {type(key).__name__} is not a str "
                "(JSON object keys are strings)",
                JSON_HINT,
            )
        if isinstance(item, int):
            if -_INT_LIMIT < item < _INT_LIMIT:
                continue
            return (
                at.render(),
                f"integer with more than {MAX_INT_DIGITS} digits",
                INT_HINT,
            )
        if isinstance(item, float):
            if math.isfinite(item):
                continue
            return (
                at.render(),
                f"value {item!r} is not a finite number (JSON has no NaN or Infinity)",
                JSON_HINT,
            )
        if isinstance(item, (list, tuple, dict)):
            if depth + 1 > MAX_CONTEXT_DEPTH:
                # Stop here: nothing below is looked at, however deep (or self-containing).
                return (
                    at.render(),
                    f"nested deeper than MAX_CONTEXT_DEPTH = {MAX_CONTEXT_DEPTH} levels of "
                    "dicts and lists (the context itself is the first)",
                    DEPTH_HINT,
                )
            children: list[tuple[object, _Path, int]] = []
            if isinstance(item, dict):
                for child_key, child in item.items():
                    if not isinstance(child_key, str):
                        # Reported in its turn, after the values before it.
                        children.append((_BadKey(child_key), at, depth))
                        break
                    children.append((child, _Path(at, f"[{child_key!r}]"), depth + 1))
            else:
                children = [
                    (child, _Path(at, f"[{index}]"), depth + 1) for index, child in enumerate(item)
                ]
            # Reversed onto the stack: the first child is looked at first, so the error is
            # the one a recursive walk would report.
            stack.extend(reversed(children))
            continue
        return (
            at.render(),
            f"value of type {type(item).__name__} is not JSON-serializable",
            JSON_HINT,
        )
    return None


class ContextTooLarge(ValueError):
    """A Temporal-routed firing's context over ``TRIGGER_RELAY_MAX_CONTEXT_BYTES``."""


def check_context_size(context: Mapping[str, Any], *, limit: int, where: str = "") -> None:
    """Raise :class:`ContextTooLarge`, naming the size and the setting, if ``context`` (of
    JSON values: :func:`check_context` first) takes more than ``limit`` bytes as JSON text."""
    size = context_bytes(context)
    if size > limit:
        raise ContextTooLarge(
            f"context{where} is {size} bytes as JSON, over TRIGGER_RELAY_MAX_CONTEXT_BYTES "
            f"= {limit}; {SIZE_HINT}."
        )


# What a float with an exponent looks like in json.dumps's output (`1e+300`, `1.5e-05`);
# found in strings too, which the exact pass below tells apart.
_EXPONENT = re.compile(r"\d[eE][-+]\d")


def context_bytes(context: Mapping[str, Any]) -> int:
    """Bytes of ``context`` as the text PostgreSQL prints for it once stored as ``jsonb``
    (UTF-8, ``", "`` and ``": "`` between items, as ``json.dumps`` writes them): what the
    daemon reads from the row and carries in the workflow input. One difference is made up
    for: a float that Python writes with an exponent (``1e+300``, ``1e-05``) is a
    ``numeric`` in ``jsonb``, printed with every digit (301 bytes, 7 bytes). Only a text
    that may hold one is parsed again to find them."""
    text = json.dumps(context, ensure_ascii=False)
    size = len(text.encode("utf-8", "surrogatepass"))
    if _EXPONENT.search(text) is None:
        return size
    extra = 0

    def measure(literal: str) -> float:
        nonlocal extra
        extra += _numeric_text_bytes(literal) - len(literal)
        return 0.0

    json.loads(text, parse_float=measure)
    return size + extra


def _numeric_text_bytes(literal: str) -> int:
    """Length of PostgreSQL's ``numeric`` output for the JSON number ``literal``: no
    exponent, and as many decimals as the literal's scale (its decimals less its
    exponent)."""
    mantissa, _, exponent_text = literal.lower().partition("e")
    if not exponent_text:
        return len(literal)
    sign = "-" if mantissa.startswith("-") else ""
    whole, _, fraction = mantissa.lstrip("-").partition(".")
    exponent = int(exponent_text)
    scale = max(0, len(fraction) - exponent)
    if scale == 0:
        return len(sign) + len(whole) + exponent
    return len(sign) + max(1, len(whole) + exponent) + 1 + scale
