"""The admin, in a real browser (guarantees §2.1, §2.2, §2.3, §3.4).

An operator's whole journey through the example site's admin in Debian's Chromium: log in,
compose a trigger in dj-triggers' polymorphic inlines (event "task completed" for important
tasks, condition "action count" no more than 2, action "send email", after the demo's
"Important task completed: congratulate once"), route it to Temporal with the add-on's admin action,
add a task and complete it, then watch the outbox row reach ``done`` in the add-on's outbox
changelist and the mail in the site's sent mail. Every part is real: PostgreSQL, the
Temporal dev server, the daemon binary, the Python worker (``manage.py
trigger_relay_worker``), the site served over HTTP by pytest-django's live server.

A screenshot of the outbox changelist is kept in the artifacts directory (``artifacts/browser``
at the repository root, or ``$TRIGGER_RELAY_ARTIFACTS_DIR``); its path is printed.
"""

from __future__ import annotations

from collections.abc import Callable
from email import message_from_bytes
from email.header import decode_header
from email.header import make_header
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from selenium.common.exceptions import StaleElementReferenceException
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select
from selenium.webdriver.support.ui import WebDriverWait
from tests_support.harness import FINAL_STATES
from tests_support.harness import Harness

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TRIGGER_NAME = "Task completed: well done"
SUBJECT = "Well done, {{ user.username }}!"
BODY = "You completed “{{ task_title }}”."
TASK_TITLE = "Water the plants"

#: Waits for a page, an element, a message: generous, for a loaded two-core machine.
PAGE_WAIT = 60
#: From the click that completes the task to the row's ``done``: the NOTIFY, the daemon's
#: start, the workflow, the Python activity and the outcome written back.
OUTBOX_WAIT = 180


