"""Respect IC's concurrency rules: at most N requests in flight, serial during peak hours.

Two levels enforce the per-integration limit. Across tasks, an Airflow pool ``gradesync_<name>`` has
``max_concurrent_requests`` slots and every extract task claims as many slots as it may run requests;
inside a task, ``RequestThrottle`` caps requests in flight at ``request_concurrency(...)`` and makes
every request wait out a ``Retry-After`` that any one of them received, so a 429 slows the whole
task instead of each thread hammering IC on its own schedule.

Peak hours: when every extract task claims all the pool's slots (what the DAG factory does), one
extract task runs at a time and ``request_concurrency`` returning 1 makes IC see serial requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _get(window: Any, name: str, default: Any = None) -> Any:
    if isinstance(window, Mapping):
        return window.get(name, default)
    return getattr(window, name, default)


def _as_time(value: Any) -> dtime:
    if isinstance(value, dtime):
        return value
    return dtime.fromisoformat(str(value))


def in_peak_window(peak_window: Any, now: datetime) -> bool:
    """Whether ``now`` falls in the window (``start``, ``end``, ``timezone``, ``weekdays``).

    Accepts the config's ``PeakWindow`` model or a mapping with the same keys. A window whose end is
    before its start wraps midnight; its weekday is the day it started.
    """
    if peak_window is None:
        return False
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    tz = ZoneInfo(str(_get(peak_window, "timezone", "UTC") or "UTC"))
    local = now.astimezone(tz)
    start = _as_time(_get(peak_window, "start", "07:00"))
    end = _as_time(_get(peak_window, "end", "16:00"))
    days = [str(d).lower()[:3] for d in (_get(peak_window, "weekdays", None) or _WEEKDAYS[:5])]
    clock = local.time().replace(tzinfo=None)
    if start <= end:
        return start <= clock < end and _WEEKDAYS[local.weekday()] in days
    if clock >= start:
        return _WEEKDAYS[local.weekday()] in days
    if clock < end:
        return _WEEKDAYS[(local.weekday() - 1) % 7] in days
    return False


def request_concurrency(limit: int, peak_window: Any = None, now: datetime | None = None) -> int:
    """Requests one extract task may have in flight: ``limit`` off-peak, 1 inside the peak window."""
    if limit < 1:
        raise ValueError(f"max_concurrent_requests must be at least 1, got {limit}")
    if now is None:
        now = datetime.now(timezone.utc)
    return 1 if in_peak_window(peak_window, now) else int(limit)


class RequestThrottle:
    """Caps requests in flight, waits out a shared Retry-After, and backs off its own concurrency on 429.

    On a 429 the limit drops by one (once per Retry-After pause, so a burst of 429s counts once);
    after ``recover_after`` successful requests in a row it grows back by one, up to ``max_concurrency``.
    IC does not publish whether a 429 means "too fast" or "too many at once": backing off both ways
    stops a burst quickly and costs little when the cause was the rate.
    """

    def __init__(self, max_concurrency: int, *, clock: Callable[[], float] = time.monotonic,
                 recover_after: int = 20):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.limit = max_concurrency
        self.recover_after = recover_after
        self._cond = threading.Condition()
        self._clock = clock
        self._not_before = 0.0
        self._successes = 0
        self.in_flight = 0
        self.peak = 0

    def throttled(self, retry_after: float | None) -> None:
        """IC answered 429: pause every request of this throttle and run one fewer at a time."""
        with self._cond:
            now = self._clock()
            if now >= self._not_before:  # first 429 of this pause: back off once
                self.limit = max(1, self.limit - 1)
            self._not_before = max(self._not_before, now + max(0.0, retry_after if retry_after is not None else 1.0))
            self._successes = 0

    def succeeded(self) -> None:
        with self._cond:
            self._successes += 1
            if self._successes >= self.recover_after and self.limit < self.max_concurrency:
                self.limit += 1
                self._successes = 0
                self._cond.notify_all()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one request slot for the duration of one HTTP exchange."""
        with self._cond:
            while True:
                delay = self._not_before - self._clock()
                if self.in_flight < self.limit and delay <= 0:
                    break
                self._cond.wait(timeout=min(max(delay, 0.05), 1.0) if delay > 0 else 1.0)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            with self._cond:
                self.in_flight -= 1
                self._cond.notify()
