"""Every setting of the add-on, and the one way they are read (:class:`Layers`): the
environment over Django settings, empty counting as unset, :class:`ConfigError` naming the
setting and where it was set.

The web side reads each at call time, so that ``override_settings`` and changes between
firings take effect at once (guarantees §2.3: routes change at any time); the worker reads its
own once at start (:class:`trigger_relay.worker.settings.WorkerSettings`)."""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Final
from typing import Literal
from typing import TypeVar
from typing import cast

from django.conf import settings

Route = Literal["temporal", "celery"]
_C = TypeVar("_C", bound=str)

TEMPORAL: Final = "temporal"
CELERY: Final = "celery"
ROUTE_VALUES: Final[tuple[Route, ...]] = (TEMPORAL, CELERY)

#: Installing the add-on changes nothing until routes are set.
DEFAULT_ROUTE: Final[Route] = CELERY

#: Whether an exception raised by the site's code in ``perform_firing`` is retried.
RETRY_APPLICATION_ERRORS: Final = "TRIGGER_RELAY_RETRY_APPLICATION_ERRORS"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


# -- reading a setting -------------------------------------------------------------------

#: Where a value was set, as messages name it.
ENVIRONMENT: Final = "the environment"
DJANGO_SETTINGS: Final = "Django settings"
DEFAULT: Final = "the default"


class ConfigError(ValueError):
    """A setting of the add-on is unusable; the message names the setting and where it was
    set. The system checks report it on the web side (``checks.py``); the worker stops at
    once with it, since retrying cannot help."""


@dataclass(frozen=True)
class Found:
    """A setting's value and where it was set."""

    name: str
    value: object
    source: str
    secret: bool = False

    def where(self, *, with_type: bool = False) -> str:
        """How errors name the value: as the operator wrote it, and where."""
        shown = "***" if self.secret else repr(self.value)
        if self.source == ENVIRONMENT:
            return f"{self.name}={shown} in the environment"
        kind = f" (type {type(self.value).__name__})" if with_type else ""
        return f"settings.{self.name} is {shown}{kind}"


