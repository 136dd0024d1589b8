"""Live sandbox processes for the sandbox's integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sandbox_client import OneRosterClient

from gradesync.sandbox import SandboxProcess


@pytest.fixture(scope="session")
def sandbox12() -> Iterator[SandboxProcess]:
    """A shared, read-mostly 1.2 sandbox: tests that change data use ``fresh12``."""
    with SandboxProcess(api="1.2", preset="tiny", seed=21, max_limit=150) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def sandbox11() -> Iterator[SandboxProcess]:
    with SandboxProcess(api="1.1", preset="tiny", seed=21) as sandbox:
        yield sandbox


@pytest.fixture
def fresh12() -> Iterator[SandboxProcess]:
    with SandboxProcess(api="1.2", preset="tiny", seed=22) as sandbox:
        yield sandbox


@pytest.fixture
def client12(sandbox12: SandboxProcess) -> OneRosterClient:
    return OneRosterClient(sandbox12)


@pytest.fixture
def client11(sandbox11: SandboxProcess) -> OneRosterClient:
    return OneRosterClient(sandbox11)


@pytest.fixture
def faulty12(sandbox12: SandboxProcess) -> Iterator[SandboxProcess]:
    """The shared sandbox with faults switched off again afterwards, whatever the test did."""
    sandbox12.admin.set_faults({})
    yield sandbox12
    sandbox12.admin.set_faults({})
