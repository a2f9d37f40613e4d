"""The Grafana dashboard, proven on a real Prometheus (guarantees §6.2, §6.5).

Real processes: a Temporal dev server, the daemon and ``manage.py trigger_relay_worker`` with
``TRIGGER_RELAY_WORKER_METRICS_ADDR`` set (tests_support/harness.py), and Debian's
``prometheus`` (/usr/bin/prometheus, installed by scripts/install-debian-packages.sh) on a
free port with a temporary configuration and storage, scraping both every second under the
job names below. Firings are made done, skipped (condition false) and failed (an action that
raises), a row is failed by the daemon itself (bad_payload) and the done one is replayed; then
every variable query and every panel target of grafana/trigger-relay.json (read from the
file: new panels are covered without editing this test) is evaluated through Prometheus' HTTP
API, with the variables substituted by the values their own queries returned, and each must
return at least one series (:data:`EMPTY_ALLOWED` lists the exceptions, none today); the
targets of :data:`NONZERO` must also show a value above 0. The daemon's /metrics carries the
Temporal SDK's metrics of its own workflow worker too (the "Workflow worker (daemon)" row):
the run waits until Prometheus has scraped its workflow tasks.

Grafana's built-in interval variables have no value outside Grafana; they are substituted by
the concrete values of :data:`GRAFANA_BUILTINS` (``$__rate_interval`` = 30s: at a 1s scrape
interval a 30s window holds plenty of samples for rate() and increase(), even on a loaded
machine; ``$__range`` = 10m: longer than the whole run).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import override_settings
from tests_support.harness import DJANGO_TASK_QUEUE
from tests_support.harness import FINAL_STATES
from tests_support.harness import REPO_ROOT
from tests_support.harness import Harness
from tests_support.harness import HarnessError
from tests_support.harness import Service
from tests_support.harness import wait_until
from tests_support.processes import free_port
from tests_support.processes import tail
from tests_support.worker_metrics import DAEMON_ENV
from tests_support.worker_metrics import fire
from tests_support.worker_metrics import outcome_triggers
from tests_support.worker_metrics import start_with_worker_metrics

from trigger_relay.models import OutboxRow

User = get_user_model()

DASHBOARD = REPO_ROOT / "grafana" / "trigger-relay.json"
PROMETHEUS_BIN = Path("/usr/bin/prometheus")

#: Scrape job names. The dashboard's variables take whatever jobs export its metrics
#: (``label_values(trigger_relay_ready, job)``, ``label_values(
#: trigger_relay_worker_ledger_skips_total, job)``); these are the names of
#: deploy/prometheus/prometheus.yml.
DAEMON_JOB = "trigger-relay"
WORKER_JOB = "trigger-relay-worker"
SCRAPE_INTERVAL = "1s"

#: Grafana's built-in variables, as concrete values that fit a run of a minute or two scraped
#: every second (Grafana computes $__rate_interval as max($__interval + scrape interval,
#: 4 x scrape interval); 30s is wider, so that a loaded machine's late scrapes still leave
#: two samples in every window).
GRAFANA_BUILTINS = {
    "__rate_interval": "30s",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "10m",
    "__range_s": "600",
    "__range_ms": "600000",
}

#: Panel targets that may return no series in this run: (panel title, refId) -> why. Keep it
#: empty unless a panel cannot be made non-empty cheaply; the daemon exports every labelled
#: series at 0 from the start and the run below makes the worker's failure series exist.
EMPTY_ALLOWED: dict[tuple[str, str], str] = {}

#: Panel targets that must show a value above 0, not only series at 0: (panel title, refId)
#: -> what makes it so. Over $__range, so that the answer does not depend on how long ago
#: (in a busy machine's seconds) the failures happened.
NONZERO: dict[tuple[str, str], str] = {
    ("Rows failed (time range)", "A"): "the row with an empty user pk, failed by the daemon",
    ("Workflow task slots in use and max", "B"): (
        "the daemon's workflow worker exports the Temporal SDK's slot gauges on the daemon's "
        "/metrics (src/sdk_metrics.rs)"
    ),
}

#: Seconds to wait for the firings' outcomes and for Prometheus to have scraped them, on a
#: machine that may be busy.
EVALUATION_TIMEOUT = 180
#: Seconds, after that, for every panel target to answer with series (a series that appeared
#: with the last outcomes needs a scrape or two more for rate()).
SETTLE_TIMEOUT = 60

# -- Prometheus --------------------------------------------------------------------------------


class Prometheus:
    """``/usr/bin/prometheus`` on a free port, its config and TSDB in ``workdir``."""

    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        self.workdir = workdir
        self.config = workdir / "prometheus.yml"
        scrape_configs = [
            {"job_name": job, "static_configs": [{"targets": [address]}]}
            for job, address in targets.items()
        ]
        # JSON is YAML.
        self.config.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": SCRAPE_INTERVAL,
                        "scrape_timeout": SCRAPE_INTERVAL,
                        "evaluation_interval": SCRAPE_INTERVAL,
                    },
                    "scrape_configs": scrape_configs,
                },
                indent=2,
            )
        )
        self.address = ""
        self.service: Service | None = None

    def start(self) -> None:
        """Start it and wait until it is ready; a port taken by another process first (see
        :func:`free_port`) means another port, three times at most."""
        for attempt in range(1, 4):
            self.address = f"127.0.0.1:{free_port()}"
            self.service = Service(
                name="prometheus",
                args=[
                    str(PROMETHEUS_BIN),
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address={self.address}",
                    "--log.level=warn",
                ],
                log=self.workdir / "prometheus.log",
                cwd=self.workdir,
            )
            self.service.start()
            try:
                wait_until(
                    self._ready,
                    timeout=90,
                    interval=0.3,
                    what=f"Prometheus at {self.address} ready",
                    services=[self.service],
                )
                return
            except HarnessError:
                lost_race = "address already in use" in tail(self.service.log, 20).lower()
                self.service.terminate()
                if attempt == 3 or not lost_race:
                    raise

    def stop(self) -> None:
        if self.service is not None:
            self.service.terminate()

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=5) as answer:
                return int(answer.status) == 200
        except OSError:
            return False

    def api(self, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        """GET ``/api/v1/<path>``; the decoded answer, an error answer included."""
        url = f"http://{self.address}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                return json.loads(answer.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as error:  # 400/422: a bad query, explained in the body
            body = error.read().decode(errors="replace")
            try:
                return json.loads(body)  # type: ignore[no-any-return]
            except ValueError:
                return {"status": "error", "error": f"HTTP {error.code}: {body[:500]}"}

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", [("query", expr), ("time", f"{time.time():.3f}")])

    def label_values(self, label: str, match: str | None) -> dict[str, Any]:
        params = [("match[]", match)] if match else []
        return self.api(f"label/{label}/values", params)

    def tail(self) -> str:
        return self.service.tail(40) if self.service else "(prometheus never started)"


# -- the dashboard -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    panel: str
    ref_id: str
    expr: str

    def where(self) -> str:
        return f"panel {self.panel!r} target {self.ref_id}"


def panel_targets(dashboard: dict[str, Any]) -> list[Target]:
    """Every Prometheus target of every panel, those of (collapsed) rows included."""
    found: list[Target] = []

    def walk(panels: list[dict[str, Any]], row: str) -> None:
        for panel in panels:
            title = panel.get("title") or f"#{panel.get('id')}"
            name = f"{row} / {title}" if row and panel.get("type") != "row" else title
            for target in panel.get("targets") or []:
                expr = target.get("expr")
                assert expr, f"panel {name!r} has a target without a PromQL expr: {target}"
                found.append(Target(name, str(target.get("refId", "?")), expr))
            walk(panel.get("panels") or [], title if panel.get("type") == "row" else row)

    walk(dashboard["panels"], "")
    return found


_VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?::(?P<format>\w+))?\}|\[\[(?P<old>\w+)\]\]|\$(?P<plain>\w+)"
)


def regex_value(values: list[str]) -> str:
    """A variable's values in a Prometheus expression, as Grafana writes them: each
    regex-escaped, several as ``(a|b)``."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, variables: dict[str, list[str]], where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("old") or match.group("plain")
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name not in variables:
            raise AssertionError(
                f"{where}: ${name} in {expr!r} is neither a variable of the dashboard defined "
                f"before it nor a built-in this test knows ({', '.join(GRAFANA_BUILTINS)})"
            )
        return regex_value(variables[name])

    return _VARIABLE.sub(replace, expr)


