"""The Python activity worker (SPEC §2.4, §5.3, §5.4): serves ``perform_firing`` on the
Django task queue, on a thread pool, until SIGTERM or SIGINT.

Connection settings use the daemon's variable names, so one environment serves both.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.service import TLSConfig
from temporalio.worker import Worker

from trigger_relay.activities import perform_firing

logger = logging.getLogger("trigger_relay.worker")


class ConfigError(ValueError):
    """A setting of the worker is unusable; the message names the variable."""


@dataclass(frozen=True)
class WorkerSettings:
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = "trigger-relay-django"
    api_key: str | None = None
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
            return Path(value) if value else None

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

        address = env.get("TRIGGER_RELAY_TEMPORAL_ADDRESS", cls.address)
        # The daemon takes a URL (http://host:port); the Python SDK takes host:port.
        for scheme in ("http://", "https://"):
            if address.startswith(scheme):
                address = address[len(scheme) :]
        settings = cls(
            address=address.rstrip("/"),
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
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise ConfigError(
                "TRIGGER_RELAY_TEMPORAL_TLS_CERT and TRIGGER_RELAY_TEMPORAL_TLS_KEY go together"
            )
        return settings

    def tls(self) -> TLSConfig | bool:
        if not (self.tls_ca or self.tls_cert or self.tls_server_name):
            # An API key implies TLS (Temporal Cloud); plain otherwise.
            return self.api_key is not None
        return TLSConfig(
            server_root_ca_cert=self.tls_ca.read_bytes() if self.tls_ca else None,
            client_cert=self.tls_cert.read_bytes() if self.tls_cert else None,
            client_private_key=self.tls_key.read_bytes() if self.tls_key else None,
            domain=self.tls_server_name,
        )


async def run(settings: WorkerSettings) -> None:
    client = await Client.connect(
        settings.address,
        namespace=settings.namespace,
        api_key=settings.api_key,
        tls=settings.tls(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
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
        async with worker:
            await stop.wait()
            logger.info("shutting down: in-flight activities get %s", settings.shutdown_timeout)
    logger.info("trigger_relay worker stopped")