class Layers:
    """Where every ``TRIGGER_RELAY_*`` setting is read, by the web processes and the worker
    alike: the environment over Django settings, the first that has a value gives it (one
    environment configures the daemon, which reads only the environment, and the worker).

    The one rule for empty values: an empty or blank variable, or ``None`` or a blank string
    in Django settings, counts as unset (a site's ``settings.py`` often passes on
    ``os.environ.get(name, "")``). Unusable values raise :class:`ConfigError`.

    ``django_settings=None`` reads the environment alone (the worker's ``from_env``)."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        django_settings: object | None = settings,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self._django_settings = django_settings
        #: Where each setting read so far was set (name to ENVIRONMENT or DJANGO_SETTINGS).
        self.sources: dict[str, str] = {}

    def get(self, name: str, *, secret: bool = False) -> Found | None:
        raw = self._environ.get(name)
        if raw is not None and raw.strip():
            found = Found(name, raw, ENVIRONMENT, secret)
        else:
            value: object = getattr(self._django_settings, name, None)
            if value is None or (isinstance(value, str) and not value.strip()):
                return None
            found = Found(name, value, DJANGO_SETTINGS, secret)
        self.sources[name] = found.source
        return found

    def text(self, name: str, *, secret: bool = False) -> str | None:
        found = self.get(name, secret=secret)
        if found is None:
            return None
        if not isinstance(found.value, str):
            raise ConfigError(f"{found.where(with_type=True)}; use a str.")
        return found.value

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean: ``true``/``false`` (``1``, ``yes``, ``on``, ...) in the environment,
        ``True``/``False`` in Django settings."""
        found = self.get(name)
        if found is None:
            return default
        if found.source == ENVIRONMENT:
            word = str(found.value).strip().lower()
            if word in _TRUE or word in _FALSE:
                return word in _TRUE
            raise ConfigError(f"{found.where()} is not a boolean; use true or false.")
        if not isinstance(found.value, bool):
            raise ConfigError(f"{found.where()}; use True or False.")
        return found.value

    def choice(self, name: str, allowed: tuple[_C, ...], default: _C) -> _C:
        """One of ``allowed`` (case-insensitive in the environment)."""
        found = self.get(name)
        if found is None:
            return default
        if found.source == ENVIRONMENT:
            word = str(found.value).strip().lower()
            for value in allowed:
                if word == value:
                    return value
            raise ConfigError(f"{found.where()}; use one of {', '.join(allowed)}.")
        for value in allowed:
            if isinstance(found.value, str) and found.value == value:
                return value
        raise ConfigError(f"{found.where()}; use one of {', '.join(map(repr, allowed))}.")

    def seconds(self, name: str, default: float, *, zero: str | None = None) -> float:
        """A finite number of seconds: above 0, or, when ``zero`` says what 0 means (in the
        message), 0 or more."""
        found = self.get(name)
        if found is None:
            return default
        if zero is None:
            hint, floor_ok = "use a number of seconds above 0", False
        else:
            hint, floor_ok = f"use a number of seconds (0: {zero})", True
        number: float
        if found.source == ENVIRONMENT:
            try:
                number = float(str(found.value).strip())
            except ValueError:
                if floor_ok:
                    raise ConfigError(f"{found.where()}; {hint}.") from None
                raise ConfigError(f"{found.where()} is not a number; {hint}.") from None
        elif isinstance(found.value, int | float) and not isinstance(found.value, bool):
            number = float(found.value)
        elif floor_ok:
            raise ConfigError(f"{found.where()}; {hint}.")
        else:
            raise ConfigError(
                f"{found.where(with_type=True)}; use an int or a float, seconds above 0."
            )
        if not math.isfinite(number) or number < 0 or (number == 0 and not floor_ok):
            raise ConfigError(f"{found.where()}; {hint}.")
        return number

    def count(self, name: str, default: int) -> int:
        """A whole number of at least 1."""
        found = self.get(name)
        if found is None:
            return default
        number: int
        if found.source == ENVIRONMENT:
            try:
                number = int(str(found.value))
            except ValueError:
                raise ConfigError(
                    f"{found.where()} is not an integer; use a whole number of at least 1."
                ) from None
        elif isinstance(found.value, int) and not isinstance(found.value, bool):
            number = found.value
        else:
            raise ConfigError(f"{found.where(with_type=True)}; use an int of at least 1.")
        if number < 1:
            raise ConfigError(f"{found.where()}; use a whole number of at least 1.")
        return number

    def positive_bytes(self, name: str, default: int) -> int:
        """A positive whole number of bytes."""
        found = self.get(name)
        if found is None:
            return default
        hint = "use a positive whole number of bytes."
        if found.source == ENVIRONMENT:
            word = str(found.value).strip()
            if not (word.isascii() and word.isdigit()) or int(word) <= 0:
                raise ConfigError(f"{found.where()}; {hint}")
            return int(word)
        value = found.value
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{found.where()}; {hint}")
        return value

    def codec_keys(self) -> KeyRing | None:
        """The payload encryption keys (worker/codec.py), the file read now, so that a missing
        or malformed key file is a clear error at start, not a firing that cannot decrypt."""
        found = self.get(KEYS_FILE)
        path: object = None if found is None else found.value
        if found is not None and not isinstance(path, str | os.PathLike):
            raise ConfigError(f"{found.where(with_type=True)}; use a str or a pathlib.Path.")
        current = self.text(CURRENT_KEY_ID)
        return load_keys(cast("str | os.PathLike[str] | None", path), current)


def routes() -> object:
    """``TRIGGER_RELAY_ROUTES``: ``{trigger name (str) or trigger pk (int): route}``.

    Returned unvalidated: the system checks report a malformed value and
    :func:`trigger_relay.firing.routes.route_for` refuses to guess.
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

    Read by :class:`Layers` (the environment wins; empty counts as unset). Raises
    :class:`ConfigError` naming the variable for a value that is not a boolean.
    """
    return Layers().flag(RETRY_APPLICATION_ERRORS)


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

    Read by :class:`Layers`. Raises :class:`ConfigError` naming the setting for any other
    value.
    """
    return Layers().choice(FIRE_OUTSIDE_ATOMIC, OUTSIDE_ATOMIC_VALUES, OUTSIDE_ATOMIC_WARN)


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

    Read by :class:`Layers`. Raises :class:`ConfigError` naming the setting for a value that
    is not a non-negative number of seconds.
    """
    return Layers().seconds(LOCK_TIMEOUT, DEFAULT_LOCK_TIMEOUT_SECONDS, zero="no bound")


