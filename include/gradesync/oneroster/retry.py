"""The one retry loop of the code base (tenacity underneath).

Everything that can fail transiently while talking to IC (token fetch, page GET, body decoding) is
one *attempt* function that raises ``RetryableError`` for a failure worth repeating; anything else
propagates at once. Waits: ``Retry-After`` when IC sent one (429), else exponential backoff with
full jitter. Budgets are separate, because a 429 means "later", not "broken": a request may be
throttled ``max_throttled`` times but fail for other reasons only ``max_attempts - 1`` times, then
the caller gets an ``ExtractionError`` naming what was tried and the last reason.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from gradesync.oneroster.errors import ExtractionError, RetryableError

T = TypeVar("T")

THROTTLED = "429"
REAUTH = "401"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the retry loop; the defaults ride out minutes of IC trouble, not hours."""

    max_attempts: int = 8
    max_throttled: int = 30
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 300.0


OnRetry = Callable[[RetryableError, float, int], None]


def call_with_retries(
    attempt: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy | None = None,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``attempt`` until it returns, raises a non-retryable error, or a budget is spent.

    ``on_retry(error, wait_seconds, attempt_number)`` is called before each wait (for logs and stats).
    """
    policy = policy or RetryPolicy()
    rand = rng or random.Random()
    failures: Counter[str] = Counter()

    def _error(state: tenacity.RetryCallState) -> RetryableError:
        exc = state.outcome.exception() if state.outcome else None
        assert isinstance(exc, RetryableError)
        return exc

    def _kind(exc: RetryableError) -> str:
        return "throttled" if exc.kind == THROTTLED else "reauth" if exc.kind == REAUTH else "error"

    def _retry(state: tenacity.RetryCallState) -> bool:
        # tenacity asks "retry?" first, then computes the wait, then "stop?": count failures here
        exc = state.outcome.exception() if state.outcome else None
        if not isinstance(exc, RetryableError):
            return False
        failures[_kind(exc)] += 1
        return True

    def _stop(state: tenacity.RetryCallState) -> bool:
        kind = _kind(_error(state))
        if kind == "throttled":
            return failures["throttled"] >= policy.max_throttled
        if kind == "reauth":
            return failures["reauth"] > 2  # the client itself allows one re-auth per request
        return failures["error"] >= policy.max_attempts

    def _wait(state: tenacity.RetryCallState) -> float:
        exc = _error(state)
        if exc.kind == REAUTH:
            return 0.0
        if exc.retry_after is not None:
            base = min(max(exc.retry_after, 0.0), policy.retry_after_max)
            return base + rand.uniform(0, min(1.0, base * 0.1 + 0.05))
        ceiling = min(policy.backoff_max, policy.backoff_initial * 2 ** max(failures["error"] - 1, 0))
        return rand.uniform(ceiling / 2, ceiling)

    def _before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None:
            on_retry(_error(state), state.upcoming_sleep, state.attempt_number)

    retrying = tenacity.Retrying(
        retry=_retry,
        stop=_stop,
        wait=_wait,
        before_sleep=_before_sleep,
        sleep=sleep,
        reraise=False,
    )
    try:
        return retrying(attempt)
    except tenacity.RetryError as exc:
        last = exc.last_attempt.exception()
        reason = last.reason if isinstance(last, RetryableError) else repr(last)
        tried = ", ".join(f"{n}× {k}" for k, n in failures.items())
        raise ExtractionError(
            f"{what}: gave up after {exc.last_attempt.attempt_number} attempts ({tried}); last error: {reason}"
        ) from None