_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<match>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$"
)


def answer_text(answer: dict[str, Any]) -> str:
    text = json.dumps(answer)
    return text if len(text) <= 800 else text[:800] + "..."


def evaluate_variables(dashboard: dict[str, Any], prometheus: Prometheus) -> dict[str, list[str]]:
    """Each variable's values, in the dashboard's order (a later one may use an earlier)."""
    values: dict[str, list[str]] = {}
    for variable in dashboard["templating"]["list"]:
        name, kind = variable["name"], variable["type"]
        where = f"variable ${name}"
        if kind == "datasource":
            assert variable["query"] == "prometheus", f"{where}: {variable}"
            continue
        assert kind == "query", (
            f"{where} is of type {kind!r}; this test evaluates Prometheus query variables "
            "only: extend it"
        )
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        parsed = _LABEL_VALUES.match(query)
        assert parsed, f"{where}: {query!r} is not label_values(...); extend this test for it"
        match = parsed.group("match")
        match = substitute(match, values, where) if match else None
        answer = prometheus.label_values(parsed.group("label"), match)
        assert answer.get("status") == "success", (
            f"{where}: {query!r} (match[]={match!r}): Prometheus answered {answer_text(answer)}"
        )
        found = sorted(answer["data"])
        if variable.get("regex"):
            pattern = re.compile(variable["regex"].strip("/"))
            found = [
                (m.group(1) if m.groups() else m.group(0)) for m in map(pattern.search, found) if m
            ]
        assert found, (
            f"{where}: {query!r} (match[]={match!r}) returned no values; Prometheus answered "
            f"{answer_text(answer)}"
        )
        values[name] = found
    return values


