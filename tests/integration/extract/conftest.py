"""Live sandbox processes for the extraction integration tests; helpers live in live_ic.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gradesync.sandbox import SandboxProcess


@pytest.fixture(scope="module")
def school12() -> Iterator[SandboxProcess]:
    with SandboxProcess(api="1.2", preset="school", seed=7) as sb:
        yield sb


@pytest.fixture(scope="module")
def tiny11() -> Iterator[SandboxProcess]:
    with SandboxProcess(api="1.1", preset="tiny", seed=11) as sb:
        yield sb
