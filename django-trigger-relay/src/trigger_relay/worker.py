"""The Python activity worker (SPEC §2.4, §5.3, §5.4): serves ``perform_firing`` on the
Django task queue, on a thread pool, until SIGTERM or SIGINT.

Connection settings use the daemon's variable names, so one environment serves both.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.runtime import TelemetryConfig
from temporalio.service import TLSConfig
from temporalio.worker import Worker

from trigger_relay.activities import perform_firing

logger = logging.getLogger("trigger_relay.worker")


class ConfigError(ValueError):
    """A setting of the worker is unusable; the message names the variable."""


class WorkerFailed(RuntimeError):
    """The worker could not connect, start or keep serving; the log has the traceback."""


@dataclass(frozen=True)
class WorkerSettings:
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

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerSettings:
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            value = env.get(name)
            if not value:
                return None
            # Read now, so that a wrong path is a clear error at start, not a traceback.
            try:
                with open(value, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(f"{name}={value!r}: cannot read it: {exc.strerror}") from None
            return Path(value)

        def positive(name: str, default: int) -> int:
            raw = env.get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not an integer") from None
            if value < 1:
                raise ConfigError(f"{name}={raw!r} must be at least 1")
            return value

        if bool(env.get("TRIGGER_RELAY_TEMPORAL_TLS_CERT")) != bool(
            env.get("TRIGGER_RELAY_TEMPORAL_TLS_KEY")
        ):
            raise ConfigError(
                "TRIGGER_RELAY_TEMPORAL_TLS_CERT and TRIGGER_RELAY_TEMPORAL_TLS_KEY go together"
            )
        address = env.get("TRIGGER_RELAY_TEMPORAL_ADDRESS", cls.address)
        # The daemon takes a URL (http://host:port); the Python SDK takes host:port.
        https = False
        for scheme in ("http://", "https://"):
            if address.lower().startswith(scheme):
                address = address[len(scheme) :]
                https = scheme == "https://"
        return cls(
            address=address.rstrip("/"),
            https=https,
            namespace=env.get("TRIGGER_RELAY_TEMPORAL_NAMESPACE", cls.namespace),
            task_queue=env.get("TRIGGER_RELAY_DJANGO_TASK_QUEUE", cls.task_queue),
            api_key=env.get("TRIGGER_RELAY_TEMPORAL_API_KEY") or None,
            tls_ca=path("TRIGGER_RELAY_TEMPORAL_TLS_CA"),
            tls_cert=path("TRIGGER_RELAY_TEMPORAL_TLS_CERT"),
            tls_key=path("TRIGGER_RELAY_TEMPORAL_TLS_KEY"),
            tls_server_name=env.get("TRIGGER_RELAY_TEMPORAL_TLS_SERVER_NAME") or None,
            max_concurrent=positive("TRIGGER_RELAY_WORKER_CONCURRENCY", cls.max_concurrent),
            shutdown_timeout=timedelta(
                seconds=positive("TRIGGER_RELAY_WORKER_SHUTDOWN_SECONDS", 10)
            ),
        )

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
    """Serve until SIGTERM or SIGINT, then stop the worker, the client, and the SDK's runtime.

    The runtime is the point (issue 7, item 8). The SDK's Rust core runs on Tokio threads,
    and each of its results reaches asyncio from one of them (pyo3-async-runtimes sets the
    future's result in a ``spawn_blocking`` task, holding the GIL), possibly *after* the
    awaiting coroutine has resumed. So the hand-off of the last result of a shutdown
    (``finalize_shutdown``) can still be in flight when ``asyncio.run`` returns. If that thread
    next asks for the GIL once the interpreter is finalizing, CPython ends it in the middle of
    its GIL guard and the process aborts: ``Fatal Python error: PyGILState_Release: thread
    state ... must be current when releasing``, exit -6 (temporalio/sdk-python#300). The
    default runtime is a module global, so its threads live until then. This runtime is ours,
    and dropping its last reference here, before the interpreter exits, shuts Tokio down with
    the GIL released (the bridge's ``CoreRuntimeHandle``), which waits for those threads.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before connecting, so that a SIGTERM while connecting is a clean stop too.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = Runtime(telemetry=TelemetryConfig())
    failure: str | None = None
    try:
        await _serve(settings, runtime, stop)
    except Exception as exc:
        # Logged here, and not raised: the traceback's frames hold the client and the
        # worker, and through them the runtime.
        logger.exception("trigger_relay worker failed")
        failure = f"{type(exc).__name__}: {exc}"
    # Let the task step that delivered the last result (or exception) return: until then it
    # holds it, and an exception's frames hold the client. Then the client and the worker are
    # unreachable, some of their parts only in reference cycles; once those are collected, the
    # runtime's last reference goes, and its threads are joined.
    await asyncio.sleep(0)
    gc.collect()
    del runtime
    if failure is not None:
        raise WorkerFailed(failure)
    logger.info("trigger_relay worker stopped")


async def _serve(settings: WorkerSettings, runtime: Runtime, stop: asyncio.Event) -> None:
    client = await Client.connect(
        settings.address,
        namespace=settings.namespace,
        api_key=settings.api_key,
        tls=settings.tls(),
        runtime=runtime,
    )
    if stop.is_set():
        return
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
        # activities get the graceful period, and the core worker is finalized.
        async with worker:
            await stop.wait()
            logger.info("shutting down: in-flight activities get %s", settings.shutdown_timeout)


def runtime_threads_left() -> list[str]:
    """The names of the native Tokio threads still running in this process (Linux; elsewhere,
    always none). After :func:`run` returns there should be none."""
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
