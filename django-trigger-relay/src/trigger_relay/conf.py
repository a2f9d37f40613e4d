"""Settings of the add-on, read at call time so that ``override_settings`` and changes
between firings take effect at once (guarantees §2.3: routes change at any time)."""

from __future__ import annotations

import base64
import binascii
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Final
from typing import Literal

from django.conf import settings

Route = Literal["temporal", "celery"]

TEMPORAL: Final = "temporal"
CELERY: Final = "celery"
ROUTE_VALUES: Final[tuple[Route, ...]] = (TEMPORAL, CELERY)

#: Installing the add-on changes nothing until routes are set.
DEFAULT_ROUTE: Final[Route] = CELERY

#: Whether an exception raised by the site's code in ``perform_firing`` is retried.
RETRY_APPLICATION_ERRORS: Final = "TRIGGER_RELAY_RETRY_APPLICATION_ERRORS"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def routes() -> object:
    """``TRIGGER_RELAY_ROUTES``: ``{trigger name (str) or trigger pk (int): route}``.

    Returned unvalidated: the system checks report a malformed value and
    :func:`trigger_relay.routing.route_for` refuses to guess.
    """
    value: object = getattr(settings, "TRIGGER_RELAY_ROUTES", {})
    return value


def default_route() -> object:
    """``TRIGGER_RELAY_DEFAULT_ROUTE``: route of triggers not in ``TRIGGER_RELAY_ROUTES``."""
    value: object = getattr(settings, "TRIGGER_RELAY_DEFAULT_ROUTE", DEFAULT_ROUTE)
    return value


def is_route(value: object) -> bool:
    return isinstance(value, str) and value in ROUTE_VALUES


def is_route_key(key: object) -> bool:
    """A trigger name or a trigger pk (``bool`` is an ``int`` but no pk)."""
    return isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool))


def routes_problems(value: object) -> list[str]:
    """Everything wrong with a ``TRIGGER_RELAY_ROUTES`` value, as sentences."""
    if not isinstance(value, Mapping):
        return [f"TRIGGER_RELAY_ROUTES must be a dict, not {type(value).__name__}."]
    problems = []
    for key, route in value.items():
        if not is_route_key(key):
            problems.append(
                f"TRIGGER_RELAY_ROUTES key {key!r} is a {type(key).__name__}; use a trigger "
                "name (str) or a trigger pk (int)."
            )
        if not is_route(route):
            problems.append(
                f"TRIGGER_RELAY_ROUTES[{key!r}] is {route!r}; use one of "
                f"{', '.join(map(repr, ROUTE_VALUES))}."
            )
    return problems


def retry_application_errors() -> bool:
    """``TRIGGER_RELAY_RETRY_APPLICATION_ERRORS``: retry ``perform_firing`` when the site's
    code (an action, a condition, ``get_user_context``) raises. Default False, as dj-triggers
    on Celery, which never retries: a retry repeats what the action did outside the database.

    The environment wins over the Django setting (one environment configures the daemon and
    the worker). Raises ``ValueError`` naming the variable for a value that is not a boolean.
    """
    raw = os.environ.get(RETRY_APPLICATION_ERRORS)
    if raw is not None:
        word = raw.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(
            f"{RETRY_APPLICATION_ERRORS}={raw!r} in the environment is not a boolean; "
            "use true or false."
        )
    value: object = getattr(settings, RETRY_APPLICATION_ERRORS, False)
    if not isinstance(value, bool):
        raise ValueError(f"settings.{RETRY_APPLICATION_ERRORS} is {value!r}; use True or False.")
    return value


#: What a Temporal-routed firing outside ``transaction.atomic()`` does (guarantees §2.2).
FIRE_OUTSIDE_ATOMIC: Final = "TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC"
OutsideAtomic = Literal["warn", "error", "ignore"]
OUTSIDE_ATOMIC_WARN: Final = "warn"
OUTSIDE_ATOMIC_ERROR: Final = "error"
OUTSIDE_ATOMIC_IGNORE: Final = "ignore"
OUTSIDE_ATOMIC_VALUES: Final[tuple[OutsideAtomic, ...]] = (
    OUTSIDE_ATOMIC_WARN,
    OUTSIDE_ATOMIC_ERROR,
    OUTSIDE_ATOMIC_IGNORE,
)


