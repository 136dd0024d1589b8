"""``airflow dags test`` of the sample integrations, compared with the sandbox record by record."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradesync.sandbox import SandboxProcess
from gradesync.testing import assert_warehouse_matches_sandbox, runner_for
from gradesync.warehouse import Warehouse

pytestmark = pytest.mark.slow

CASES = [("1.2", "sandbox"), ("1.1", "sandbox_v1p1")]


@pytest.mark.parametrize(("api", "integration"), CASES, ids=["v1p2", "v1p1"])
def test_full_run_into_sqlite_matches_sandbox_and_rerun_changes_nothing(
    api: str, integration: str, airflow_home: Path, sqlite_url: str, tmp_path: Path
) -> None:
    runner = runner_for(airflow_home, integration, sqlite_url, tmp_path)
    with SandboxProcess(api=api, preset="tiny", seed=7) as sandbox:
        runner.run(sandbox)
        warehouse = Warehouse(sqlite_url)
        compared = assert_warehouse_matches_sandbox(warehouse, runner.config, sandbox)
        assert set(compared) == set(runner.config.selected_entities) and all(compared.values())
        first = warehouse.run_summary(runner.config.name, warehouse.latest_run_id(runner.config.name))

        runner.run(sandbox, {"full_refresh": True})
        second = warehouse.run_summary(runner.config.name, warehouse.latest_run_id(runner.config.name))
        assert_warehouse_matches_sandbox(warehouse, runner.config, sandbox)
    inserted = {row["entity"]: row["inserted"] for row in first}
    for row in second:
        assert row["inserted"] == row["updated"] == row["deleted"] == 0, row
        assert row["unchanged"] == inserted[row["entity"]], row


@pytest.mark.postgres
@pytest.mark.parametrize(("api", "integration"), CASES, ids=["v1p2", "v1p1"])
def test_full_run_into_postgres_matches_sandbox(
    api: str, integration: str, airflow_home: Path, postgres_warehouse: tuple[str, str], tmp_path: Path
) -> None:
    uri, schema = postgres_warehouse
    runner = runner_for(airflow_home, integration, uri, tmp_path, schema=schema)
    with SandboxProcess(api=api, preset="tiny", seed=11) as sandbox:
        runner.run(sandbox)
        warehouse = Warehouse(uri.replace("postgresql://", "postgresql+psycopg://"), schema=schema)
        compared = assert_warehouse_matches_sandbox(warehouse, runner.config, sandbox)
    assert all(compared.values())
