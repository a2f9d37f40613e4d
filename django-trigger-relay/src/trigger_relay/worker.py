"""The Python activity worker (guarantees §2.4, §5.3, §5.4): serves ``perform_firing`` on the
Django task queue, on a thread pool, until SIGTERM or SIGINT.

Connection settings use the daemon's variable names, so one environment serves both. The
command also reads them from Django settings; the environment wins (as conf.py's settings).
Temporal is waited for at start, as the daemon waits: an address where nothing answers yet
or a namespace not created yet is retried with backoff, one log line per attempt.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import math
import os
import random
import re
import signal
import threading
import time
import weakref
from collections.abc import Awaitable
from collections.abc import Iterator
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from typing import Final
from typing import TypeVar

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig
from temporalio.runtime import Runtime
from temporalio.runtime import TelemetryConfig
from temporalio.service import RPCError
from temporalio.service import RPCStatusCode
from temporalio.service import TLSConfig
from temporalio.worker import Worker

from trigger_relay import codec
from trigger_relay import conf
from trigger_relay import metrics
from trigger_relay.activities import perform_firing
from trigger_relay.conf import KeyRing

logger = logging.getLogger("trigger_relay.worker")

T = TypeVar("T")

ADDRESS: Final = "TRIGGER_RELAY_TEMPORAL_ADDRESS"
NAMESPACE: Final = "TRIGGER_RELAY_TEMPORAL_NAMESPACE"
TASK_QUEUE: Final = "TRIGGER_RELAY_DJANGO_TASK_QUEUE"
API_KEY: Final = "TRIGGER_RELAY_TEMPORAL_API_KEY"
TLS_CA: Final = "TRIGGER_RELAY_TEMPORAL_TLS_CA"
TLS_CERT: Final = "TRIGGER_RELAY_TEMPORAL_TLS_CERT"
TLS_KEY: Final = "TRIGGER_RELAY_TEMPORAL_TLS_KEY"
TLS_SERVER_NAME: Final = "TRIGGER_RELAY_TEMPORAL_TLS_SERVER_NAME"
CONCURRENCY: Final = "TRIGGER_RELAY_WORKER_CONCURRENCY"
SHUTDOWN_SECONDS: Final = "TRIGGER_RELAY_WORKER_SHUTDOWN_SECONDS"
METRICS_ADDR: Final = "TRIGGER_RELAY_WORKER_METRICS_ADDR"
CODEC_KEYS_FILE: Final = conf.KEYS_FILE
CODEC_CURRENT_KEY_ID: Final = conf.CURRENT_KEY_ID

#: Where a value was set, as log lines and errors name it.
ENVIRONMENT: Final = "the environment"
DJANGO_SETTINGS: Final = "Django settings"
DEFAULT: Final = "the default"

#: Waits between attempts to reach Temporal at start: doubling from the first to the cap.
BACKOFF_INITIAL_SECONDS: Final = 1.0
BACKOFF_MAX_SECONDS: Final = 30.0
#: How long one attempt may take. An address that accepts connections but never answers (a
#: load balancer without backends, a port of some other service) would otherwise hold an
#: attempt for the SDK's own bound, 30s, before the log says anything.
ATTEMPT_TIMEOUT_SECONDS: Final = 10.0
#: How long the stopped worker waits for the SDK's runtime to be released (see :func:`run`):
#: it takes milliseconds, a scheduling slice or two of the SDK's threads on a loaded machine.
RELEASE_TIMEOUT_SECONDS: Final = 10.0


class ConfigError(ValueError):
    """A setting of the worker is unusable; the message names the setting and where it was
    set. Retrying cannot help, so the worker stops at once."""


class WorkerFailed(RuntimeError):
    """The worker could not start or keep serving; the log has the traceback."""


@dataclass(frozen=True)
class _Found:
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


class _Layers:
    """The environment over Django settings (when given): the first that has a value gives
    it. An empty or blank value, or ``None`` in Django settings, counts as unset, as in
    conf.py; a site's ``settings.py`` often passes on ``os.environ.get(name, "")``."""

    def __init__(self, environ: Mapping[str, str], django_settings: object | None) -> None:
        self._environ = environ
        self._django_settings = django_settings
        self.sources: dict[str, str] = {}

    def get(self, name: str, *, secret: bool = False) -> _Found | None:
        raw = self._environ.get(name)
        if raw is not None and raw.strip():
            found = _Found(name, raw, ENVIRONMENT, secret)
        else:
            value: object = getattr(self._django_settings, name, None)
            if value is None or (isinstance(value, str) and not value.strip()):
                return None
            found = _Found(name, value, DJANGO_SETTINGS, secret)
        self.sources[name] = found.source
        return found

    def text(self, name: str, *, secret: bool = False) -> str | None:
        found = self.get(name, secret=secret)
        if found is None:
            return None
        if not isinstance(found.value, str):
            raise ConfigError(f"{found.where(with_type=True)}; use a str.")
        return found.value

    def codec_keys(self) -> KeyRing | None:
        """The payload encryption keys (trigger_relay/codec.py), read now, so that a missing
        or malformed key file is a clear error at start, not a firing that cannot decrypt."""
        found = self.get(CODEC_KEYS_FILE)
        path: object = None if found is None else found.value
        if path is not None and not isinstance(path, str | os.PathLike):
            assert found is not None
            raise ConfigError(f"{found.where(with_type=True)}; use a str or a pathlib.Path.")
        try:
            return conf.load_keys(path, self.text(CODEC_CURRENT_KEY_ID))
        except conf.KeyFileError as exc:
            raise ConfigError(str(exc)) from None

    def pem_file(self, found: _Found | None) -> Path | None:
        if found is None:
            return None
        value = found.value
        if not isinstance(value, str | os.PathLike) or not isinstance(os.fspath(value), str):
            raise ConfigError(f"{found.where(with_type=True)}; use a str or a pathlib.Path.")
        path = Path(value)
        # Read now, so that a wrong path is a clear error at start, not a connection that
        # is retried for ever.
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{found.where()}: cannot read it: {exc.strerror or exc}.") from None
        if b"-----BEGIN " not in content:
            raise ConfigError(f"{found.where()}: not a PEM file (no '-----BEGIN' line).")
        return path

    def count(self, name: str, default: int) -> int:
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

    def socket_address(self, name: str) -> str | None:
        """``host:port`` to listen on, the host an IP address (``[...]`` for IPv6): what the
        SDK's Prometheus exporter binds (it takes no host name). None when unset."""
        found = self.get(name)
        if found is None:
            return None
        if not isinstance(found.value, str):
            raise ConfigError(f"{found.where(with_type=True)}; use a str such as '127.0.0.1:9465'.")
        value = found.value.strip()
        problem = _socket_address_problem(value)
        if problem is not None:
            raise ConfigError(
                f"{found.where()}: {problem}; use an IP address and a port, such as "
                "127.0.0.1:9465, 0.0.0.0:9465 or [::]:9465."
            )
        return value

    def seconds(self, name: str, default: float) -> float:
        found = self.get(name)
        if found is None:
            return default
        number: float
        if found.source == ENVIRONMENT:
            try:
                number = float(str(found.value))
            except ValueError:
                raise ConfigError(
                    f"{found.where()} is not a number; use a number of seconds above 0."
                ) from None
        elif isinstance(found.value, int | float) and not isinstance(found.value, bool):
            number = float(found.value)
        else:
            raise ConfigError(
                f"{found.where(with_type=True)}; use an int or a float, seconds above 0."
            )
        if not (number > 0 and math.isfinite(number)):
            raise ConfigError(f"{found.where()}; use a number of seconds above 0.")
        return number