def fire_outside_atomic() -> OutsideAtomic:
    """``TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC``: what to do when a Temporal-routed firing's
    outbox row would be written outside the site's transaction (``Event.fire()`` called in
    ``transaction.on_commit``, or in autocommit): ``"warn"`` (default; a warning on the
    ``trigger_relay`` logger, once per call site), ``"error"`` (raise, write nothing) or
    ``"ignore"``.

    The environment wins over the Django setting, as for the other ``TRIGGER_RELAY_*``
    settings; an empty variable counts as unset. Raises ``ValueError`` naming the setting
    for any other value.
    """
    raw = os.environ.get(FIRE_OUTSIDE_ATOMIC)
    if raw is not None and raw.strip():
        word = raw.strip().lower()
        for allowed in OUTSIDE_ATOMIC_VALUES:
            if word == allowed:
                return allowed
        raise ValueError(
            f"{FIRE_OUTSIDE_ATOMIC}={raw!r} in the environment; use one of "
            f"{', '.join(OUTSIDE_ATOMIC_VALUES)}."
        )
    value: object = getattr(settings, FIRE_OUTSIDE_ATOMIC, OUTSIDE_ATOMIC_WARN)
    for allowed in OUTSIDE_ATOMIC_VALUES:
        if isinstance(value, str) and value == allowed:
            return allowed
    raise ValueError(
        f"settings.{FIRE_OUTSIDE_ATOMIC} is {value!r}; use one of "
        f"{', '.join(map(repr, OUTSIDE_ATOMIC_VALUES))}."
    )


#: How long the firing's transaction waits for a lock (``Activity.lock``'s row, a unique
#: index entry) before giving up (guarantees §3.6).
LOCK_TIMEOUT: Final = "TRIGGER_RELAY_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_SECONDS: Final = 30.0


def lock_timeout_seconds() -> float:
    """``TRIGGER_RELAY_LOCK_TIMEOUT``: seconds the activity's transaction waits for a lock
    (PostgreSQL's ``lock_timeout``, set for that transaction alone). A worker cut off from
    the database while holding ``Activity.lock`` keeps its row locked until PostgreSQL
    notices; without a bound every firing of that user and trigger would wait with it and
    pin the worker's threads. A wait that times out is an infrastructure error: the attempt
    rolls back and Temporal retries it. ``0`` waits forever (PostgreSQL's default).

    The environment wins over the Django setting. Raises ``ValueError`` naming the setting
    for a value that is not a non-negative number of seconds.
    """
    return _seconds(LOCK_TIMEOUT, DEFAULT_LOCK_TIMEOUT_SECONDS, zero="no bound")


#: The site runs without Celery (guarantees §2.5): a trigger routed to Celery is a warning.
CELERY_FREE: Final = "TRIGGER_RELAY_CELERY_FREE"


def celery_free() -> bool:
    """``TRIGGER_RELAY_CELERY_FREE``: the site has retired Celery; every trigger must route to
    Temporal (system check trigger_relay.W002). Default False. The environment wins over the
    Django setting. Raises ``ValueError`` naming the setting for a value that is not a
    boolean."""
    return _flag(CELERY_FREE)


#: A ``TRIGGER_RELAY_ROUTES`` key that matches no trigger is an error, not a warning.
STRICT_CHECKS: Final = "TRIGGER_RELAY_STRICT_CHECKS"


def strict_checks() -> bool:
    """``TRIGGER_RELAY_STRICT_CHECKS``: report a ``TRIGGER_RELAY_ROUTES`` key that matches no
    trigger as the error trigger_relay.E011 instead of the warning trigger_relay.W004.
    Default False: the key goes stale when an admin deletes or renames a trigger, and
    ``migrate`` runs this database check, so an error would let what is done to data stop
    the next deploy. A site turns it on where it wants a typo to fail (CI's ``manage.py
    check --database default``). The environment wins over the Django setting, so CI can
    set it alone. Raises ``ValueError`` naming the setting for a value that is not a
    boolean."""
    return _flag(STRICT_CHECKS)


def _flag(name: str) -> bool:
    """A boolean from the environment (which wins; an empty variable counts as unset) or the
    Django setting ``name``, else False. Raises ``ValueError`` naming the setting and where
    the value came from, so that a system check can say which one to fix."""
    raw = os.environ.get(name)
    if raw is not None and raw.strip():
        word = raw.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(f"{name}={raw!r} in the environment is not a boolean; use true or false.")
    value: object = getattr(settings, name, False)
    if not isinstance(value, bool):
        raise ValueError(f"settings.{name} is {value!r}; use True or False.")
    return value


