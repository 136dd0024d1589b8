"""A scheduled full sync that comes back nearly empty does not delete the gradebook; a requested one does."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gradesync.config import parse_config
from gradesync.entities import CATEGORIES
from gradesync.pipeline import SCHEDULED_FULL_SYNC, Window, load_step
from gradesync.records import flatten_records
from gradesync.warehouse import Warehouse


def stage(tmp_path: Path, name: str, ids: list[str]) -> str:
    table, _ = flatten_records(CATEGORIES, "1.2", [
        {"sourcedId": i, "status": "active", "dateLastModified": "2026-11-01T00:00:00Z", "title": i} for i in ids])
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    return str(path)


def item(path: str, count: int, window: Window) -> dict:
    return {"entity": "categories", "files": [path], "rejects_file": None, "extracted": count, "duplicates": 0,
            "rejected": 0, "window": window.to_dict(), "max_date_last_modified": None, "started_at": None}


def test_small_scheduled_full_sync_is_held_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_GRADESYNC_WAREHOUSE", url)
    config = parse_config({"name": "d", "api_version": "1.2", "connection_id": "ic", "entities": ["categories"]})
    warehouse = Warehouse(url)
    warehouse.migrate()
    everything = stage(tmp_path, "all", ["c1", "c2", "c3", "c4"])
    load_step(config, [item(everything, 4, Window(True, reason="first load"))], run_id="r1")

    one_left = stage(tmp_path, "one", ["c1"])
    [held] = load_step(config, [item(one_left, 1, Window(True, reason=SCHEDULED_FULL_SYNC))], run_id="r2")
    assert held["deleted"] == 0 and "needs a human" in held["warnings"][0]
    assert warehouse.read_table("categories", "d")["deleted_at"].isna().all()

    [requested] = load_step(config, [item(one_left, 1, Window(True, reason="full_refresh requested"))],
                            run_id="r3")
    assert requested["deleted"] == 3 and requested["warnings"] == []
    assert warehouse.read_table("categories", "d")["deleted_at"].notna().sum() == 3