def _socket_address_problem(value: str) -> str | None:
    """What is wrong with ``value`` as ``ip:port``, or None."""
    host, colon, port = value.rpartition(":")
    if not colon or not host:
        return "not host:port"
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return f"port {port!r} is not a number from 1 to 65535"
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return f"{host!r} is not an IP address (a host name is not accepted)"
    if address.version == 6 and not bracketed:
        return f"an IPv6 address goes in brackets: [{host}]:{port}"
    return None


@dataclass(frozen=True)
class WorkerSettings:
    """The worker's connection and capacity settings, validated (guarantees §5.4)."""

    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = "trigger-relay-django"
    # Never in the repr (logs, tracebacks, Django's error pages), as the daemon's "***".
    api_key: str | None = field(default=None, repr=False)
    # An https:// address (the daemon's URL form) asks for TLS, as it does of the daemon.
    https: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_server_name: str | None = None
    max_concurrent: int = 8
    shutdown_timeout: timedelta = timedelta(seconds=10)
    #: ``ip:port`` of the Prometheus endpoint (``/metrics``); None: no metrics (the default).
    metrics_addr: str | None = None
    #: The payload encryption keys, the daemon's (TRIGGER_RELAY_CODEC_KEYS_FILE and
    #: TRIGGER_RELAY_CODEC_CURRENT_KEY_ID); None: payloads travel as JSON.
    codec_keys: KeyRing | None = None
    #: Where each setting was set (a variable's name to ENVIRONMENT or DJANGO_SETTINGS), so
    #: that a log line can say where to correct it.
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        """The settings from the environment alone (``os.environ`` by default)."""
        return cls._load(_Layers(os.environ if environ is None else environ, None))

    @classmethod
    def from_django(
        cls, environ: Mapping[str, str] | None = None, django_settings: object | None = None
    ) -> WorkerSettings:
        """The settings of ``manage.py trigger_relay_worker``: each ``TRIGGER_RELAY_*``
        setting from the environment, else from Django settings, else the default.

        Django settings may hold the natural Python types: ``str`` for text, ``int`` for
        ``TRIGGER_RELAY_WORKER_CONCURRENCY``, ``int`` or ``float`` for
        ``TRIGGER_RELAY_WORKER_SHUTDOWN_SECONDS``, ``str`` or ``pathlib.Path`` for the TLS
        files and ``TRIGGER_RELAY_CODEC_KEYS_FILE``, ``str`` (``ip:port``) for
        ``TRIGGER_RELAY_WORKER_METRICS_ADDR``. Raises
        :class:`ConfigError` naming the setting and where it was set.
        """
        if django_settings is None:
            from django.conf import settings

            django_settings = settings
        return cls._load(_Layers(os.environ if environ is None else environ, django_settings))

    @classmethod
    def _load(cls, layers: _Layers) -> WorkerSettings:
        cert, key = layers.get(TLS_CERT), layers.get(TLS_KEY)
        alone = cert if key is None else key if cert is None else None
        if alone is not None:
            raise ConfigError(
                f"{TLS_CERT} and {TLS_KEY} go together (a client certificate and its key); "
                f"only {alone.name} is set, in {alone.source}."
            )
        address = layers.text(ADDRESS) or cls.address
        # The daemon takes a URL (http://host:port); the Python SDK takes host:port.
        https = False
        for scheme in ("http://", "https://"):
            if address.lower().startswith(scheme):
                address = address[len(scheme) :]
                https = scheme == "https://"
        return cls(
            address=address.rstrip("/"),
            https=https,
            namespace=layers.text(NAMESPACE) or cls.namespace,
            task_queue=layers.text(TASK_QUEUE) or cls.task_queue,
            api_key=layers.text(API_KEY, secret=True),
            tls_ca=layers.pem_file(layers.get(TLS_CA)),
            tls_cert=layers.pem_file(cert),
            tls_key=layers.pem_file(key),
            tls_server_name=layers.text(TLS_SERVER_NAME),
            max_concurrent=layers.count(CONCURRENCY, cls.max_concurrent),
            shutdown_timeout=timedelta(seconds=layers.seconds(SHUTDOWN_SECONDS, 10)),
            metrics_addr=layers.socket_address(METRICS_ADDR),
            codec_keys=layers.codec_keys(),
            sources=dict(layers.sources),
        )

    def source(self, name: str) -> str:
        """Where the setting ``name`` was set: ENVIRONMENT, DJANGO_SETTINGS or DEFAULT."""
        return self.sources.get(name, DEFAULT)

    def where(self, name: str) -> str:
        """Where the setting ``name`` was set, for log lines: so that the operator knows
        what to correct, and where."""
        source = self.source(name)
        if source == ENVIRONMENT:
            return f"{name} in the environment"
        if source == DJANGO_SETTINGS:
            return f"settings.{name}"
        return f"the default; set {name}"

    def tls_enabled(self) -> bool:
        """As the daemon's ``tls_enabled``: an API key (Temporal Cloud), a CA, a client
        certificate or an https:// address. A server name alone does not enable it."""
        return bool(self.api_key or self.tls_ca or self.tls_cert or self.https)

    def tls(self) -> TLSConfig | bool:
        if not self.tls_enabled():
            return False
        if not (self.tls_ca or self.tls_cert or self.tls_server_name):
            return True  # the system's roots
        return TLSConfig(
            server_root_ca_cert=self.tls_ca.read_bytes() if self.tls_ca else None,
            client_cert=self.tls_cert.read_bytes() if self.tls_cert else None,
            client_private_key=self.tls_key.read_bytes() if self.tls_key else None,
            domain=self.tls_server_name,
        )


