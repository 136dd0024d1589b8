"""Peak windows, the in-task request gate, and the one retry loop."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest

from gradesync.config import PeakWindow
from gradesync.oneroster import (
    ExtractionError,
    RequestThrottle,
    RetryableError,
    RetryPolicy,
    call_with_retries,
)
from gradesync.oneroster.errors import CredentialsError
from gradesync.oneroster.throttle import in_peak_window, request_concurrency

CHICAGO_PEAK = PeakWindow(start="07:00", end="16:00", timezone="America/Chicago")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 11, 30, 14, 0, tzinfo=timezone.utc), 1),  # Mon 08:00 in Chicago: peak
        (datetime(2026, 11, 30, 12, 59, tzinfo=timezone.utc), 5),  # Mon 06:59 in Chicago
        (datetime(2026, 11, 30, 22, 0, tzinfo=timezone.utc), 5),  # Mon 16:00 in Chicago: window ended
        (datetime(2026, 11, 29, 15, 0, tzinfo=timezone.utc), 5),  # Sunday
        (datetime(2026, 12, 1, 8, 0), 5),  # naive = UTC: 02:00 in Chicago
    ],
)
def test_request_concurrency_follows_the_peak_window(now: datetime, expected: int) -> None:
    assert request_concurrency(5, CHICAGO_PEAK, now) == expected
    assert request_concurrency(5, None, now) == 5


def test_window_over_midnight_belongs_to_the_day_it_starts() -> None:
    night = {"start": "22:00", "end": "02:00", "timezone": "UTC", "weekdays": ["fri"]}
    assert in_peak_window(night, datetime(2026, 12, 4, 23, 0, tzinfo=timezone.utc))  # Fri 23:00
    assert in_peak_window(night, datetime(2026, 12, 5, 1, 0, tzinfo=timezone.utc))  # Sat 01:00
    assert not in_peak_window(night, datetime(2026, 12, 5, 23, 0, tzinfo=timezone.utc))  # Sat 23:00
    with pytest.raises(ValueError):
        request_concurrency(0)


def test_throttle_caps_in_flight_requests() -> None:
    throttle = RequestThrottle(3)
    barrier = threading.Barrier(8, timeout=10)

    def work() -> None:
        barrier.wait()
        with throttle.slot():
            time.sleep(0.02)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert throttle.peak == 3 and throttle.in_flight == 0


def test_throttle_backs_off_on_429_and_recovers() -> None:
    now = [100.0]
    throttle = RequestThrottle(5, clock=lambda: now[0], recover_after=3)
    throttle.throttled(2.0)
    throttle.throttled(2.0)  # same burst: counted once
    assert throttle.limit == 4
    now[0] += 2.5
    throttle.throttled(None)
    assert throttle.limit == 3
    for _ in range(3):
        throttle.succeeded()
    assert throttle.limit == 4


def test_shared_pause_delays_every_request() -> None:
    throttle = RequestThrottle(2)
    throttle.throttled(0.3)
    started = time.monotonic()
    with throttle.slot():
        pass
    assert time.monotonic() - started >= 0.28


def test_retry_after_is_honoured_and_backoff_is_bounded() -> None:
    waits: list[float] = []
    outcomes = iter([
        RetryableError("429", retry_after=7, kind="429"),
        RetryableError("HTTP 503", kind="503"),
        RetryableError("HTTP 503", kind="503"),
        RetryableError("timeout", kind="timeout"),
    ])

    def attempt() -> str:
        error = next(outcomes, None)
        if error is not None:
            raise error
        return "ok"

    seen: list[tuple[str, int]] = []
    policy = RetryPolicy(backoff_initial=1.0, backoff_max=3.0)
    result = call_with_retries(attempt, what="GET x", policy=policy, sleep=waits.append,
                               on_retry=lambda e, w, n: seen.append((e.kind, n)))
    assert result == "ok"
    assert 7 <= waits[0] <= 8  # Retry-After, plus a little jitter
    assert 0.5 <= waits[1] <= 1.0 and 1.0 <= waits[2] <= 2.0 and 1.5 <= waits[3] <= 3.0  # exponential, capped
    assert seen == [("429", 1), ("503", 2), ("503", 3), ("timeout", 4)]


def test_retries_are_bounded_with_a_clear_failure() -> None:
    calls = []

    def always_503() -> None:
        calls.append(1)
        raise RetryableError("HTTP 503 (server_busy)", kind="503")

    with pytest.raises(ExtractionError, match=r"GET results: gave up after 4 attempts \(4× error\); last error: "
                                              r"HTTP 503 \(server_busy\)"):
        call_with_retries(always_503, what="GET results", policy=RetryPolicy(max_attempts=4),
                          sleep=lambda s: None)
    assert len(calls) == 4


def test_throttling_has_its_own_budget_and_other_errors_are_not_retried() -> None:
    calls = []

    def throttled_then_ok() -> str:
        calls.append(1)
        if len(calls) < 10:
            raise RetryableError("429", retry_after=0, kind="429")
        return "ok"

    assert call_with_retries(throttled_then_ok, what="x", policy=RetryPolicy(max_attempts=2),
                             sleep=lambda s: None) == "ok"

    def bad_credentials() -> None:
        calls.append(1)
        raise CredentialsError("nope")

    calls.clear()
    with pytest.raises(CredentialsError):
        call_with_retries(bad_credentials, what="x", sleep=lambda s: None)
    assert len(calls) == 1
