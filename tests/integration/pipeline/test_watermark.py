"""Watermarks only move forwards, so backfilling an old interval never makes the next delta re-read."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from gradesync.entities import CATEGORIES
from gradesync.records import flatten_records
from gradesync.warehouse import Warehouse

UTC = timezone.utc


def staged(tmp_path: Path, title: str) -> str:
    table, _ = flatten_records(CATEGORIES, "1.2", [
        {"sourcedId": "c1", "status": "active", "dateLastModified": "2026-11-01T00:00:00Z", "title": title}])
    path = tmp_path / f"{title}.parquet"
    pq.write_table(table, path)
    return str(path)


def test_an_older_watermark_does_not_replace_a_newer_one(tmp_path: Path) -> None:
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    warehouse.migrate()
    nightly, backfill = datetime(2026, 11, 20, 2, tzinfo=UTC), datetime(2026, 9, 2, 2, tzinfo=UTC)
    warehouse.load_entity("d", "categories", "1.2", [staged(tmp_path, "a")], run_id="nightly", full_sync=False,
                          extracted=1, watermark=nightly)
    warehouse.load_entity("d", "categories", "1.2", [staged(tmp_path, "b")], run_id="backfill", full_sync=False,
                          extracted=1, watermark=backfill)
    assert warehouse.get_watermark("d", "categories") == nightly
    later = datetime(2026, 11, 21, 2, tzinfo=UTC)
    warehouse.load_entity("d", "categories", "1.2", [staged(tmp_path, "c")], run_id="next", full_sync=False,
                          extracted=1, watermark=later)
    assert warehouse.get_watermark("d", "categories") == later
