"""The Django-side activity of ``trigger_workflow``: ``perform_firing`` on the worker's
thread pool (guarantees §3, §5.3), around :func:`trigger_relay.perform.core.perform`.

Failures (guarantees §3.5): dj-triggers on Celery never retries, so an exception raised by the
site's code (an action, a condition, ``get_user_context``) fails the firing at once, as a
non-retryable Temporal error whose message (the row's ``last_error``) names the exception
and where it came from. Only infrastructure errors (a lost or unusable connection, a
deadlock, a serialization failure, a lock wait that ran out) are retried;
``TRIGGER_RELAY_RETRY_APPLICATION_ERRORS`` opts a site into retrying the others too.

Connections (docs/performance.md): each thread of the worker's pool keeps its database connection
for the next activity, ``TRIGGER_RELAY_WORKER_CONN_MAX_AGE`` seconds (default 60) with Django's
health checks, whatever ``CONN_MAX_AGE`` the site sets for its web requests: a connection per
activity costs PostgreSQL more than the firing's own statements. A connection that died between
activities (a failover, ``pg_terminate_backend``, an idle timeout) fails its health check and is
replaced before the firing's first statement, so it costs no retry.

Liveness (guarantees §3.6): while the site's code runs, a thread of the attempt's own heartbeats
to Temporal, so a killed worker's attempt is retried after the workflow's heartbeat timeout
(``TRIGGER_RELAY_PERFORM_HEARTBEAT_TIMEOUT`` of the daemon), not its start-to-close timeout.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import threading
from collections.abc import Iterator
from dataclasses import asdict
from functools import cache
from typing import Any
from typing import cast

from django.db import InterfaceError
from django.db import OperationalError
from django.db import close_old_connections
from django.db import connections
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.exceptions import TemporalError

from trigger_relay import conf
from trigger_relay.perform import metrics
from trigger_relay.perform import outcome
from trigger_relay.perform.core import Caller
from trigger_relay.perform.core import NotYetDispatched
from trigger_relay.perform.core import NotYetDue
from trigger_relay.perform.core import RowFinished
from trigger_relay.perform.core import where_raised
from trigger_relay.perform.site import ForeignSite
from trigger_relay.perform.site import SiteUnknown
from trigger_relay.perform.site import check_site
from trigger_relay.perform.workflow_input import WorkflowInput

PERFORM_FIRING = "trigger_relay.perform_firing"

#: SQLSTATEs retried whatever exception class carries them: serialization failure and
#: deadlock (the transaction lost a race and succeeds when run again), and a lock wait that
#: ran out (``lock_timeout``: the holder may be a worker cut off from the database).
RETRIED_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
#: SQLSTATE class of connection exceptions (08xxx): the connection is gone.
CONNECTION_SQLSTATE_CLASS = "08"

#: ``last_error`` is for reading: a longer exception message is cut.
MAX_ERROR_CHARS = 2000

#: Heartbeats per heartbeat timeout: one lost or late heartbeat does not time out the
#: attempt. (The SDK sends at most one per 80% of the timeout anyway.)
HEARTBEATS_PER_TIMEOUT = 4


@activity.defn(name=PERFORM_FIRING)
def perform_firing(received: dict[str, Any]) -> dict[str, Any]:
    """Sync activity on the worker's thread pool, with Django's connection hygiene
    (guarantees §5.3).

    ``received`` is declared a plain ``dict`` for Temporal's data converter, which would
    otherwise convert and refuse its fields by the types of :class:`WorkflowInput` before
    the activity runs. It is what the relay sends, a :class:`WorkflowInput`, unless someone
    else wrote it: such an input meets the checks here (the site, then the row, in
    :func:`trigger_relay.perform.core.perform`), which perform nothing for an input that is not
    the row's.
    """
    firing = cast(WorkflowInput, received)
    _keep_connections(_conn_max_age())
    # Drops a connection past its age or left unusable; and arms the health check that the
    # next statement runs on a connection kept from an earlier activity.
    close_old_connections()
    try:
        info = activity.info()
        outbox_id = firing.get("outbox_id")
        activity.logger.info(
            "perform firing of outbox row %s (attempt %s)", outbox_id, info.attempt
        )
        # Who calls, as Temporal says: only the row's own workflow run may perform it.
        caller = Caller(info.workflow_id or "", info.workflow_run_id or "")
        try:
            check_site(firing)
            with _heartbeating():
                recorder = outcome.recorder_for(firing, caller.workflow_id, caller.run_id)
                result = outcome.perform_and_record(firing, recorder, caller)
        except (ForeignSite, SiteUnknown, NotYetDispatched) as exc:
            # Not this worker's, or not yet: retried (the attempt performed nothing).
            activity.logger.error("perform firing of outbox row %s: %s", outbox_id, exc)
            raise ApplicationError(str(exc), non_retryable=False) from None
        except NotYetDue as exc:
            activity.logger.warning("perform firing of outbox row %s: %s", outbox_id, exc)
            raise ApplicationError(
                str(exc), non_retryable=False, next_retry_delay=exc.wait
            ) from None
        except RowFinished as exc:
            raise ApplicationError(str(exc), non_retryable=True) from None
        except TemporalError as exc:
            # The SDK's own (a cancellation), or an ApplicationError the site raised to
            # decide retries itself: as raised.
            if isinstance(exc, ApplicationError):
                _count_failure(exc, exc, last_attempt=_is_last_attempt(info))
            raise
        except Exception as exc:
            failure = activity_failure(exc)
            last_attempt = _is_last_attempt(info)
            _count_failure(exc, failure, last_attempt=last_attempt)
            activity.logger.warning(
                "perform firing of outbox row %s (attempt %s): %s; %s",
                outbox_id,
                info.attempt,
                failure.message,
                "not retryable: the firing fails"
                if failure.non_retryable
                else "retryable, but this was the last attempt: the firing fails"
                if last_attempt
                else "retryable",
                exc_info=exc,
            )
            # No cause: the daemon records the innermost message of the failure chain as
            # last_error, and this message is the one that says what and where. The
            # traceback stays the site's, for the Temporal UI.
            raise failure.with_traceback(exc.__traceback__) from None
        metrics.firing(result.outcome, result.reason)
        metrics.ledger_skips(len(result.already_performed))
        return asdict(result)
    finally:
        # A thread of the pool keeps its connection between tasks; drop it if it is broken
        # or past TRIGGER_RELAY_WORKER_CONN_MAX_AGE, as Django does at the end of a request.
        close_old_connections()


def _is_last_attempt(info: activity.Info) -> bool:
    """Whether Temporal retries nothing after this attempt, whatever it raises: its retry
    policy's ``maximum_attempts`` reached (0 is unlimited; the workflow sets it from
    ``TRIGGER_RELAY_PERFORM_MAX_ATTEMPTS``)."""
    policy = info.retry_policy
    return (
        policy is not None
        and policy.maximum_attempts > 0
        and info.attempt >= policy.maximum_attempts
    )


def _count_failure(exc: BaseException, failure: ApplicationError, *, last_attempt: bool) -> None:
    """``trigger_relay_worker_firings_total`` for an attempt that raised: ``failed`` or
    ``retryable`` (as Temporal will treat it: a retryable error on the last attempt fails the
    firing), ``infrastructure_error`` or ``site_error``."""
    metrics.firing(
        metrics.FAILED if failure.non_retryable or last_attempt else metrics.RETRY,
        metrics.INFRASTRUCTURE_ERROR if is_infrastructure_error(exc) else metrics.SITE_ERROR,
    )


def _conn_max_age() -> float:
    """``TRIGGER_RELAY_WORKER_CONN_MAX_AGE``, read for each activity; the default if the value
    is unusable (the worker refuses it at start, so it was changed since)."""
    try:
        return conf.worker_conn_max_age()
    except ValueError as problem:
        activity.logger.error("%s", problem)
        return conf.DEFAULT_WORKER_CONN_MAX_AGE_SECONDS


def _keep_connections(max_age: float) -> None:
    """Give this thread's database connections the worker's ``CONN_MAX_AGE`` and turn
    Django's ``CONN_HEALTH_CHECKS`` on (Django reads both when it opens a connection).

    Per thread, not in ``settings.DATABASES``: every thread's connection of an alias shares
    that dict, so web requests (or a shell) in the same process keep the site's settings. A
    psycopg pool (``OPTIONS["pool"]``, Django 5.1+) is left alone: it keeps its connections
    already, and Django refuses ``CONN_MAX_AGE`` with it.
    """
    for connection in connections.all():
        current = connection.settings_dict
        options = current.get("OPTIONS") or {}
        if isinstance(options, dict) and options.get("pool"):
            continue
        wanted = {"CONN_MAX_AGE": max_age, "CONN_HEALTH_CHECKS": True}
        if all(current.get(key) == value for key, value in wanted.items()):
            continue
        if connection.connection is not None and not connection.in_atomic_block:
            # Opened under other settings (the site's, or an earlier value of ours): its age
            # and health checks were fixed at connect time, so the next one gets these.
            connection.close()
        connection.settings_dict = {**current, **wanted}


def activity_failure(exc: BaseException) -> ApplicationError:
    """The Temporal failure for an exception of :func:`perform`: retryable only for
    infrastructure errors, unless the site opts into retrying application errors."""
    retryable = is_infrastructure_error(exc)
    if not retryable:
        try:
            retryable = conf.retry_application_errors()
        except ValueError as problem:
            # The system check reports it; here the default holds: never repeat an action.
            activity.logger.error("%s", problem)
    # No ``type``: the message already starts with the exception's, and the SDK would print
    # it twice. Nothing matches on it (the workflow's retry policy lists no error types).
    return ApplicationError(failure_message(exc), non_retryable=not retryable)


def failure_message(exc: BaseException) -> str:
    """``ValueError: subject too long (in action 12, SendEmailAction)``: the exception's type
    and message, and where in the firing it was raised when that is known."""
    text = str(exc).strip()
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "…"
    message = f"{_type_name(exc)}: {text}" if text else _type_name(exc)
    where = where_raised(exc)
    return f"{message} (in {where})" if where else message


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def is_infrastructure_error(exc: BaseException) -> bool:
    """A lost or unusable database connection, a deadlock, a serialization failure: an
    attempt that a retry can get through, whatever the site's code did before it.

    The whole chain counts (``__cause__`` and ``__context__``): Django raises its own
    ``OperationalError`` from the driver's, and site code may wrap one in an exception of
    its own (``raise MailError(...) from exc``) or raise while handling it.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _infrastructure_types()):
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and (
            sqlstate in RETRIED_SQLSTATES or sqlstate.startswith(CONNECTION_SQLSTATE_CLASS)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


@cache
def _infrastructure_types() -> tuple[type[BaseException], ...]:
    """Django's ``OperationalError`` and ``InterfaceError`` and the drivers' own (which code
    outside Django's cursor wrapper raises unwrapped): psycopg 3 and psycopg2, either of
    which may be installed. Deadlocks and serialization failures are ``OperationalError``
    subclasses in both drivers."""
    types: list[type[BaseException]] = [OperationalError, InterfaceError]
    for driver in ("psycopg", "psycopg2"):
        try:
            module = importlib.import_module(driver)
        except ImportError:
            continue
        types += [module.OperationalError, module.InterfaceError]
    return tuple(types)


@contextlib.contextmanager
def _heartbeating() -> Iterator[None]:
    """Heartbeat from a thread of our own while the block (the site's code) runs.

    A sync activity cannot heartbeat between the site's statements, and an action may run
    for longer than the heartbeat timeout; the process being alive is what the timeout is
    about. The thread runs in a copy of this thread's context, where the SDK keeps the
    activity's; ``activity.heartbeat`` hands the beat to the worker's event loop
    thread-safely. A stuck action is still bounded by the start-to-close timeout.
    """
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        yield
        return
    interval = timeout.total_seconds() / HEARTBEATS_PER_TIMEOUT
    context = contextvars.copy_context()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                context.run(activity.heartbeat)
            except Exception:
                # The attempt is over for Temporal (the SDK cancels it); nothing to beat for.
                activity.logger.warning("heartbeat failed; no more heartbeats", exc_info=True)
                return

    thread = threading.Thread(
        target=beat, name=f"heartbeat-{activity.info().activity_id}", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