def datasource_refs(dashboard: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every ``datasource`` of the panels, their targets and the variables."""
    refs: list[tuple[str, Any]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            title = panel.get("title") or f"#{panel.get('id')}"
            if "datasource" in panel:
                refs.append((f"panel {title!r}", panel["datasource"]))
            for target in panel.get("targets") or []:
                if "datasource" in target:
                    refs.append(
                        (f"panel {title!r} target {target.get('refId')}", target["datasource"])
                    )
            walk(panel.get("panels") or [])

    walk(dashboard["panels"])
    refs += [
        (f"variable ${v['name']}", v["datasource"])
        for v in dashboard["templating"]["list"]
        if "datasource" in v
    ]
    return refs


def test_every_query_reads_the_datasource_variable() -> None:
    """The dashboard works imported (``__inputs``) and provisioned (deploy/grafana/): every
    query names its data source as ``${DS_PROMETHEUS}``, a variable of type datasource that
    picks the default Prometheus data source when Grafana provisions the file as it is
    (provisioning does not fill ``__inputs``)."""
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus"), variable
    wrong = [
        (where, ref)
        for where, ref in datasource_refs(dashboard)
        if ref is not None and ref != {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    ]
    assert not wrong, f"data sources other than ${{DS_PROMETHEUS}}: {wrong}"
    assert datasource_refs(dashboard), "no datasource references found"


# -- the run -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: Any
) -> Iterator[tuple[Harness, Prometheus]]:
    """Temporal dev server + daemon + a worker serving metrics + Prometheus scraping both."""
    if not PROMETHEUS_BIN.is_file():
        pytest.fail(
            f"{PROMETHEUS_BIN} is missing: run scripts/install-debian-packages.sh (Debian's "
            "prometheus package)",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("dashboard-on-prometheus")
    harness = Harness(workdir, run_id=str(settings.RUN_ID), daemon_env=DAEMON_ENV)
    prometheus: Prometheus | None = None
    try:
        with (
            django_db_blocker.unblock(),
            override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal", TRIGGER_RELAY_ROUTES={}),
        ):
            worker_metrics = start_with_worker_metrics(harness)
            prometheus = Prometheus(
                workdir, {DAEMON_JOB: harness.metrics_addr, WORKER_JOB: worker_metrics}
            )
            prometheus.start()
            yield harness, prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        harness.stop()


def wait(harness: Harness, prometheus: Prometheus, probe: Callable[[], Any], what: str) -> Any:
    return wait_until(
        probe,
        timeout=EVALUATION_TIMEOUT,
        interval=0.5,
        what=what,
        services=[*harness.services, *([prometheus.service] if prometheus.service else [])],
    )


def has_series(prometheus: Prometheus, expr: str) -> bool:
    answer = prometheus.query(expr)
    return answer.get("status") == "success" and bool(answer["data"]["result"])


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_every_panel_and_variable_returns_series(
    stack: tuple[Harness, Prometheus],
) -> None:
    harness, prometheus = stack
    dashboard = json.loads(DASHBOARD.read_text())
    targets = panel_targets(dashboard)
    assert targets, f"no panel targets found in {DASHBOARD}"
    known = {(t.panel.rsplit(" / ", 1)[-1], t.ref_id) for t in targets}
    stale = (set(EMPTY_ALLOWED) | set(NONZERO)) - known
    assert not stale, f"EMPTY_ALLOWED or NONZERO name targets the dashboard lacks: {stale}"

    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal", TRIGGER_RELAY_ROUTES={}):
        harness.begin_test()
        # Both targets scraped before the firings, so that counters have samples from before.
        for job in (DAEMON_JOB, WORKER_JOB):
            wait(
                harness,
                prometheus,
                lambda job=job: has_series(prometheus, f'up{{job="{job}"}} == 1'),
                f"Prometheus scraping job {job!r}",
            )

        user = User.objects.create(username="dashboard", email="dashboard@example.com")
        done_trigger, skipped_trigger, failing_trigger = outcome_triggers("dashboard")
        rows = [
            fire(done_trigger, user),
            fire(skipped_trigger, user),
            fire(failing_trigger, user),
        ]
        ids = [row.pk for row in rows]
        harness.wait(
            lambda: (
                OutboxRow.objects.filter(pk__in=ids, state__in=FINAL_STATES).count() == len(ids)
            ),
            what=f"outcomes of outbox rows {ids}",
            timeout=EVALUATION_TIMEOUT,
            interval=0.25,
        )
        states = dict(OutboxRow.objects.filter(pk__in=ids).values_list("pk", "state"))
        assert [states[pk] for pk in ids] == ["done", "skipped", "failed"], states

        # A row the daemon fails itself (bad_payload: an empty user pk, which only a writer
        # other than the add-on could store): "Rows failed" of the daemon's rows moves.
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at) "
                "VALUES (1, 1, '', now()) RETURNING id"
            )
            (bad_id,) = cursor.fetchone()
        harness.wait(
            lambda: OutboxRow.objects.filter(pk=bad_id, state="failed").exists(),
            what=f"outbox row {bad_id} (empty user pk) failed by the daemon",
            timeout=EVALUATION_TIMEOUT,
        )

        # A replay of the done row: the Replays panel and the ledger's skip move.
        replayed = harness.cli("replay", "--id", str(ids[0]), "--json", timeout=120)
        assert replayed.returncode == 0, replayed.stderr
        harness.wait(
            lambda: OutboxRow.objects.filter(pk=ids[0], generation=1, state="done").exists(),
            what="the replayed row done again",
            timeout=EVALUATION_TIMEOUT,
        )

    # Prometheus has scraped the outcomes: the worker's failed firing, its action error, the
    # replay's ledger skip, the row the daemon failed, and the workflow tasks and
    # record_outcome activities of the daemon's own workflow worker (the Temporal SDK's
    # metrics on the daemon's /metrics).
    wait(
        harness,
        prometheus,
        lambda: has_series(
            prometheus,
            f'trigger_relay_worker_action_errors_total{{job="{WORKER_JOB}"}} >= 1 and on() '
            f'trigger_relay_worker_ledger_skips_total{{job="{WORKER_JOB}"}} >= 1 and on() '
            f'trigger_relay_rows_failed_total{{job="{DAEMON_JOB}", reason="bad_payload"}} >= 1 '
            "and on() sum(temporal_workflow_task_execution_latency_count"
            f'{{job="{DAEMON_JOB}", workflow_type="trigger_workflow"}}) >= 4',
        ),
        "Prometheus having scraped the worker's action error and ledger skip, the "
        "daemon's failed row and the daemon's workflow tasks",
    )

    variables = evaluate_variables(dashboard, prometheus)
    assert DAEMON_JOB in variables.get("job", []), variables
    assert WORKER_JOB in variables.get("worker_job", []), variables
    assert DJANGO_TASK_QUEUE in variables.get("django_task_queue", []), variables

    exprs = {target: substitute(target.expr, variables, target.where()) for target in targets}

    def empty_or_failing() -> dict[Target, dict[str, Any]]:
        bad = {}
        for target, expr in exprs.items():
            answer = prometheus.query(expr)
            if answer.get("status") != "success" or not answer["data"]["result"]:
                bad[target] = answer
        return bad

    # Every series is there within a scrape or two of the outcomes; under load, later. An
    # error (a query Prometheus refuses) does not go away: the others are waited for anyway,
    # so that the report names only what is wrong.
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        bad = empty_or_failing()
        errors = {t for t, answer in bad.items() if answer.get("status") != "success"}
        allowed = {t for t in bad if (t.panel.rsplit(" / ", 1)[-1], t.ref_id) in EMPTY_ALLOWED}
        if set(bad) <= errors | allowed or time.monotonic() > deadline:
            break
        time.sleep(1)

    problems = [
        f"- {target.where()}:\n    expr: {target.expr}\n    sent: {exprs[target]}\n"
        f"    Prometheus answered: {answer_text(answer)}"
        for target, answer in bad.items()
        if target not in allowed or target in errors
    ]
    assert not problems, (
        f"{len(problems)} of the {len(targets)} targets of {DASHBOARD.name} returned no series "
        f"(or an error) on Prometheus at {prometheus.address}, with "
        f"{', '.join(f'${k}={v}' for k, v in GRAFANA_BUILTINS.items())} and the variables "
        f"{variables}:\n" + "\n".join(problems)
    )

    for target, expr in exprs.items():
        reason = NONZERO.get((target.panel.rsplit(" / ", 1)[-1], target.ref_id))
        if reason is None:
            continue
        answer = prometheus.query(expr)
        values = [float(series["value"][1]) for series in answer["data"]["result"]]
        assert any(v > 0 for v in values), (
            f"{target.where()} should be above 0 ({reason}):\n    expr: {target.expr}\n"
            f"    sent: {expr}\n    Prometheus answered: {answer_text(answer)}"
        )
