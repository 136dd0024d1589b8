"""Both sources through the whole DAG: IC from the sandbox, the vendor app from warehouse tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from gradesync.entities import LINE_ITEMS, RESULTS
from gradesync.records import flatten_records
from gradesync.sandbox import SandboxProcess
from gradesync.testing import runner_for
from gradesync.warehouse import Warehouse

pytestmark = pytest.mark.slow


def frame(entity, records: list[dict]) -> pd.DataFrame:
    table, rejects = flatten_records(entity, "1.2", records)
    assert not rejects
    return table.to_pandas()


def test_vendor_and_ic_merge_without_duplicates_with_lineage(
    airflow_home: Path, sqlite_url: str, tmp_path: Path
) -> None:
    runner = runner_for(
        airflow_home, "sandbox", sqlite_url, tmp_path,
        overrides={
            "entities": ["categories", "line_items", "results"],
            "vendor_source": {"kind": "warehouse_tables", "table_prefix": "vendor_"},
            "merge_rules": {"line_items": {"match_keys": [["class_sourced_id", "title", "due_date"]],
                                           "fields": {"description": "vendor"}}},
        },
    )
    name = runner.config.name
    with SandboxProcess(api="1.2", preset="tiny", seed=5) as sandbox:
        ic_items = [r for r in sandbox.admin.records("line_items") if r["status"] == "active"]
        ic_results = [r for r in sandbox.admin.records("results")
                      if r["status"] == "active" and r.get("score") is not None]
        described = [r for r in ic_items if r.get("description")]
        same_id = described[0]  # IC has a description too, so the rule (not a null fill) decides
        twin = next(r for r in ic_items if r is not same_id)
        # The vendor app holds the same line item under IC's id with its own description, and a
        # second copy of another one that it created itself (own id, same class/title/due date).
        vendor_items = [
            {**same_id, "description": "Vendor description", "dateLastModified": "2026-11-21T00:00:00Z"},
            {**twin, "sourcedId": "vendor-li-1", "title": f"  {twin['title'].upper()} ",
             "description": "Vendor copy"},
        ]
        graded = ic_results[0]
        vendor_results = [{**graded, "score": 99.5, "comment": "Regraded in the LMS",
                           "dateLastModified": "2026-11-21T00:00:00Z"}]
        engine = sa.create_engine(sqlite_url)
        frame(LINE_ITEMS, vendor_items).to_sql("vendor_line_items", engine, index=False)
        frame(RESULTS, vendor_results).to_sql("vendor_results", engine, index=False)
        engine.dispose()

        runner.run(sandbox)
        all_item_ids = {r["sourcedId"] for r in sandbox.admin.records("line_items")}

    warehouse = Warehouse(sqlite_url)
    items = warehouse.read_table("line_items", name).set_index("sourced_id")
    assert set(items.index) == all_item_ids  # the vendor's copy merged into IC's record: no duplicate
    merged_same = items.loc[same_id["sourcedId"]]
    assert merged_same["description"] == "Vendor description"
    lineage = json.loads(merged_same["field_sources"])
    assert lineage["description"] == "vendor" and lineage["title"] == "ic"
    assert merged_same["record_source"] == "both"
    merged_twin = items.loc[twin["sourcedId"]]
    twin_lineage = json.loads(merged_twin["field_sources"])
    assert twin_lineage["_match"].startswith("natural_key") and twin_lineage["_vendor_sourced_id"] == "vendor-li-1"
    assert merged_twin["title"] == twin["title"]  # IC masters the title

    results = warehouse.read_table("results", name).set_index("sourced_id")
    regraded = results.loc[graded["sourcedId"]]
    assert regraded["score"] == 99.5 and regraded["comment"] == "Regraded in the LMS"
    assert json.loads(regraded["field_sources"])["score"] == "vendor"
    untouched = results.loc[ic_results[1]["sourcedId"]]
    assert untouched["score"] == ic_results[1]["score"]
    assert json.loads(untouched["field_sources"])["score"] == "ic"
    assert not results.index.duplicated().any()
    for row in warehouse.run_summary(name, warehouse.latest_run_id(name)):  # the audit adds up
        accounted = row["inserted"] + row["updated"] + row["unchanged"] + row["duplicates"] + row["rejected"]
        assert row["extracted"] == accounted, row
    runs = {r["entity"]: r for r in warehouse.run_summary(name, warehouse.latest_run_id(name))}
    assert runs["line_items"]["duplicates"] >= 2  # the vendor's same-id copy and its natural-key twin