#: The site runs without Celery (guarantees §2.5): a trigger routed to Celery is a warning.
CELERY_FREE: Final = "TRIGGER_RELAY_CELERY_FREE"


def celery_free() -> bool:
    """``TRIGGER_RELAY_CELERY_FREE``: the site has retired Celery; every trigger must route to
    Temporal (system check trigger_relay.W002). Default False. Read by :class:`Layers`;
    raises :class:`ConfigError` naming the setting for a value that is not a boolean."""
    return Layers().flag(CELERY_FREE)


#: A ``TRIGGER_RELAY_ROUTES`` key that matches no trigger is an error, not a warning.
STRICT_CHECKS: Final = "TRIGGER_RELAY_STRICT_CHECKS"


def strict_checks() -> bool:
    """``TRIGGER_RELAY_STRICT_CHECKS``: report a ``TRIGGER_RELAY_ROUTES`` key that matches no
    trigger as the error trigger_relay.E011 instead of the warning trigger_relay.W004.
    Default False: the key goes stale when an admin deletes or renames a trigger, and
    ``migrate`` runs this database check, so an error would let what is done to data stop
    the next deploy. A site turns it on where it wants a typo to fail (CI's ``manage.py
    check --database default``). The environment wins over the Django setting, so CI can
    set it alone. Raises :class:`ConfigError` naming the setting for a value that is not a
    boolean."""
    return Layers().flag(STRICT_CHECKS)


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

    Read by :class:`Layers`. Raises :class:`ConfigError` naming the setting for a value that
    is not a non-negative number of seconds.
    """
    return Layers().seconds(
        WORKER_CONN_MAX_AGE,
        DEFAULT_WORKER_CONN_MAX_AGE_SECONDS,
        zero="a new connection for every activity",
    )


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
    """``TRIGGER_RELAY_TEMPORAL_NAMESPACE`` (read by :class:`Layers`), else ``default``: the
    namespace ``trigger_relay_worker`` uses. Only links to the Temporal UI are made of it on
    the web side, so a value that is not a string (which the worker refuses) is ignored here
    rather than failing an admin page."""
    found = Layers().get(TEMPORAL_NAMESPACE)
    if found is not None and isinstance(found.value, str):
        return found.value.strip()
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
    """``TRIGGER_RELAY_SITE`` (read by :class:`Layers`); None when unset or blank (the
    database's ``trigger_relay_site`` row is the identity then)."""
    found = Layers().get(SITE)
    if found is not None and isinstance(found.value, str):
        return found.value.strip()
    return None


#: Payload encryption (trigger_relay/worker/codec.py; docs/operations.md, "Encrypting payloads"):
#: the daemon's variables, so that one environment configures both.
KEYS_FILE: Final = "TRIGGER_RELAY_CODEC_KEYS_FILE"
CURRENT_KEY_ID: Final = "TRIGGER_RELAY_CODEC_CURRENT_KEY_ID"
KEY_BYTES: Final = 32

#: A key id: public (it is in every payload), so short and plain.
_KEY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_GENERATE: Final = "generate one with `openssl rand -base64 32`"


class KeyFileError(ConfigError):
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
    ``TRIGGER_RELAY_CODEC_CURRENT_KEY_ID``, read by :class:`Layers`: the keys, or None when
    neither is set. Raises :class:`ConfigError` (a :class:`KeyFileError` for the file) naming
    the setting, the file and the line, never a key."""
    return Layers().codec_keys()


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

    Read by :class:`Layers`. Raises :class:`ConfigError` naming the setting for a value that
    is not a positive whole number of bytes (system check trigger_relay.E016)."""
    return Layers().positive_bytes(MAX_CONTEXT_BYTES, DEFAULT_MAX_CONTEXT_BYTES)


def daemon_max_input_bytes() -> int:
    """The daemon's ``TRIGGER_RELAY_MAX_INPUT_BYTES`` as far as this process can know it:
    the environment (which configures the daemon), else the Django setting of that name,
    else the daemon's default, 2 MiB. Raises :class:`ConfigError` naming the setting for a
    value the daemon would refuse to start with."""
    return Layers().positive_bytes(DAEMON_MAX_INPUT_BYTES, DEFAULT_DAEMON_MAX_INPUT_BYTES)