async def run(settings: WorkerSettings) -> None:
    """Wait for Temporal, then serve until SIGTERM or SIGINT; then stop the worker, the
    client, and the SDK's runtime.

    Raises :class:`ConfigError` for a setting that Temporal's SDK refuses (no retry can fix
    it) and :class:`WorkerFailed` for a worker that failed while serving.

    The runtime is the point (a clean exit on SIGTERM, guarantees §5.4). The SDK's Rust core runs on
    Tokio threads, and each of its results reaches asyncio from one of them (pyo3-async-runtimes
    sets the future's result in a ``spawn_blocking`` task, holding the GIL), possibly *after* the
    awaiting coroutine has resumed. So the hand-off of the last result of a shutdown
    (``finalize_shutdown``) can still be in flight when ``asyncio.run`` returns. If that thread next
    asks for the GIL once the interpreter is finalizing, CPython ends it in the middle of its GIL
    guard and the process aborts: ``Fatal Python error: PyGILState_Release: thread state ... must be
    current when releasing``, exit -6 (temporalio/sdk-python#300). The
    default runtime is a module global, so its threads live until then. This runtime is ours,
    and dropping its last reference here, before the interpreter exits, shuts Tokio down with
    the GIL released (the bridge's ``CoreRuntimeHandle``), which waits for those threads.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before connecting, so that a SIGTERM while waiting for Temporal is a clean stop too.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = _runtime(settings)
    metrics.install(
        runtime.metric_meter, namespace=settings.namespace, task_queue=settings.task_queue
    )
    failure: str | None = None
    refused: str | None = None
    try:
        await _serve(settings, runtime, stop)
    except ConfigError as exc:
        refused = str(exc)  # no traceback: the message says what to correct
    except Exception as exc:
        # Logged here, and not raised: the traceback's frames hold the client and the
        # worker, and through them the runtime.
        logger.exception("trigger_relay worker failed")
        failure = f"{type(exc).__name__}: {exc}"
    # Here the client and the worker are unreachable, some of their parts only in reference
    # cycles, and once those are collected the runtime's last reference goes and its threads
    # are joined. Not at once, though: a call that ``_unless_stopped`` cancelled still holds
    # its task, and through the task's frames the client, until the SDK's Tokio thread hands
    # its result to this loop (``call_soon_threadsafe``), which can come after the stop on a
    # loaded machine. So the loop keeps running until the runtime is gone.
    metrics.uninstall()  # its instruments hold the runtime
    released = weakref.ref(runtime)
    del runtime
    if not await _until_released(released):
        logger.warning(
            "the Temporal SDK runtime is still referenced %gs after the stop",
            RELEASE_TIMEOUT_SECONDS,
        )
    if refused is not None:
        raise ConfigError(refused)
    if failure is not None:
        raise WorkerFailed(failure)
    logger.info("trigger_relay worker stopped")


async def _until_released(runtime: weakref.ref[Runtime]) -> bool:
    """True once nothing references ``runtime`` (collecting cycles as it waits), False if
    something still does after RELEASE_TIMEOUT_SECONDS."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELEASE_TIMEOUT_SECONDS
    while True:
        gc.collect()
        if runtime() is None:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.01)


