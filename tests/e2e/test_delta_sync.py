"""Incremental runs take only what changed; a full sync reconciles records that vanished from IC."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gradesync.sandbox import SandboxProcess
from gradesync.testing import assert_warehouse_matches_sandbox, runner_for
from gradesync.warehouse import Warehouse

pytestmark = pytest.mark.slow


def by_entity(rows: list[dict]) -> dict[str, dict]:
    return {row["entity"]: row for row in rows}


def test_delta_run_stages_only_changes_and_full_sync_marks_vanished(
    airflow_home: Path, sqlite_url: str, tmp_path: Path
) -> None:
    runner = runner_for(airflow_home, "sandbox", sqlite_url, tmp_path,
                        overrides={"entities": ["categories", "line_items", "results"]})
    name = runner.config.name
    warehouse = Warehouse(sqlite_url)
    with SandboxProcess(api="1.2", preset="tiny", seed=3) as sandbox:
        runner.run(sandbox)
        first = by_entity(warehouse.run_summary(name, warehouse.latest_run_id(name)))
        assert first["results"]["full_sync"]

        modified = sandbox.admin.modify("results", count=4)
        added = sandbox.admin.add("results", count=3)
        tombstoned = sandbox.admin.delete("results", count=2, mode="tombstone")
        vanished = set(sandbox.admin.delete("results", count=2, mode="vanish"))
        renamed = sandbox.admin.modify("line_items", count=1)

        runner.run(sandbox)  # a manual run: delta from the stored watermark
        delta = by_entity(warehouse.run_summary(name, warehouse.latest_run_id(name)))
        assert not delta["results"]["full_sync"]
        assert delta["results"]["extracted"] == len(modified) + len(added) + len(tombstoned)
        assert delta["results"]["inserted"] == len(added)
        assert delta["line_items"]["extracted"] == len(renamed) and delta["categories"]["extracted"] == 0
        # A delta cannot see hard deletes: those records are still live in the warehouse.
        assert_warehouse_matches_sandbox(warehouse, runner.config, sandbox, vanished={"results": vanished})
        results = warehouse.read_table("results", name).set_index("sourced_id")
        assert results.loc[list(vanished), "deleted_at"].isna().all()
        assert results.loc[tombstoned, "deleted_at"].notna().all()

        runner.run(sandbox, {"full_refresh": True})
        full = by_entity(warehouse.run_summary(name, warehouse.latest_run_id(name)))
        assert full["results"]["full_sync"] and full["results"]["deleted"] == len(vanished)
        assert_warehouse_matches_sandbox(warehouse, runner.config, sandbox, vanished={"results": vanished})
        results = warehouse.read_table("results", name).set_index("sourced_id")
        assert results.loc[list(vanished), "deleted_at"].notna().all()
        live = results[results["deleted_at"].isna()]
        served = {r["sourcedId"] for r in sandbox.admin.records("results") if r["status"] == "active"}
        assert set(live.index) == served
        history = warehouse.read_table("result_history", name)
        changed = history[history["sourced_id"].isin(modified)]
        assert set(changed["sourced_id"]) <= set(modified) and not changed.empty
        assert pd.notna(warehouse.get_watermark(name, "results"))
