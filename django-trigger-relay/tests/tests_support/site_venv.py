"""A site's own virtualenv, holding only what pip installs from the built packages.

The packages are those of ``scripts/build-wheels.sh`` (``dist/``, or ``TRIGGER_RELAY_DIST``):
the add-on's wheel and the daemon's manylinux wheel. The package index is a local folder
(:func:`package_index`): the pins of ``requirements.lock`` for what a site on dj-triggers and
Celery already has, plus whatever the add-on's wheel declares, fetched once through pip
(its cache serves them after ``scripts/bootstrap.sh``). Every install into a site's venv
then runs with ``--no-index`` on that folder, so what resolves is exactly what the wheels
declare and the lock pins, and the add-on is imported from ``site-packages``, never from the
checkout (the venv's environment has no ``PYTHONPATH`` to the add-on's source).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests_support.harness import REPO_ROOT
from tests_support.harness import HarnessError

REQUIREMENTS_LOCK = REPO_ROOT / "requirements.lock"

#: What a site running dj-triggers on Celery and PostgreSQL has installed before the add-on:
#: the example site's needs (kombu's Redis transport imports ``packaging`` undeclared).
SITE_REQUIREMENTS = (
    "Django",
    "dj-triggers",
    "django-polymorphic",
    "celery",
    "redis",
    "packaging",
    "psycopg[binary]",
)

_WHEEL_VERSION = re.compile(r"^[a-z_]+-(?P<version>[^-]+)-")


@dataclass(frozen=True)
class Wheelhouse:
    """The built wheels of both packages, of one version."""

    directory: Path
    addon: Path
    daemon: Path

    @property
    def version(self) -> str:
        match = _WHEEL_VERSION.match(self.addon.name)
        assert match is not None, self.addon
        return match["version"]


def wheelhouse() -> Wheelhouse:
    """The wheels of ``scripts/build-wheels.sh``, or a failure that says how to build them."""
    directory = Path(os.environ.get("TRIGGER_RELAY_DIST", REPO_ROOT / "dist"))
    addon = sorted(directory.glob("django_trigger_relay-*.whl"))
    daemon = sorted(directory.glob("trigger_relay-*.whl"))
    if len(addon) != 1 or len(daemon) != 1:
        raise HarnessError(
            f"{directory} must hold one wheel of each package (found {addon + daemon}): "
            "run scripts/build-wheels.sh (make dist) first"
        )
    return Wheelhouse(directory, addon[0], daemon[0])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(args: list[str | Path], *, timeout: float = 600, **kwargs: object) -> str:
    """Run a command to completion; its output, or a failure that shows it."""
    result = subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise HarnessError(f"{' '.join(map(str, args))} exited {result.returncode}:\n{output}")
    return output


def package_index(directory: Path, wheels: Wheelhouse) -> Path:
    """A folder that pip can use as the whole package index: the site's requirements and the
    add-on's with its ``daemon`` extra, at the pins of ``requirements.lock``, and the two
    built wheels (checked to be the very files of ``wheels``, not a namesake from PyPI)."""
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--constraint",
            REQUIREMENTS_LOCK,
            "--find-links",
            wheels.directory,
            "--dest",
            directory,
            *SITE_REQUIREMENTS,
            f"django-trigger-relay[daemon]=={wheels.version}",
        ]
    )
    for built in (wheels.addon, wheels.daemon):
        fetched = directory / built.name
        if not fetched.is_file() or _sha256(fetched) != _sha256(built):
            raise HarnessError(f"pip did not resolve {built.name} to the built wheel")
    return directory


@dataclass(frozen=True)
class SiteVenv:
    """A virtualenv of a site, installed from a local package index only."""

    root: Path
    index: Path

    @classmethod
    def create(cls, root: Path, index: Path) -> SiteVenv:
        run([sys.executable, "-m", "venv", root])
        return cls(root, index)

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name

    def pip_install(self, *requirements: str) -> str:
        """``pip install`` from the local index only, with the lock's pins."""
        return run(
            [
                self.python,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-index",
                "--find-links",
                self.index,
                "--constraint",
                REQUIREMENTS_LOCK,
                *requirements,
            ]
        )

    def environment(self, **variables: str) -> dict[str, str]:
        """A clean environment, as a site's service manager gives its processes: the venv's
        bin/ first on PATH, no PYTHONPATH, no variable of the test process (its
        DJANGO_SETTINGS_MODULE and TRIGGER_RELAY_* values) but ``variables``."""
        return {
            "PATH": os.pathsep.join([str(self.root / "bin"), "/usr/bin", "/bin"]),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            **variables,
        }