class Admin:
    """The example site's Django admin in the browser."""

    def __init__(self, browser: WebDriver, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url

    def wait(self, timeout: float = PAGE_WAIT) -> WebDriverWait[WebDriver]:
        return WebDriverWait(self.browser, timeout, poll_frequency=0.25)

    def open(self, path: str) -> None:
        self.browser.get(self.base_url + path)
        self.wait().until(lambda b: b.execute_script("return document.readyState") == "complete")

    def find(self, css: str, within: WebElement | None = None) -> WebElement:
        return self.wait().until(
            lambda b: (within or b).find_element(By.CSS_SELECTOR, css), f"no element {css!r}"
        )

    def visible(self, css: str) -> WebElement:
        return self.wait().until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def type(self, css: str, text: str, within: WebElement | None = None) -> None:
        field = self.find(css, within)
        field.clear()
        field.send_keys(text)

    def submit(self, css: str) -> None:
        """Click a submit button and wait until the next page has replaced this one."""
        old_page = self.find("html")
        self.find(css).click()
        self.wait().until(ec.staleness_of(old_page))
        self.wait().until(lambda b: b.execute_script("return document.readyState") == "complete")

    def success_message(self) -> str:
        errors = self.browser.find_elements(By.CSS_SELECTOR, ".errornote, .errorlist")
        assert not errors, "the admin refused the form: " + " | ".join(e.text for e in errors)
        return self.visible("ul.messagelist li.success").text

    def log_in(self, username: str, password: str) -> None:
        self.open("/admin/login/?next=/admin/")
        self.type("#id_username", username)
        self.type("#id_password", password)
        self.submit("#login-form [type=submit]")
        self.visible("#user-tools")

    def add_polymorphic_inline(self, model_name: str) -> WebElement:
        """Click the inline's "Add another …" and pick ``model_name`` in its type menu
        (django-polymorphic's JavaScript); returns the new form."""
        group = self.find(
            f"div.js-inline-polymorphic-admin-formset:has(#{model_name}-empty)",
        )
        prefix = group.get_attribute("id").removesuffix("-group")
        before = len(group.find_elements(By.CSS_SELECTOR, f"div.inline-related[id^='{prefix}-']"))
        group.find_element(By.CSS_SELECTOR, ".polymorphic-add-choice > a").click()
        choice = self.wait().until(
            ec.visibility_of(group.find_element(By.CSS_SELECTOR, f"a[data-type='{model_name}']"))
        )
        choice.click()
        return self.find(f"#{prefix}-{before}", within=group)

    def run_action(self, row_text: str, action: str) -> str:
        """Tick the changelist row whose link reads ``row_text``, run ``action``; returns
        the success message."""
        row = self.find_row(row_text)
        row.find_element(By.CSS_SELECTOR, "input.action-select").click()
        Select(self.find("select[name=action]")).select_by_value(action)
        self.submit("button[name=index]")
        return self.success_message()

    def find_row(self, text: str) -> WebElement:
        return self.wait().until(
            lambda b: b.find_element(
                By.XPATH, f"//table[@id='result_list']//tr[./*[normalize-space()='{text}']]"
            ),
            f"no changelist row {text!r}",
        )

    def column(self, field: str) -> list[str]:
        cells = self.browser.find_elements(By.CSS_SELECTOR, f"#result_list td.field-{field}")
        return [cell.text.strip() for cell in cells]


def outbox_states_after_reload(admin: Admin, services: Harness) -> list[str]:
    dead = [s.name for s in services.services if s.process is not None and not s.alive()]
    if dead:
        logs = "\n".join(service.tail() for service in services.services)
        raise AssertionError(f"{', '.join(dead)} exited\n{logs}")
    admin.open("/admin/trigger_relay/outboxrow/")
    try:
        return admin.column("state")
    except StaleElementReferenceException:
        return []


def sent_mail(mail_dir: Path) -> list[dict[str, str]]:
    messages = []
    for path in sorted(mail_dir.glob("*.log")):
        for raw in path.read_bytes().split(b"-" * 79):
            if raw.strip():
                message = message_from_bytes(raw.strip())
                messages.append(
                    {
                        "to": message["To"],
                        "subject": str(make_header(decode_header(message["Subject"]))),
                        "body": message.get_payload(decode=True).decode().strip(),
                    }
                )
    return messages


def test_operator_composes_routes_and_watches_a_trigger(
    browser: WebDriver,
    live_server: Any,
    services: Harness,
    mail_dir: Path,
    artifact: Callable[[str], Path],
) -> None:
    users = get_user_model().objects
    users.create_superuser("admin", "admin@example.com", "admin-password")
    users.create_user("demo", "demo@example.com", "demo-password")
    admin = Admin(browser, live_server.url)

    admin.log_in("admin", "admin-password")

    # Compose the trigger in dj-triggers' polymorphic inlines.
    admin.open("/admin/triggers/trigger/add/")
    admin.type("#id_name", TRIGGER_NAME)
    admin.find("#id_is_enabled").click()
    # After the demo's "Important task completed: congratulate once". Each inline form gets
    # a value other than its default: an extra form left as the admin shows it is
    # "unchanged", and Django's formsets do not save it (ActionCountCondition's limit
    # defaults to 1).
    event = admin.add_polymorphic_inline("taskcompletedevent")
    admin.find("input[name$='-important_only']", event).click()
    condition = admin.add_polymorphic_inline("actioncountcondition")
    admin.type("input[name$='-limit']", "2", condition)
    action = admin.add_polymorphic_inline("sendemailaction")
    admin.type("input[name$='-subject']", SUBJECT, action)
    admin.type("textarea[name$='-body']", BODY, action)
    admin.submit("input[name=_save]")
    assert "was added successfully" in admin.success_message()
    admin.find_row(TRIGGER_NAME)
    assert admin.column("get_events") == ["Task completed"]
    assert admin.column("get_conditions") == ["Action count no more than 2"]
    assert admin.column("get_action") == ["Send email"]
    assert admin.column("is_enabled") == [""]  # the icon, checked below
    assert admin.find("td.field-is_enabled img").get_attribute("alt") == "True"
    # TRIGGER_RELAY_DEFAULT_ROUTE until routed.
    assert admin.column("relay_route_display") == ["celery (default)"]

    # Route it to Temporal with the add-on's admin action.
    message = admin.run_action(TRIGGER_NAME, "route_to_temporal")
    assert message == "Routed 1 trigger(s) to temporal; 0 already were."
    assert admin.column("relay_route_display") == ["temporal (database)"]

    # Add an important task for the demo user and complete it: the site's Task.complete() fires.
    admin.open("/admin/tasks/task/add/")
    Select(admin.find("#id_user")).select_by_visible_text("demo")
    admin.type("#id_title", TASK_TITLE)
    admin.find("#id_important").click()
    admin.submit("input[name=_save]")
    assert "was added successfully" in admin.success_message()
    assert admin.run_action(TASK_TITLE, "complete_tasks") == "Completed 1 task(s)."

    # The outbox changelist, reloaded until the row is done (or failed: no point waiting).
    try:
        states = WebDriverWait(browser, OUTBOX_WAIT, poll_frequency=1).until(
            lambda _: (
                states
                if (states := outbox_states_after_reload(admin, services))
                and set(states) <= FINAL_STATES
                else None
            )
        )
    except TimeoutException:
        logs = "\n".join(service.tail() for service in services.services)
        pytest.fail(
            f"the outbox row did not reach a final state within {OUTBOX_WAIT}s: "
            f"states {admin.column('state')} in the outbox changelist\n{logs}"
        )
    screenshot = artifact("outbox-changelist.png")
    assert browser.save_screenshot(str(screenshot))
    print(f"\nscreenshot of the outbox changelist: {screenshot}")
    assert states == ["done"], (states, services.worker.tail(), services.daemon.tail())
    assert screenshot.stat().st_size > 0
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The mail, in the site's sent mail (SentEmail admin) and as sent by the worker.
    admin.open("/admin/tasks/sentemail/")
    assert admin.column("subject") == ["Well done, demo!"]
    assert admin.column("trigger_name") == [TRIGGER_NAME]
    assert sent_mail(mail_dir) == [
        {
            "to": "demo@example.com",
            "subject": "Well done, demo!",
            "body": f"You completed “{TASK_TITLE}”.",
        }
    ]