def _runtime(settings: WorkerSettings) -> Runtime:
    """The SDK's runtime, with its Prometheus endpoint when ``TRIGGER_RELAY_WORKER_METRICS_ADDR``
    is set: the SDK's own metrics and the add-on's (:mod:`trigger_relay.metrics`), durations
    in seconds. Raises :class:`ConfigError` naming the setting when the endpoint cannot listen
    (the port is taken, the address is not this machine's)."""
    address = settings.metrics_addr
    if address is None:
        logger.info("trigger_relay worker metrics: off (%s is not set)", METRICS_ADDR)
        return Runtime(telemetry=TelemetryConfig())
    try:
        runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(
                    bind_address=address,
                    durations_as_seconds=True,
                    histogram_bucket_overrides=metrics.bucket_overrides(),
                )
            )
        )
    except ValueError as exc:  # "Failed starting Prometheus exporter: Address already in use"
        given = _Found(METRICS_ADDR, address, settings.source(METRICS_ADDR))
        raise ConfigError(
            f"{given.where()}: cannot serve metrics there: {_gist(str(exc))}."
        ) from None
    logger.info(
        "trigger_relay worker metrics: http://%s/metrics (%s)",
        address,
        settings.where(METRICS_ADDR),
    )
    return runtime


#: How the SDK words a failure of the worker's own check of its namespace at start
#: (``Worker.run``, core's ``validate``).
_VALIDATION_FAILED: Final = "Worker validation failed"


