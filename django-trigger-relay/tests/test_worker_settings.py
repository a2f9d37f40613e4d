"""The activity worker's packaging and settings (guarantees §5.4, §8.3): temporalio is declared,
TLS is enabled as the daemon enables it, unreadable TLS files and a missing SDK are clear
errors, the API key stays out of the settings' repr, and the settings come from the
environment over Django settings, each bad value named with where it was set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from packaging.requirements import Requirement
from temporalio.service import TLSConfig

from trigger_relay.worker.settings import ADDRESS
from trigger_relay.worker.settings import API_KEY
from trigger_relay.worker.settings import CONCURRENCY
from trigger_relay.worker.settings import DEFAULT
from trigger_relay.worker.settings import DJANGO_SETTINGS
from trigger_relay.worker.settings import NAMESPACE
from trigger_relay.worker.settings import SHUTDOWN_SECONDS
from trigger_relay.worker.settings import TLS_CA
from trigger_relay.worker.settings import TLS_KEY
from trigger_relay.worker.settings import ConfigError
from trigger_relay.worker.settings import WorkerSettings

TESTS_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = TESTS_DIR.parent
REPO_DIR = PACKAGE_DIR.parent
EXAMPLE_DIR = REPO_DIR / "example"


def test_pyproject_declares_temporalio_in_the_locked_range() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((PACKAGE_DIR / "pyproject.toml").read_text())["project"]
    requirements = {
        req.name: req for req in (Requirement(line) for line in project["dependencies"])
    }
    assert "temporalio" in requirements, "manage.py trigger_relay_worker imports temporalio"
    locked = re.search(
        r"^temporalio==(\S+)$", (REPO_DIR / "requirements.lock").read_text(), re.MULTILINE
    )
    assert locked is not None
    assert requirements["temporalio"].specifier.contains(locked.group(1))
    assert "Framework :: Django" in project["classifiers"]


def test_command_names_the_missing_temporal_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    # As after `pip install --no-deps`: every temporalio module is unimportable, and the
    # add-on's modules that import it are imported afresh.
    for name in list(sys.modules):
        if name == "temporalio" or name.startswith("temporalio."):
            monkeypatch.setitem(sys.modules, name, None)
    for name in (
        "trigger_relay.worker.settings",
        "trigger_relay.worker.process",
        "trigger_relay.perform.activity",
        "trigger_relay.management.commands.trigger_relay_worker",
    ):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(CommandError, match=r"temporalio.*pip install 'temporalio"):
        call_command("trigger_relay_worker")


@pytest.mark.parametrize(
    ("environ", "address", "tls"),
    [
        ({}, "127.0.0.1:7233", False),
        ({"TRIGGER_RELAY_TEMPORAL_ADDRESS": "http://t:7233"}, "t:7233", False),
        ({"TRIGGER_RELAY_TEMPORAL_ADDRESS": "https://t.example:7233/"}, "t.example:7233", True),
        ({"TRIGGER_RELAY_TEMPORAL_ADDRESS": "HTTPS://t.example:7233"}, "t.example:7233", True),
        ({"TRIGGER_RELAY_TEMPORAL_API_KEY": "k"}, "127.0.0.1:7233", True),
        # As the daemon's tls_enabled: a server name alone does not enable TLS.
        ({"TRIGGER_RELAY_TEMPORAL_TLS_SERVER_NAME": "t"}, "127.0.0.1:7233", False),
    ],
)
def test_tls_is_enabled_as_the_daemon_enables_it(
    environ: dict[str, str], address: str, tls: bool
) -> None:
    settings = WorkerSettings.from_env(environ)
    assert settings.address == address
    assert settings.tls() is tls


def test_https_with_a_server_name_verifies_that_name() -> None:
    settings = WorkerSettings.from_env(
        {
            "TRIGGER_RELAY_TEMPORAL_ADDRESS": "https://10.0.0.5:7233",
            "TRIGGER_RELAY_TEMPORAL_TLS_SERVER_NAME": "temporal.internal",
        }
    )
    tls = settings.tls()
    assert isinstance(tls, TLSConfig)
    assert tls.domain == "temporal.internal"
    assert settings.address == "10.0.0.5:7233"


def _pem(path: Path, label: str = "CERTIFICATE") -> Path:
    path.write_bytes(f"-----BEGIN {label}-----\n{path.name}\n-----END {label}-----\n".encode())
    return path


def test_tls_files_are_read(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        _pem(tmp_path / name)
    tls = WorkerSettings.from_env(
        {
            "TRIGGER_RELAY_TEMPORAL_TLS_CA": str(tmp_path / "ca.pem"),
            "TRIGGER_RELAY_TEMPORAL_TLS_CERT": str(tmp_path / "cert.pem"),
            "TRIGGER_RELAY_TEMPORAL_TLS_KEY": str(tmp_path / "key.pem"),
        }
    ).tls()
    assert isinstance(tls, TLSConfig)
    assert tls.server_root_ca_cert == (tmp_path / "ca.pem").read_bytes()
    assert tls.client_cert == (tmp_path / "cert.pem").read_bytes()
    assert tls.client_private_key == (tmp_path / "key.pem").read_bytes()


@pytest.mark.parametrize(
    "missing",
    [
        "TRIGGER_RELAY_TEMPORAL_TLS_CA",
        "TRIGGER_RELAY_TEMPORAL_TLS_CERT",
        "TRIGGER_RELAY_TEMPORAL_TLS_KEY",
    ],
)
def test_a_missing_tls_file_names_the_variable_and_the_path(tmp_path: Path, missing: str) -> None:
    present = _pem(tmp_path / "present.pem")
    environ = {
        "TRIGGER_RELAY_TEMPORAL_TLS_CERT": str(present),
        "TRIGGER_RELAY_TEMPORAL_TLS_KEY": str(present),
        missing: str(tmp_path / "absent.pem"),
    }
    with pytest.raises(ConfigError, match=rf"{missing}=.*absent\.pem"):
        WorkerSettings.from_env(environ)


def test_a_tls_file_that_is_not_pem_is_refused_at_once(tmp_path: Path) -> None:
    # The SDK would fail every connection on it ("PrivateKeyParseError"), and the worker
    # would retry for ever: a configuration error, reported before connecting.
    der = tmp_path / "key.der"
    der.write_bytes(b"\x30\x82\x04\xa4")
    environ = {
        "TRIGGER_RELAY_TEMPORAL_TLS_CERT": str(_pem(tmp_path / "cert.pem")),
        "TRIGGER_RELAY_TEMPORAL_TLS_KEY": str(der),
    }
    with pytest.raises(ConfigError, match=r"TRIGGER_RELAY_TEMPORAL_TLS_KEY=.*key\.der.*not a PEM"):
        WorkerSettings.from_env(environ)


def test_the_settings_repr_hides_the_api_key() -> None:
    settings = WorkerSettings.from_env({"TRIGGER_RELAY_TEMPORAL_API_KEY": "s3cr3t-api-key"})
    assert settings.api_key == "s3cr3t-api-key"
    assert "s3cr3t-api-key" not in repr(settings)
    assert "s3cr3t-api-key" not in str(settings)


def test_command_refuses_a_missing_tls_ca_without_a_traceback(tmp_path: Path) -> None:
    absent = tmp_path / "absent-ca.pem"
    result = subprocess.run(
        [sys.executable, "-m", "django", "trigger_relay_worker"],
        env={
            "DJANGO_SETTINGS_MODULE": "test_settings",
            "DJT_SCHEMA": os.environ.get("DJT_SCHEMA", "pypi"),
            "PYTHONPATH": f"{TESTS_DIR}:{EXAMPLE_DIR}",
            "PATH": "/usr/bin:/bin",
            # Unreachable: were the file not checked first, the worker would try to connect.
            "TRIGGER_RELAY_TEMPORAL_ADDRESS": "https://127.0.0.1:9",
            "TRIGGER_RELAY_TEMPORAL_TLS_CA": str(absent),
        },
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert f"TRIGGER_RELAY_TEMPORAL_TLS_CA='{absent}'" in result.stderr
    assert "No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# -- Django settings under the environment (guarantees §5.4) ---------------------------------


def test_django_settings_are_read_when_the_environment_is_silent(
    settings: Any, tmp_path: Path
) -> None:
    settings.TRIGGER_RELAY_TEMPORAL_ADDRESS = "https://temporal.internal:7233"
    settings.TRIGGER_RELAY_TEMPORAL_NAMESPACE = "site"
    settings.TRIGGER_RELAY_DJANGO_TASK_QUEUE = "site-django"
    settings.TRIGGER_RELAY_TEMPORAL_API_KEY = "k"
    settings.TRIGGER_RELAY_TEMPORAL_TLS_CA = _pem(tmp_path / "ca.pem")  # a Path
    settings.TRIGGER_RELAY_TEMPORAL_TLS_CERT = str(_pem(tmp_path / "cert.pem"))  # a str
    settings.TRIGGER_RELAY_TEMPORAL_TLS_KEY = _pem(tmp_path / "key.pem", "PRIVATE KEY")
    settings.TRIGGER_RELAY_TEMPORAL_TLS_SERVER_NAME = "temporal"
    settings.TRIGGER_RELAY_WORKER_CONCURRENCY = 3
    settings.TRIGGER_RELAY_WORKER_SHUTDOWN_SECONDS = 2.5

    worker_settings = WorkerSettings.from_django(environ={})

    assert worker_settings == WorkerSettings(
        address="temporal.internal:7233",
        https=True,
        namespace="site",
        task_queue="site-django",
        api_key="k",
        tls_ca=tmp_path / "ca.pem",
        tls_cert=tmp_path / "cert.pem",
        tls_key=tmp_path / "key.pem",
        tls_server_name="temporal",
        max_concurrent=3,
        shutdown_timeout=timedelta(seconds=2.5),
    )
    assert worker_settings.source(NAMESPACE) == DJANGO_SETTINGS
    assert worker_settings.where(NAMESPACE) == "settings.TRIGGER_RELAY_TEMPORAL_NAMESPACE"


def test_defaults_when_neither_sets_anything() -> None:
    worker_settings = WorkerSettings.from_django(environ={}, django_settings=SimpleNamespace())
    assert worker_settings == WorkerSettings()
    assert worker_settings.source(ADDRESS) == DEFAULT
    assert worker_settings.where(ADDRESS) == "the default; set TRIGGER_RELAY_TEMPORAL_ADDRESS"


def test_the_environment_wins_over_django_settings() -> None:
    django_settings = SimpleNamespace(
        TRIGGER_RELAY_TEMPORAL_NAMESPACE="from-settings",
        TRIGGER_RELAY_WORKER_CONCURRENCY=3,
        TRIGGER_RELAY_WORKER_SHUTDOWN_SECONDS=7,
    )
    worker_settings = WorkerSettings.from_django(
        environ={
            "TRIGGER_RELAY_TEMPORAL_NAMESPACE": "from-env",
            "TRIGGER_RELAY_WORKER_CONCURRENCY": "5",
        },
        django_settings=django_settings,
    )
    assert worker_settings.namespace == "from-env"
    assert worker_settings.max_concurrent == 5
    assert worker_settings.shutdown_timeout == timedelta(seconds=7)  # not in the environment
    assert worker_settings.where(NAMESPACE) == "TRIGGER_RELAY_TEMPORAL_NAMESPACE in the environment"
    assert worker_settings.source(SHUTDOWN_SECONDS) == DJANGO_SETTINGS


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_environment_variable_counts_as_unset(empty: str) -> None:
    environ = dict.fromkeys((ADDRESS, NAMESPACE, CONCURRENCY, API_KEY, TLS_CA), empty)
    django_settings = SimpleNamespace(
        TRIGGER_RELAY_TEMPORAL_NAMESPACE="from-settings", TRIGGER_RELAY_WORKER_CONCURRENCY=2
    )
    worker_settings = WorkerSettings.from_django(environ=environ, django_settings=django_settings)
    assert worker_settings.namespace == "from-settings"
    assert worker_settings.max_concurrent == 2
    assert worker_settings.address == "127.0.0.1:7233"  # the default, not ""
    assert worker_settings.api_key is None
    assert worker_settings.tls_ca is None
    # Also from the environment alone.
    assert WorkerSettings.from_env(environ) == WorkerSettings()


def test_none_or_an_empty_string_in_django_settings_counts_as_unset() -> None:
    # As `TRIGGER_RELAY_TEMPORAL_API_KEY = os.environ.get("...", "")` in a settings.py.
    django_settings = SimpleNamespace(
        TRIGGER_RELAY_TEMPORAL_API_KEY="",
        TRIGGER_RELAY_TEMPORAL_TLS_CA=None,
        TRIGGER_RELAY_WORKER_CONCURRENCY=None,
    )
    assert WorkerSettings.from_django(environ={}, django_settings=django_settings) == (
        WorkerSettings()
    )


def test_a_client_certificate_and_its_key_may_come_from_either(tmp_path: Path) -> None:
    django_settings = SimpleNamespace(TRIGGER_RELAY_TEMPORAL_TLS_CERT=_pem(tmp_path / "c.pem"))
    key = str(_pem(tmp_path / "k.pem", "PRIVATE KEY"))
    worker_settings = WorkerSettings.from_django(
        environ={TLS_KEY: key}, django_settings=django_settings
    )
    assert worker_settings.tls_cert == tmp_path / "c.pem"
    assert worker_settings.tls_key == tmp_path / "k.pem"
    with pytest.raises(
        ConfigError,
        match=r"TRIGGER_RELAY_TEMPORAL_TLS_CERT and TRIGGER_RELAY_TEMPORAL_TLS_KEY go together.*"
        r"only TRIGGER_RELAY_TEMPORAL_TLS_CERT is set, in Django settings",
    ):
        WorkerSettings.from_django(environ={}, django_settings=django_settings)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (CONCURRENCY, "8", "'8' (type str); use an int of at least 1."),
        (CONCURRENCY, 2.0, "2.0 (type float); use an int of at least 1."),
        (CONCURRENCY, True, "True (type bool); use an int of at least 1."),
        (CONCURRENCY, 0, "0; use a whole number of at least 1."),
        (SHUTDOWN_SECONDS, "10", "'10' (type str); use an int or a float, seconds above 0."),
        (
            SHUTDOWN_SECONDS,
            timedelta(seconds=10),
            "datetime.timedelta(seconds=10) (type timedelta); use an int or a float, seconds "
            "above 0.",
        ),
        (SHUTDOWN_SECONDS, -1, "-1; use a number of seconds above 0."),
        (SHUTDOWN_SECONDS, float("nan"), "nan; use a number of seconds above 0."),
        (NAMESPACE, 5, "5 (type int); use a str."),
        (ADDRESS, b"t:7233", "b't:7233' (type bytes); use a str."),
        (TLS_CA, 5, "5 (type int); use a str or a pathlib.Path."),
        (
            TLS_CA,
            Path("/nonexistent/ca.pem"),
            "PosixPath('/nonexistent/ca.pem'): cannot read it: No such file or directory.",
        ),
    ],
)
def test_a_bad_django_setting_is_named(name: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        WorkerSettings.from_django(environ={}, django_settings=SimpleNamespace(**{name: value}))
    assert str(raised.value) == f"settings.{name} is {message}"


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        (CONCURRENCY, "x", "'x' in the environment is not an integer; use a whole number"),
        (CONCURRENCY, "0", "'0' in the environment; use a whole number of at least 1."),
        (SHUTDOWN_SECONDS, "soon", "'soon' in the environment is not a number; use a number"),
        (SHUTDOWN_SECONDS, "inf", "'inf' in the environment; use a number of seconds above 0."),
    ],
)
def test_a_bad_environment_variable_is_named_even_over_a_good_setting(
    name: str, raw: str, message: str
) -> None:
    django_settings = SimpleNamespace(**{name: 4})
    with pytest.raises(ConfigError) as raised:
        WorkerSettings.from_django(environ={name: raw}, django_settings=django_settings)
    assert str(raised.value).startswith(f"{name}={message}"), str(raised.value)


def test_the_environment_accepts_fractional_shutdown_seconds() -> None:
    assert WorkerSettings.from_env({SHUTDOWN_SECONDS: "2.5"}).shutdown_timeout == timedelta(
        seconds=2.5
    )


def test_a_bad_api_key_setting_is_named_but_not_shown() -> None:
    with pytest.raises(ConfigError) as raised:
        WorkerSettings.from_django(
            environ={}, django_settings=SimpleNamespace(TRIGGER_RELAY_TEMPORAL_API_KEY=123456789)
        )
    assert str(raised.value) == (
        "settings.TRIGGER_RELAY_TEMPORAL_API_KEY is *** (type int); use a str."
    )


def _run_command(
    settings_module: str, pythonpath: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "django", "trigger_relay_worker"],
        env={
            "DJANGO_SETTINGS_MODULE": settings_module,
            "DJT_SCHEMA": os.environ.get("DJT_SCHEMA", "pypi"),
            "PYTHONPATH": pythonpath,
            "PATH": "/usr/bin:/bin",
            **env,
        },
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_command_reads_django_settings_and_names_a_bad_one(tmp_path: Path) -> None:
    (tmp_path / "typed_worker_settings.py").write_text(
        "from test_settings import *  # noqa: F403\nTRIGGER_RELAY_WORKER_CONCURRENCY = '8'\n"
    )
    pythonpath = f"{tmp_path}:{TESTS_DIR}:{EXAMPLE_DIR}"
    result = _run_command("typed_worker_settings", pythonpath)
    assert result.returncode == 1, result.stderr
    assert (
        "settings.TRIGGER_RELAY_WORKER_CONCURRENCY is '8' (type str); use an int of at least 1."
        in result.stderr
    )
    assert "Traceback" not in result.stderr + result.stdout
    # The environment wins: with a good value there, the bad setting is not even read, and
    # the next problem is the unreadable CA (checked before connecting).
    result = _run_command(
        "typed_worker_settings",
        pythonpath,
        TRIGGER_RELAY_WORKER_CONCURRENCY="2",
        TRIGGER_RELAY_TEMPORAL_TLS_CA=str(tmp_path / "absent.pem"),
    )
    assert result.returncode == 1, result.stderr
    assert "TRIGGER_RELAY_TEMPORAL_TLS_CA=" in result.stderr
    assert "CONCURRENCY" not in result.stderr


def test_the_web_side_and_the_worker_read_settings_one_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """conf.Layers reads both: a blank variable is unset and Django settings give the value;
    an unusable value is the same ConfigError, whoever reads it."""
    from trigger_relay import conf

    assert ConfigError is conf.ConfigError
    assert issubclass(conf.KeyFileError, ConfigError)
    monkeypatch.setenv(conf.LOCK_TIMEOUT, " ")
    monkeypatch.setenv(NAMESPACE, " ")
    monkeypatch.setenv(conf.RETRY_APPLICATION_ERRORS, "")
    with override_settings(
        **{conf.LOCK_TIMEOUT: 7, NAMESPACE: "site", conf.RETRY_APPLICATION_ERRORS: True}
    ):
        assert conf.lock_timeout_seconds() == 7.0
        assert conf.retry_application_errors() is True
        assert conf.temporal_namespace() == "site"
        assert WorkerSettings.from_django().namespace == "site"

    monkeypatch.setenv(conf.LOCK_TIMEOUT, "soon")
    monkeypatch.setenv(SHUTDOWN_SECONDS, "soon")
    with pytest.raises(ConfigError, match=f"{conf.LOCK_TIMEOUT}='soon' in the environment"):
        conf.lock_timeout_seconds()
    with pytest.raises(ConfigError, match=f"{SHUTDOWN_SECONDS}='soon' in the environment"):
        WorkerSettings.from_django()
