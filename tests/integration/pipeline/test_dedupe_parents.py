"""A delta run accepts children of parents the warehouse holds, tombstoned parents included."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gradesync.config import parse_config
from gradesync.entities import LINE_ITEMS, RESULTS
from gradesync.pipeline import dedupe_step
from gradesync.records import flatten_records
from gradesync.warehouse import Warehouse

REF = {"href": "x", "type": "x"}


def line_item(sid: str, status: str) -> dict:
    return {"sourcedId": sid, "status": status, "dateLastModified": "2026-11-01T00:00:00Z", "title": sid,
            "class": {**REF, "sourcedId": "c1"}, "school": {**REF, "sourcedId": "s1"},
            "category": {**REF, "sourcedId": "cat1"}, "assignDate": "2026-10-01T00:00:00Z",
            "dueDate": "2026-10-08T00:00:00Z"}


def result(sid: str, line_item_id: str) -> dict:
    return {"sourcedId": sid, "status": "active", "dateLastModified": "2026-11-20T00:00:00Z",
            "lineItem": {**REF, "sourcedId": line_item_id}, "student": {**REF, "sourcedId": "u1"},
            "scoreStatus": "fully graded", "score": 9, "scoreDate": "2026-10-09"}


def stage(tmp_path: Path, entity, records: list[dict]) -> str:
    table, _ = flatten_records(entity, "1.2", records)
    path = tmp_path / f"{entity.name}.parquet"
    pq.write_table(table, path)
    return str(path)


def test_results_of_a_tombstoned_line_item_are_not_rejected_in_a_delta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_GRADESYNC_WAREHOUSE", url)
    config = parse_config({"name": "d", "api_version": "1.2", "connection_id": "ic",
                           "entities": ["line_items", "results"],
                           "staging": {"url": f"file://{tmp_path / 'staging'}"}})
    warehouse = Warehouse(url)
    warehouse.migrate()
    items = stage(tmp_path, LINE_ITEMS, [line_item("li-live", "active"), line_item("li-gone", "tobedeleted")])
    warehouse.load_entity("d", "line_items", "1.2", [items], run_id="full", full_sync=True, extracted=2)

    delta = stage(tmp_path, RESULTS, [result("r1", "li-gone"), result("r2", "li-live"), result("r3", "li-never")])
    counts = {"received": 3, "staged": 3, "rejected": 0, "duplicates_in_scan": 0}
    window = {"full": False, "since": "2026-11-10T00:00:00+00:00", "until": None, "reason": "test"}
    merged = dedupe_step(config, [
        {"entity": "line_items", "files": [], "rejects_file": None, "counts": {**counts, "received": 0},
         "window": window},
        {"entity": "results", "files": [delta], "rejects_file": None, "counts": counts, "window": window},
    ], run_id="delta")
    results = next(m for m in merged if m["entity"] == "results")
    assert results["rejected"] == 1  # only the result whose line item never existed
    rejects = pq.read_table(results["rejects_file"].removeprefix("file://")).to_pylist()
    assert [r["sourced_id"] for r in rejects] == ["r3"] and "unknown reference" in rejects[0]["reason"]