async def _serve(settings: WorkerSettings, runtime: Runtime, stop: asyncio.Event) -> None:
    _check_database_settings()
    _log_encryption(settings)
    logger.info(
        "trigger_relay worker connecting to Temporal at %s, namespace %r, task queue %s",
        settings.address,
        settings.namespace,
        settings.task_queue,
    )
    delays = _backoff()
    while not stop.is_set():
        client = await _connect(settings, runtime, stop, delays)
        if client is None:
            return
        try:
            await _work(settings, client, stop)
            return
        except RuntimeError as exc:
            # The worker checks its namespace again as it starts: Temporal may have gone away
            # (or the namespace been deleted) since _connect's check. As the daemon: try again
            # with a new client, since the failed worker stays registered with this one.
            if not str(exc).startswith(_VALIDATION_FAILED):
                raise
            problem = (
                f"the worker could not start on Temporal at {settings.address} "
                f"(namespace {settings.namespace!r}, {settings.where(NAMESPACE)}): "
                f"{_gist(str(exc))}"
            )
        if await _retry_later(problem, delays, stop):
            return


async def _connect(
    settings: WorkerSettings, runtime: Runtime, stop: asyncio.Event, delays: Iterator[float]
) -> Client | None:
    """A client of Temporal, whose namespace exists; None once ``stop`` is set.

    The SDK's ``Client.connect`` checks only that the server answers; a namespace that does
    not exist surfaces when the worker starts, as a failure of ``Worker.run`` (and a warning
    of the SDK's core). So it is checked here first, for a clear line and a retry: an
    operator who creates the namespace later sees the worker come up without a restart.
    """
    while True:
        try:
            client = await _unless_stopped(
                stop,
                asyncio.wait_for(
                    Client.connect(
                        settings.address,
                        namespace=settings.namespace,
                        api_key=settings.api_key,
                        tls=settings.tls(),
                        runtime=runtime,
                        # The worker on this client encrypts and decrypts with it.
                        data_converter=codec.data_converter(settings.codec_keys),
                    ),
                    ATTEMPT_TIMEOUT_SECONDS,
                ),
            )
        except ValueError as exc:
            # The SDK refuses the address itself ("invalid target URL"): no retry fixes that.
            given = _Found(ADDRESS, settings.address, settings.source(ADDRESS))
            raise ConfigError(f"{given.where()}: Temporal's SDK refuses it: {exc}.") from None
        except RuntimeError as exc:  # "Failed client connect: ..."
            problem = _unreachable(settings, str(exc))
        except asyncio.TimeoutError:
            problem = _unreachable(settings, f"no answer within {ATTEMPT_TIMEOUT_SECONDS:g}s")
        else:
            if client is None:
                return None
            try:
                described = await _unless_stopped(
                    stop,
                    client.workflow_service.describe_namespace(
                        DescribeNamespaceRequest(namespace=settings.namespace),
                        timeout=timedelta(seconds=ATTEMPT_TIMEOUT_SECONDS),
                    ),
                )
            except RPCError as exc:
                problem = _refused(settings, exc)
            else:
                return None if described is None else client
        if await _retry_later(problem, delays, stop):
            return None