#: How long the activity worker keeps a database connection between activities
#: (docs/performance.md).
WORKER_CONN_MAX_AGE: Final = "TRIGGER_RELAY_WORKER_CONN_MAX_AGE"
DEFAULT_WORKER_CONN_MAX_AGE_SECONDS: Final = 60.0


def worker_conn_max_age() -> float:
    """``TRIGGER_RELAY_WORKER_CONN_MAX_AGE``: seconds a thread of ``trigger_relay_worker``
    keeps its database connection for the next activity (Django's ``CONN_MAX_AGE``, with
    ``CONN_HEALTH_CHECKS`` on), whatever ``DATABASES`` says for the site's web requests.
    Default 60. ``0`` closes it after every activity, as a site with ``CONN_MAX_AGE = 0``
    does after every request.

    The site's own ``CONN_MAX_AGE`` is usually tuned for web processes (0 behind PgBouncer,
    or to keep few connections per web worker); the worker runs a firing per activity on a
    small, fixed thread pool, where a new connection per activity (a fork of a PostgreSQL
    backend, authentication, TLS) costs more than the firing's own statements.

    The environment wins over the Django setting; an empty variable, or ``None`` in Django
    settings, counts as unset (as for the worker's other settings). Raises ``ValueError``
    naming the setting for a value that is not a non-negative number of seconds.
    """
    return _seconds(
        WORKER_CONN_MAX_AGE,
        DEFAULT_WORKER_CONN_MAX_AGE_SECONDS,
        zero="a new connection for every activity",
    )


def _seconds(name: str, default: float, *, zero: str) -> float:
    """A non-negative, finite number of seconds from the environment (which wins; empty
    counts as unset) or the Django setting ``name`` (``None`` counts as unset), else
    ``default``. Raises ``ValueError`` naming the setting and where the value came from;
    ``zero`` says what 0 means, in the message."""
    hint = f"use a number of seconds (0: {zero})."
    raw = os.environ.get(name)
    if raw is not None and raw.strip():
        try:
            seconds = float(raw.strip())
        except ValueError:
            seconds = -1.0
        if not seconds >= 0 or seconds == float("inf"):
            raise ValueError(f"{name}={raw!r} in the environment; {hint}")
        return seconds
    value: object = getattr(settings, name, None)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not value >= 0
        or value == float("inf")
    ):
        raise ValueError(f"settings.{name} is {value!r}; {hint}")
    return float(value)


#: The Temporal UI's address (``http://127.0.0.1:8233``, ``https://cloud.temporal.io``):
#: when set, the outbox admin and ``trigger_relay_status`` link rows and triggers to it.
TEMPORAL_UI_URL: Final = "TRIGGER_RELAY_TEMPORAL_UI_URL"
#: The namespace the daemon and the worker use (the environment wins, as for the worker).
TEMPORAL_NAMESPACE: Final = "TRIGGER_RELAY_TEMPORAL_NAMESPACE"


def temporal_ui_url() -> str | None:
    """``TRIGGER_RELAY_TEMPORAL_UI_URL`` without its trailing slash; None when unset, blank or
    malformed (no link is then shown, nothing fails: the system check ``trigger_relay.E013``
    names a malformed value)."""
    value: object = getattr(settings, TEMPORAL_UI_URL, None)
    if not isinstance(value, str) or not value.strip() or temporal_ui_url_problem(value):
        return None
    return value.strip().rstrip("/")


