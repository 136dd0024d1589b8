"""Switchable misbehaviour, so clients can be tested against the failures IC really produces.

Every fault is deterministic: "every Nth API request" counters, or rates drawn from an RNG seeded
with ``seed`` (same request sequence → same faults). Faults apply to OneRoster API requests only,
never to the token endpoint or the ``/_sandbox`` admin endpoints.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np


@dataclass
class FaultConfig:
    """Names are the CLI ``--fault NAME=VALUE`` keys and the admin API's JSON keys."""

    latency_ms: int = 0  # added to every API request
    throttle_every: int = 0  # every Nth API request → 429 with Retry-After
    throttle_rate: float = 0.0  # share of API requests → 429 (seeded)
    max_concurrency: int = 0  # more than N requests in flight → 429 for the extra ones
    retry_after_s: int = 1  # Retry-After seconds sent with every 429
    error_every: int = 0  # every Nth API request → 500
    error_rate: float = 0.0  # share of API requests → 500 (seeded)
    error_status: int = 500  # 500, 502 or 503
    drop_every: int = 0  # every Nth API request: close the socket without answering
    drop_rate: float = 0.0
    truncate_every: int = 0  # every Nth API response is cut short
    truncate_mode: str = "length"  # "length": Content-Length larger than body; "json": valid HTTP, cut JSON
    revoke_after: int = 0  # revoke every token once, on the first served API request after N
    drift_every: int = 0  # every Nth list request with offset > 0 inserts records before the offset
    drift_count: int = 1  # records inserted per drift
    seed: int = 0

    @classmethod
    def from_mapping(cls, values: dict[str, Any], base: FaultConfig | None = None) -> FaultConfig:
        """Build from JSON/CLI values, converting types; unknown keys raise ``ValueError``."""
        known = {f.name: f for f in fields(cls)}
        merged = asdict(base) if base else {}
        for key, raw in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown fault {key!r}; known: {', '.join(known)}")
            kind = type(getattr(cls(), name))
            merged[name] = kind(raw) if kind is not str else str(raw)
        config = cls(**merged)
        if config.truncate_mode not in ("length", "json"):
            raise ValueError("truncate_mode must be 'length' or 'json'")
        return config

    @classmethod
    def from_pairs(cls, pairs: list[str], base: FaultConfig | None = None) -> FaultConfig:
        """``["throttle_every=10", "drop_rate=0.01"]`` → config (the CLI's ``--fault`` form)."""
        values: dict[str, str] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"--fault expects NAME=VALUE, got {pair!r}")
            values[key.strip()] = value.strip()
        return cls.from_mapping(values, base)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaultDecision:
    """What to do with one API request; ``None`` fields mean "behave"."""

    status: int | None = None  # 429 or 5xx answered instead of the real response
    reason: str = ""
    drop: bool = False
    truncate: bool = False
    revoke_now: bool = False


class FaultInjector:
    """Counts API requests and decides, thread-safely, which fault (if any) each one gets."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self.requests = 0
            self.list_requests = 0
            self._revoked = False
            self._rng = np.random.default_rng([config.seed, 7])

    def _every(self, n: int, count: int) -> bool:
        return n > 0 and count % n == 0

    def _rate(self, rate: float) -> bool:
        return rate > 0 and float(self._rng.random()) < rate

    def decide(self, in_flight: int) -> FaultDecision:
        with self._lock:
            c = self.config
            self.requests += 1
            n = self.requests
            fault = self._fault(c, n, in_flight)
            if fault is not None:
                return fault
            # the revocation lands on a request that is otherwise served, so that request itself meets
            # the 401: a fault on the same request could hide it behind a client's timely renewal
            if c.revoke_after and not self._revoked and n > c.revoke_after:
                self._revoked = True
                return FaultDecision(revoke_now=True)
            return FaultDecision()

    def _fault(self, c: FaultConfig, n: int, in_flight: int) -> FaultDecision | None:
        if c.max_concurrency and in_flight > c.max_concurrency:
            return FaultDecision(429, "concurrency")
        if self._every(c.throttle_every, n) or self._rate(c.throttle_rate):
            return FaultDecision(429, "throttle")
        if self._every(c.error_every, n) or self._rate(c.error_rate):
            return FaultDecision(c.error_status, "error")
        if self._every(c.drop_every, n) or self._rate(c.drop_rate):
            return FaultDecision(drop=True, reason="drop")
        if self._every(c.truncate_every, n):
            return FaultDecision(truncate=True, reason="truncate")
        return None

    def drift_now(self, offset: int) -> bool:
        """True when this list request (with ``offset``) should see records inserted before it."""
        with self._lock:
            if not self.config.drift_every or offset <= 0:
                return False
            self.list_requests += 1
            return self.list_requests % self.config.drift_every == 0