def _log_encryption(settings: WorkerSettings) -> None:
    keys = settings.codec_keys
    if keys is None:
        logger.info(
            "payload encryption: off (%s and %s are not set)", CODEC_KEYS_FILE, CODEC_CURRENT_KEY_ID
        )
    else:
        logger.info(
            "payload encryption: on, encrypting with key %r, decrypting with keys %s (%s)",
            keys.current,
            ", ".join(keys.key_ids),
            settings.where(CODEC_KEYS_FILE),
        )


def _check_database_settings() -> None:
    """Refuse an unusable ``TRIGGER_RELAY_WORKER_CONN_MAX_AGE`` at start (each activity reads
    it again, so that a changed value takes effect without a restart), and say how the
    threads keep their database connections."""
    try:
        max_age = conf.worker_conn_max_age()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if max_age:
        logger.info(
            "database connections of the activity threads: kept up to %gs between activities, "
            "with health checks (%s)",
            max_age,
            conf.WORKER_CONN_MAX_AGE,
        )
    else:
        logger.info(
            "database connections of the activity threads: a new one for every activity (%s=0)",
            conf.WORKER_CONN_MAX_AGE,
        )


def _unreachable(settings: WorkerSettings, error: str) -> str:
    over = " over TLS" if settings.tls_enabled() else ""
    return (
        f"cannot reach Temporal at {settings.address}{over} ({settings.where(ADDRESS)}) "
        f"for namespace {settings.namespace!r}: {_gist(error)}"
    )


def _refused(settings: WorkerSettings, error: RPCError) -> str:
    at = f"Temporal at {settings.address}"
    if error.status == RPCStatusCode.NOT_FOUND:
        return (
            f"{at} has no namespace {settings.namespace!r} ({settings.where(NAMESPACE)}): "
            "waiting for it to be created"
        )
    reason = f"{error.status.name}: {_gist(error.message)}"
    if error.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNAUTHENTICATED):
        if settings.api_key:
            credentials = settings.where(API_KEY)
        elif settings.tls_cert:
            credentials = settings.where(TLS_CERT)
        else:
            credentials = f"none: neither {API_KEY} nor {TLS_CERT} is set"
        return (
            f"{at} refuses access to namespace {settings.namespace!r} "
            f"({settings.where(NAMESPACE)}; credentials: {credentials}): {reason}"
        )
    return (
        f"{at} ({settings.where(ADDRESS)}) did not describe namespace "
        f"{settings.namespace!r}: {reason}"
    )


