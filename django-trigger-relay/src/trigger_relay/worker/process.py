"""The Python activity worker's process (guarantees §2.4, §5.3, §5.4): serves
``perform_firing`` on the Django task queue, on a thread pool, until SIGTERM or SIGINT.

Its settings are :class:`trigger_relay.worker.settings.WorkerSettings`. Temporal is waited
for at start, as the daemon waits: an address where nothing answers yet or a namespace not
created yet is retried with backoff, one log line per attempt.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import re
import signal
import threading
import time
import weakref
from collections.abc import Awaitable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from temporalio.worker import Worker

from trigger_relay import conf
from trigger_relay.perform import metrics
from trigger_relay.perform.activity import perform_firing
from trigger_relay.worker import codec
from trigger_relay.worker.settings import ADDRESS
from trigger_relay.worker.settings import API_KEY
from trigger_relay.worker.settings import CODEC_CURRENT_KEY_ID
from trigger_relay.worker.settings import CODEC_KEYS_FILE
from trigger_relay.worker.settings import METRICS_ADDR
from trigger_relay.worker.settings import NAMESPACE
from trigger_relay.worker.settings import TLS_CERT
from trigger_relay.worker.settings import ConfigError
from trigger_relay.worker.settings import WorkerSettings

# The logger's name predates the package (docs and sites' LOGGING name it).
logger = logging.getLogger("trigger_relay.worker")

T = TypeVar("T")

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


class WorkerFailed(RuntimeError):
    """The worker could not start or keep serving; the log has the traceback."""


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
    is set: the SDK's own metrics and the add-on's (:mod:`trigger_relay.perform.metrics`), durations
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
        given = settings.as_given(METRICS_ADDR, address)
        raise ConfigError(f"{given}: cannot serve metrics there: {_gist(str(exc))}.") from None
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
            given = settings.as_given(ADDRESS, settings.address)
            raise ConfigError(f"{given}: Temporal's SDK refuses it: {exc}.") from None
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
