"""The Python activity worker's settings (guarantees §5.4), read once at start into
:class:`WorkerSettings`.

Connection settings use the daemon's variable names, so one environment serves both. They
are read as every setting of the add-on is (:class:`trigger_relay.conf.Layers`): the
environment, else Django settings; empty counts as unset; :class:`ConfigError` names the
setting and where it was set.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from typing import Final

from temporalio.service import TLSConfig

from trigger_relay import conf
from trigger_relay.conf import ConfigError
from trigger_relay.conf import Found
from trigger_relay.conf import KeyRing
from trigger_relay.conf import Layers

ADDRESS: Final = "TRIGGER_RELAY_TEMPORAL_ADDRESS"
NAMESPACE: Final = conf.TEMPORAL_NAMESPACE
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

#: Where a value was set (conf.py's names, as log lines and errors name it).
ENVIRONMENT: Final = conf.ENVIRONMENT
DJANGO_SETTINGS: Final = conf.DJANGO_SETTINGS
DEFAULT: Final = conf.DEFAULT


def _pem_file(found: Found | None) -> Path | None:
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


def _socket_address(layers: Layers, name: str) -> str | None:
    """``host:port`` to listen on, the host an IP address (``[...]`` for IPv6): what the
    SDK's Prometheus exporter binds (it takes no host name). None when unset."""
    found = layers.get(name)
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
        return cls._load(Layers(os.environ if environ is None else environ, None))

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
        return cls._load(Layers(os.environ if environ is None else environ, django_settings))

    @classmethod
    def _load(cls, layers: Layers) -> WorkerSettings:
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
            tls_ca=_pem_file(layers.get(TLS_CA)),
            tls_cert=_pem_file(cert),
            tls_key=_pem_file(key),
            tls_server_name=layers.text(TLS_SERVER_NAME),
            max_concurrent=layers.count(CONCURRENCY, cls.max_concurrent),
            shutdown_timeout=timedelta(seconds=layers.seconds(SHUTDOWN_SECONDS, 10)),
            metrics_addr=_socket_address(layers, METRICS_ADDR),
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

    def as_given(self, name: str, value: object) -> str:
        """How an error names ``value`` of the setting ``name``: as the operator wrote it,
        and where (``NAME='...' in the environment``, ``settings.NAME is '...'``)."""
        return Found(name, value, self.source(name)).where()

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