def _gist(error: str) -> str:
    """An error of the SDK's Rust core, on one line and shortened to its innermost quoted
    message where it has one: its Debug form nests the cause several levels deep
    (``tonic::transport::Error(Transport, ConnectError(... message: "Connection refused"
    }))``)."""
    quoted = re.findall(r'(?:message|error): "((?:[^"\\]|\\.)*)"', error)
    gist = quoted[-1] if quoted else error.removeprefix("Failed client connect: ")
    return " ".join(gist.split())


def _backoff() -> Iterator[float]:
    """Seconds to wait before each retry: a ceiling that doubles from BACKOFF_INITIAL_SECONDS
    to BACKOFF_MAX_SECONDS, each wait drawn from its upper half, so that workers started
    together (a deploy) do not all retry at once against a Temporal that is coming up."""
    ceiling = BACKOFF_INITIAL_SECONDS
    while True:
        yield random.uniform(ceiling / 2, ceiling)
        ceiling = min(ceiling * 2, BACKOFF_MAX_SECONDS)


async def _retry_later(problem: str, delays: Iterator[float], stop: asyncio.Event) -> bool:
    """Log ``problem`` as one line and wait for the next attempt; True if ``stop`` was set
    meanwhile (or before)."""
    if stop.is_set():
        return True
    delay = next(delays)
    logger.warning("%s; retrying in %.1fs", problem, delay)
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except asyncio.TimeoutError:
        return False
    return True


async def _unless_stopped(stop: asyncio.Event, call: Awaitable[T]) -> T | None:
    """The result of ``call``, or None if ``stop`` is set first (``call`` is then cancelled):
    a connection to an address that drops packets can take minutes, a SIGTERM must not."""
    task = asyncio.ensure_future(call)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait((task,))
    if not task.cancelled():
        task.exception()  # retrieved, or asyncio would log it as never retrieved
    return None


async def _work(settings: WorkerSettings, client: Client, stop: asyncio.Event) -> None:
    with ThreadPoolExecutor(
        max_workers=settings.max_concurrent, thread_name_prefix="trigger-relay-activity"
    ) as executor:
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            activities=[perform_firing],
            activity_executor=executor,
            max_concurrent_activities=settings.max_concurrent,
            graceful_shutdown_timeout=settings.shutdown_timeout,
        )
        logger.info(
            "trigger_relay worker serving %s on %s/%s",
            settings.task_queue,
            settings.address,
            settings.namespace,
        )
        # Leaving the block shuts the worker down (Worker.shutdown): polling stops, in-flight
        # activities get the graceful period, and the core worker is finalized. A failure of
        # the worker (its start included) is raised from the block.
        async with worker:
            await stop.wait()
            logger.info("shutting down: in-flight activities get %s", settings.shutdown_timeout)


def runtime_threads_left(grace: float = 5.0) -> list[str]:
    """The names of the native Tokio threads still running in this process after up to
    ``grace`` seconds (Linux; elsewhere, always none). After :func:`run` returns there should
    be none soon: dropping the runtime signals its threads to stop and waits for their work,
    but a thread that has finished its work is still listed until it has exited, which on a
    loaded machine takes a scheduling slice or more."""
    deadline = time.monotonic() + grace
    while True:
        names = _tokio_threads()
        if not names or time.monotonic() >= deadline:
            return names
        time.sleep(0.05)


def _tokio_threads() -> list[str]:
    python_threads = {thread.native_id for thread in threading.enumerate()}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return []
    names = []
    for tid in tids:
        if int(tid) in python_threads:
            continue
        try:
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:  # it has just ended
            continue
        if name.startswith("tokio"):
            names.append(name)
    return names