def temporal_ui_url_problem(value: object) -> str | None:
    """Why ``value`` cannot be the Temporal UI's address, or None if it can (unset and blank
    included). A value without ``http://`` or ``https://`` and a host would make every link a
    path relative to the admin page it is on."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        return f"settings.{TEMPORAL_UI_URL} is {value!r}, not a string"
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return (
            f"settings.{TEMPORAL_UI_URL} is {value!r}, not an http:// or https:// address "
            "with a host"
        )
    return None


def temporal_namespace() -> str:
    """``TRIGGER_RELAY_TEMPORAL_NAMESPACE`` from the environment, else Django settings, else
    ``default``: the namespace ``trigger_relay_worker`` uses."""
    for value in (
        os.environ.get(TEMPORAL_NAMESPACE),
        getattr(settings, TEMPORAL_NAMESPACE, None),
    ):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return "default"


def workflow_url(workflow_id: str | None) -> str | None:
    """The Temporal UI's page of a workflow (its latest run), or None without a UI URL or a
    workflow id: ``<base>/namespaces/<namespace>/workflows/<workflow id>``."""
    base = temporal_ui_url()
    if base is None or not workflow_id:
        return None
    namespace = urllib.parse.quote(temporal_namespace(), safe="")
    return f"{base}/namespaces/{namespace}/workflows/{urllib.parse.quote(workflow_id, safe='')}"


def workflows_query_url(query: str) -> str | None:
    """The Temporal UI's workflow list filtered by ``query`` (a List Filter such as
    ``TriggerId = 7``), or None without a UI URL."""
    base = temporal_ui_url()
    if base is None:
        return None
    namespace = urllib.parse.quote(temporal_namespace(), safe="")
    return f"{base}/namespaces/{namespace}/workflows?query={urllib.parse.quote(query, safe='')}"


#: The site identity (docs/contract.md, "Site identity"): the environment wins, as for the
#: daemon, which reads the same variable.
SITE: Final = "TRIGGER_RELAY_SITE"


def site_setting() -> str | None:
    """``TRIGGER_RELAY_SITE`` from the environment, else Django settings; None when unset or
    blank (the database's ``trigger_relay_site`` row is the identity then)."""
    for value in (os.environ.get(SITE), getattr(settings, SITE, None)):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


#: Payload encryption (trigger_relay/codec.py; docs/operations.md, "Encrypting payloads"):
#: the daemon's variables, so that one environment configures both.
KEYS_FILE: Final = "TRIGGER_RELAY_CODEC_KEYS_FILE"
CURRENT_KEY_ID: Final = "TRIGGER_RELAY_CODEC_CURRENT_KEY_ID"
KEY_BYTES: Final = 32

#: A key id: public (it is in every payload), so short and plain.
_KEY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_GENERATE: Final = "generate one with `openssl rand -base64 32`"


class KeyFileError(ValueError):
    """The key settings are unusable; the message names the setting, the file and the line,
    never a key."""


def valid_key_id(key_id: str) -> bool:
    return _KEY_ID_PATTERN.fullmatch(key_id) is not None


def parse_keys(text: str) -> dict[str, bytes]:
    """The keys of a key file's text, in file order. Raises ``ValueError`` as ``line N:
    problem``. A line that does not parse is not quoted: it may be a key pasted without its id
    (a key's base64 padding is an ``=`` too), so an id is named only once its key decoded."""
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, _, encoded = line.partition("=")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not encoded.strip("="):
            raise ValueError(f"line {number}: not `<key id>=<base64 of 32 bytes>`")
        if not valid_key_id(key_id):
            raise ValueError(
                f"line {number}: the key id is not 1 to 64 letters, digits, '.', '_' or '-' (it "
                "is stored, unencrypted, in every payload)"
            )
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"line {number}: the key is not base64 ({_GENERATE})") from None
        if key_id in keys:
            raise ValueError(f"line {number}: key id {key_id!r} appears twice")
        if len(key) != KEY_BYTES:
            raise ValueError(
                f"line {number}: the key of {key_id!r} is {len(key)} bytes; AES-256-GCM takes "
                f"32 ({_GENERATE})"
            )
        keys[key_id] = key
    return keys


@dataclass(frozen=True)
class KeyRing:
    """The configured keys (never in a repr) and the id of the one that encrypts."""

    keys: Mapping[str, bytes] = field(repr=False)
    current: str

    @property
    def key_ids(self) -> list[str]:
        return list(self.keys)


def load_keys(keys_file: str | os.PathLike[str] | None, current: str | None) -> KeyRing | None:
    """The keys these settings describe: None when neither is set. Raises
    :class:`KeyFileError` for a half-configured pair or a malformed file, so that a worker told
    to encrypt never starts in the clear."""
    current = current.strip() if current else None
    if keys_file is None and not current:
        return None
    if keys_file is None:
        raise KeyFileError(
            f"{CURRENT_KEY_ID} is set but {KEYS_FILE} is not: there is no key to encrypt with."
        )
    if not current:
        raise KeyFileError(
            f"{KEYS_FILE} is set but {CURRENT_KEY_ID} is not: name the key that encrypts (the "
            "others only decrypt)."
        )
    path = Path(keys_file)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise KeyFileError(f"cannot read {KEYS_FILE} {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{KEYS_FILE} {path}, line 1: the file is not UTF-8 text.") from None
    try:
        keys = parse_keys(text)
    except ValueError as exc:
        raise KeyFileError(f"{KEYS_FILE} {path}, {exc}.") from None
    if not keys:
        raise KeyFileError(
            f"{KEYS_FILE} {path} holds no key (lines `<key id>=<base64 of 32 bytes>`)."
        )
    if current not in keys:
        raise KeyFileError(
            f"{CURRENT_KEY_ID}={current!r} names no key of {KEYS_FILE} {path} (its key ids: "
            f"{', '.join(keys)})."
        )
    return KeyRing(keys=keys, current=current)


