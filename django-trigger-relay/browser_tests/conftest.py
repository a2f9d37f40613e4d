"""Fixtures of the browser test: Debian's Chromium driven by Selenium, the example site's
admin served by pytest-django's live server, and the product's processes (Temporal dev
server, the trigger-relay daemon, the Python worker) from tests/tests_support/harness.py.

Nothing is downloaded: Chromium and chromedriver are Debian's (chromium, chromium-driver;
scripts/install-debian-packages.sh installs them), passed to Selenium by path so that
Selenium Manager never runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The example site's Celery app, as in tests/conftest.py (triggers are on Celery until routed).
import example_site  # noqa: F401
import pytest
from django.conf import settings
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from tests_support.harness import REPO_ROOT
from tests_support.harness import Harness

CHROMIUM = Path(os.environ.get("TRIGGER_RELAY_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("TRIGGER_RELAY_CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS_DIR = Path(
    os.environ.get("TRIGGER_RELAY_ARTIFACTS_DIR", REPO_ROOT / "artifacts" / "browser")
)
PACKAGE_DIR = Path(__file__).resolve().parents[1]

# The live server on IPv4 loopback (pytest-django reads this when --liveserver is not given).
os.environ.setdefault("DJANGO_LIVE_TEST_SERVER_ADDRESS", "127.0.0.1")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"browser: {CHROMIUM} via {CHROMEDRIVER}",
        f"artifacts: {ARTIFACTS_DIR}",
        f"test database: test_{settings.DATABASES['default']['NAME']}",
    ]


#: Files the tests saved, listed at the end of the run.
SAVED: list[Path] = []


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS_DIR


@pytest.fixture
def artifact(artifacts_dir: Path) -> Callable[[str], Path]:
    """``artifact(name)``: a path in the artifacts directory (an older file of that name is
    removed), listed at the end of the run."""

    def path(name: str) -> Path:
        saved = artifacts_dir / name
        saved.unlink(missing_ok=True)
        SAVED.append(saved)
        return saved

    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    existing = [path for path in SAVED if path.exists()]
    if existing:
        terminalreporter.section("browser test artifacts")
        for path in existing:
            terminalreporter.write_line(f"{path} ({path.stat().st_size} bytes)")


@pytest.fixture
def browser(artifact: Callable[[str], Path], request: pytest.FixtureRequest) -> Iterator[Any]:
    """Headless Chromium as root, with a fresh profile; on a failed test, its last page is
    saved to the artifacts directory."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            pytest.fail(f"{path} is missing: run scripts/install-debian-packages.sh as root")
    profile = Path(tempfile.mkdtemp(prefix="trigger-relay-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",  # runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        # No connection of Chromium's own: this machine's network refuses them.
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    log = artifact("chromedriver.log")
    service = ChromeService(executable_path=str(CHROMEDRIVER), log_output=str(log))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        failed_png = artifact(f"{request.node.name}-failed.png")
        failed_html = artifact(f"{request.node.name}-failed.html")
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            driver.save_screenshot(str(failed_png))
            failed_html.write_text(driver.page_source)
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def mail_dir(tmp_path: Path) -> Path:
    """Where the Python worker writes the mail it sends (one file per message)."""
    path = tmp_path / "mail"
    path.mkdir()
    return path


@pytest.fixture
def services(tmp_path: Path, mail_dir: Path, transactional_db: None) -> Iterator[Harness]:
    """Temporal dev server, daemon and Python worker on the test database; the worker runs
    with these settings, its mail going to ``mail_dir``."""
    harness = Harness(tmp_path, run_id=str(settings.RUN_ID))
    harness.worker.env.update(
        DJANGO_SETTINGS_MODULE="browser_tests.settings",
        PYTHONPATH=os.pathsep.join([harness.worker.env["PYTHONPATH"], str(PACKAGE_DIR)]),
        TRIGGER_RELAY_BROWSER_MAIL_DIR=str(mail_dir),
    )
    try:
        harness.start()
        yield harness
    finally:
        harness.stop()
