"""Helpers for gradesync's own end-to-end tests, and for users testing their integrations.

Like ``pandas.testing``: importable, but nothing in the pipeline depends on it.
"""

from __future__ import annotations

import json
import math
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gradesync.cli import PROJECT_ROOT, airflow_env, run_airflow
from gradesync.config import IntegrationConfig, load_config
from gradesync.entities import get_entity
from gradesync.records import flatten_records

INTEGRATIONS = PROJECT_ROOT / "include" / "integrations"


@dataclass
class DagRunner:
    """Runs one integration's DAG against a sandbox into a given warehouse URL."""

    home: Path
    config: IntegrationConfig
    warehouse_url: str
    staging: Path
    integrations_dir: Path = INTEGRATIONS
    extra_env: dict[str, str] | None = None

    def env(self, sandbox: Any) -> dict[str, str]:
        env = airflow_env(self.home)
        env["GRADESYNC_INTEGRATIONS_DIR"] = str(self.integrations_dir)
        env["GRADESYNC_STAGING_URL"] = f"file://{self.staging}"
        env[f"AIRFLOW_CONN_{self.config.connection_id.upper()}"] = json.dumps(sandbox.airflow_connection())
        env[f"AIRFLOW_CONN_{self.config.warehouse_connection_id.upper()}"] = self.warehouse_url
        env.update(self.extra_env or {})
        return env

    def run(self, sandbox: Any, conf: dict[str, Any] | None = None, *, expect_success: bool = True,
            logical_date: str | None = None) -> subprocess.CompletedProcess[str]:
        args = ["dags", "test", self.config.dag_id]
        if logical_date:
            args.append(logical_date)
        if conf:
            args += ["--conf", json.dumps(conf)]
        log_file = self.staging.parent / f"run-{uuid.uuid4().hex[:8]}.log"
        code = run_airflow(args, self.env(sandbox), log_file)
        output = log_file.read_text(errors="replace")
        if expect_success:
            assert code == 0 and "state=success" in output, output[-6000:]
        return subprocess.CompletedProcess(args, code, output, "")


def runner_for(home: Path, integration: str, warehouse_url: str, tmp_path: Path, *, schema: str | None = None,
               overrides: dict[str, Any] | None = None) -> DagRunner:
    """A runner for a sample integration, optionally rewritten (schema, entities, ...) in a temp folder."""
    import yaml

    config_path = INTEGRATIONS / f"{integration}.yaml"
    folder = INTEGRATIONS
    # Failed tasks must fail the test at once, not wait out Airflow's retry delay.
    overrides = {"retries": 0, **(overrides or {})}
    if schema or overrides:
        data = yaml.safe_load(config_path.read_text())
        if schema:
            data["warehouse_schema"] = schema
        data.update(overrides or {})
        folder = tmp_path / "integrations"
        folder.mkdir(exist_ok=True)
        config_path = folder / f"{integration}.yaml"
        config_path.write_text(yaml.safe_dump(data))
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    return DagRunner(home, load_config(config_path), warehouse_url, staging, folder)


def _normalise(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC").to_pydatetime() if value.tzinfo else value.tz_localize("UTC").to_pydatetime()
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return value
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def assert_warehouse_matches_sandbox(warehouse: Any, config: IntegrationConfig, sandbox: Any,
                                     entities: list[str] | None = None,
                                     vanished: dict[str, set[str]] | None = None) -> dict[str, int]:
    """Every sandbox record is in the warehouse with every field equal, and nothing else is.

    ``vanished`` names records IC no longer serves: they must still be in the warehouse (history is
    never physically removed), and the caller checks how they are marked.
    """
    compared: dict[str, int] = {}
    for name in entities or config.selected_entities:
        entity = get_entity(name)
        truth, rejects = flatten_records(entity, config.api_version, sandbox.admin.records(name))
        assert not rejects, rejects[:3]
        expected = {row["sourced_id"]: row for row in truth.to_pylist()}
        stored = warehouse.read_table(name, config.name)
        actual = {row["sourced_id"]: row for row in stored.to_dict("records")}
        gone = (vanished or {}).get(name, set())
        assert gone <= set(actual), (name, "vanished records were removed from the warehouse", gone - set(actual))
        actual = {k: v for k, v in actual.items() if k not in gone}
        assert set(actual) == set(expected), (name, set(expected) ^ set(actual))
        for sourced_id, want in expected.items():
            got = actual[sourced_id]
            for column, value in want.items():
                assert _normalise(got[column]) == _normalise(value), (name, sourced_id, column, got[column], value)
        compared[name] = len(expected)
    return compared
