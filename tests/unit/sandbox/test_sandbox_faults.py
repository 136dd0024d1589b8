"""Fault decisions: deterministic counters and seeded rates, parsed from CLI pairs or JSON."""

from __future__ import annotations

import pytest

from gradesync.sandbox.faults import FaultConfig, FaultInjector


def _statuses(injector: FaultInjector, n: int, in_flight: int = 1) -> list[object]:
    out: list[object] = []
    for _ in range(n):
        d = injector.decide(in_flight)
        out.append(d.status or ("drop" if d.drop else "truncate" if d.truncate else None))
    return out


def test_every_nth_request_gets_its_fault() -> None:
    injector = FaultInjector(FaultConfig(throttle_every=3, error_every=5, drop_every=7, truncate_every=11))
    got = _statuses(injector, 15)
    assert got[2] == 429 and got[5] == 429 and got[4] == 500 and got[6] == "drop" and got[10] == "truncate"
    assert got[14] == 429  # both 3 and 5 divide 15: throttling wins
    assert got[0] is None


def test_rates_are_seeded_and_reproducible() -> None:
    config = FaultConfig(error_rate=0.3, seed=4)
    first, second = _statuses(FaultInjector(config), 200), _statuses(FaultInjector(config), 200)
    assert first == second and 30 < first.count(500) < 90
    assert _statuses(FaultInjector(FaultConfig(error_rate=0.3, seed=5)), 200) != first


def test_concurrency_limit_and_single_revocation() -> None:
    injector = FaultInjector(FaultConfig(max_concurrency=2, revoke_after=3))
    assert injector.decide(in_flight=3).status == 429
    assert injector.decide(in_flight=2).status is None
    revocations = [injector.decide(1).revoke_now for _ in range(5)]
    assert revocations == [False, True, False, False, False]


def test_revocation_waits_for_a_request_that_is_served() -> None:
    injector = FaultInjector(FaultConfig(revoke_after=1, error_every=2, throttle_every=3))
    decisions = [injector.decide(1) for _ in range(5)]
    # requests 2 to 4 are faulted: the revocation lands on request 5, the first one served after 1
    assert [(d.status, d.revoke_now) for d in decisions] == [
        (None, False), (500, False), (429, False), (500, False), (None, True)]


def test_drift_counts_only_paged_list_requests() -> None:
    injector = FaultInjector(FaultConfig(drift_every=2))
    assert [injector.drift_now(offset) for offset in (0, 10, 0, 20, 30, 40)] == [False, False, False, True, False, True]


def test_config_from_cli_pairs_and_json() -> None:
    config = FaultConfig.from_pairs(["throttle-every=4", "error_rate=0.5", "truncate_mode=json"])
    assert (config.throttle_every, config.error_rate, config.truncate_mode) == (4, 0.5, "json")
    merged = FaultConfig.from_mapping({"latency_ms": "25"}, base=config)
    assert merged.latency_ms == 25 and merged.throttle_every == 4
    for bad in (["nonsense=1"], ["throttle_every"], ["truncate_mode=half"], ["error_rate=lots"]):
        with pytest.raises(ValueError):
            FaultConfig.from_pairs(bad)