def codec_keys() -> KeyRing | None:
    """``TRIGGER_RELAY_CODEC_KEYS_FILE`` (a ``str`` or a ``pathlib.Path``) and
    ``TRIGGER_RELAY_CODEC_CURRENT_KEY_ID``, each from the environment (which wins; empty
    counts as unset) or Django settings: the keys, or None when neither is set. Raises
    :class:`KeyFileError` naming the setting, the file and the line, never a key."""
    keys_file: object = os.environ.get(KEYS_FILE, "").strip() or getattr(settings, KEYS_FILE, None)
    current: object = os.environ.get(CURRENT_KEY_ID, "").strip() or getattr(
        settings, CURRENT_KEY_ID, None
    )
    if isinstance(keys_file, str) and not keys_file.strip():
        keys_file = None
    if keys_file is not None and not isinstance(keys_file, str | os.PathLike):
        raise KeyFileError(f"settings.{KEYS_FILE} is {keys_file!r}; use a str or a pathlib.Path.")
    if current is not None and not isinstance(current, str):
        raise KeyFileError(f"settings.{CURRENT_KEY_ID} is {current!r}; use a str.")
    return load_keys(keys_file, current)


#: The largest context ``Event.fire()`` accepts for a Temporal-routed firing (README,
#: "Context limits").
MAX_CONTEXT_BYTES: Final = "TRIGGER_RELAY_MAX_CONTEXT_BYTES"
#: Half the daemon's default input limit, less room for the input's other fields: the
#: workflow input carries the context's text as one JSON string, where every ``"`` and
#: ``\`` is escaped once more, so a context of this size fits even if made of them alone.
DEFAULT_MAX_CONTEXT_BYTES: Final = 1_000_000
#: The daemon's own limit on a workflow input (docs/contract.md), read here only to check
#: that fire() does not accept what the relay would fail.
DAEMON_MAX_INPUT_BYTES: Final = "TRIGGER_RELAY_MAX_INPUT_BYTES"
DEFAULT_DAEMON_MAX_INPUT_BYTES: Final = 2 * 1024 * 1024


def max_context_bytes() -> int:
    """``TRIGGER_RELAY_MAX_CONTEXT_BYTES``: the most bytes a Temporal-routed firing's
    context may take as JSON text (UTF-8, as PostgreSQL prints the stored ``jsonb``);
    ``fire()`` refuses a larger one. Default 1,000,000.

    The environment wins over the Django setting; an empty variable, or ``None`` in Django
    settings, counts as unset. Raises ``ValueError`` naming the setting for a value that is
    not a positive whole number of bytes (system check trigger_relay.E016)."""
    return _positive_bytes(MAX_CONTEXT_BYTES, DEFAULT_MAX_CONTEXT_BYTES)


def daemon_max_input_bytes() -> int:
    """The daemon's ``TRIGGER_RELAY_MAX_INPUT_BYTES`` as far as this process can know it:
    the environment (which configures the daemon), else the Django setting of that name,
    else the daemon's default, 2 MiB. Raises ``ValueError`` naming the setting for a value
    the daemon would refuse to start with."""
    return _positive_bytes(DAEMON_MAX_INPUT_BYTES, DEFAULT_DAEMON_MAX_INPUT_BYTES)


def _positive_bytes(name: str, default: int) -> int:
    """A positive whole number of bytes from the environment (which wins; empty counts as
    unset) or the Django setting ``name`` (``None`` counts as unset), else ``default``."""
    hint = "use a positive whole number of bytes."
    raw = os.environ.get(name)
    if raw is not None and raw.strip():
        word = raw.strip()
        if not (word.isascii() and word.isdigit()) or int(word) <= 0:
            raise ValueError(f"{name}={raw!r} in the environment; {hint}")
        return int(word)
    value: object = getattr(settings, name, None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"settings.{name} is {value!r}; {hint}")
    return value
