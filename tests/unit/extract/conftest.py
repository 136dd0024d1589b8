"""Fixtures of the extraction unit tests; the IC double itself lives in fake_ic.py."""

from __future__ import annotations

import pytest
from fake_ic import FakeIC, result_record


@pytest.fixture
def results_fake() -> FakeIC:
    return FakeIC({"results": [result_record(n) for n in range(1, 2501)]}, latency=0.005)
