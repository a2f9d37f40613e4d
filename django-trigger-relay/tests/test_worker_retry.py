"""How the worker waits for Temporal at start: the backoff between
attempts and the one-line reason each failed attempt logs. The attempts themselves, against a
real Temporal, are in test_worker_process.py."""

from __future__ import annotations

import itertools

import pytest

from trigger_relay.worker.process import BACKOFF_INITIAL_SECONDS
from trigger_relay.worker.process import BACKOFF_MAX_SECONDS
from trigger_relay.worker.process import _backoff
from trigger_relay.worker.process import _gist


def test_the_backoff_doubles_from_one_second_to_thirty() -> None:
    delays = list(itertools.islice(_backoff(), 12))
    ceilings = [min(BACKOFF_INITIAL_SECONDS * 2**n, BACKOFF_MAX_SECONDS) for n in range(12)]
    assert ceilings[:6] == [1, 2, 4, 8, 16, 30]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        # Each wait is drawn from the upper half of its ceiling (jitter, never zero).
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize(
    ("error", "gist"),
    [
        (
            "Failed client connect: Server connection error: tonic::transport::Error(Transport, "
            'ConnectError(ConnectError("tcp connect error", 127.0.0.1:1, Os { code: 111, kind: '
            'ConnectionRefused, message: "Connection refused" })))',
            "Connection refused",
        ),
        (
            "Failed client connect: Server connection error: tonic::transport::Error(Transport, "
            'ConnectError(ConnectError("dns error", Custom { kind: Uncategorized, error: '
            '"failed to lookup address information: Name or service not known" })))',
            "failed to lookup address information: Name or service not known",
        ),
        (
            "Worker validation failed: Namespace x was not found or otherwise could not be "
            'described: Status { code: NotFound, message: "Namespace x is not found.", '
            'details: b"\\x08\\x05", metadata: MetadataMap { headers: {"content-type": '
            '"application/grpc"} }, source: None }',
            "Namespace x is not found.",
        ),
        (
            "Failed client connect: Server connection error: "
            "tonic::transport::Error(Transport, PrivateKeyParseError)",
            "Server connection error: tonic::transport::Error(Transport, PrivateKeyParseError)",
        ),
        ("line one\n  line two", "line one line two"),
    ],
)
def test_an_sdk_error_is_cut_to_its_gist_on_one_line(error: str, gist: str) -> None:
    assert _gist(error) == gist
