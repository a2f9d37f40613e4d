"""The activity worker's packaging and settings (issue 7, item 7): temporalio is declared,
TLS is enabled as the daemon enables it, unreadable TLS files and a missing SDK are clear
errors, and the API key stays out of the settings' repr."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from packaging.requirements import Requirement
from temporalio.service import TLSConfig

from trigger_relay.worker import ConfigError
from trigger_relay.worker import WorkerSettings

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
        "trigger_relay.worker",
        "trigger_relay.activities",
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


def test_tls_files_are_read(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_bytes(name.encode())
    tls = WorkerSettings.from_env(
        {
            "TRIGGER_RELAY_TEMPORAL_TLS_CA": str(tmp_path / "ca.pem"),
            "TRIGGER_RELAY_TEMPORAL_TLS_CERT": str(tmp_path / "cert.pem"),
            "TRIGGER_RELAY_TEMPORAL_TLS_KEY": str(tmp_path / "key.pem"),
        }
    ).tls()
    assert isinstance(tls, TLSConfig)
    assert tls.server_root_ca_cert == b"ca.pem"
    assert tls.client_cert == b"cert.pem"
    assert tls.client_private_key == b"key.pem"


@pytest.mark.parametrize(
    "missing",
    [
        "TRIGGER_RELAY_TEMPORAL_TLS_CA",
        "TRIGGER_RELAY_TEMPORAL_TLS_CERT",
        "TRIGGER_RELAY_TEMPORAL_TLS_KEY",
    ],
)
def test_a_missing_tls_file_names_the_variable_and_the_path(tmp_path: Path, missing: str) -> None:
    present = tmp_path / "present.pem"
    present.write_bytes(b"pem")
    environ = {
        "TRIGGER_RELAY_TEMPORAL_TLS_CERT": str(present),
        "TRIGGER_RELAY_TEMPORAL_TLS_KEY": str(present),
        missing: str(tmp_path / "absent.pem"),
    }
    with pytest.raises(ConfigError, match=rf"{missing}=.*absent\.pem"):
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
