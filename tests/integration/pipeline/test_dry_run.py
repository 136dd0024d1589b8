"""A dry-run load reports exactly what a real load would change, and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from gradesync.entities import CATEGORIES
from gradesync.records import flatten_records
from gradesync.warehouse import Warehouse


def category(i: int, title: str, modified: str = "2026-11-01T00:00:00Z") -> dict:
    return {"sourcedId": f"c{i}", "status": "active", "dateLastModified": modified, "title": title}


def stage(tmp_path: Path, name: str, records: list[dict]) -> str:
    table, rejects = flatten_records(CATEGORIES, "1.2", records)
    assert not rejects
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    return str(path)


def snapshot(warehouse: Warehouse) -> list[tuple]:
    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.text("select sourced_id, title, deleted_at from categories order by 1")).all()
        runs = conn.execute(sa.text("select count(*) from sync_runs")).scalar()
        marks = conn.execute(sa.text("select watermark from sync_watermarks")).all()
    return [*map(tuple, rows), ("runs", runs), ("marks", *map(tuple, marks))]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_dry_run_counts_changes_and_rolls_back(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url, schema = f"sqlite:///{tmp_path / 'w.db'}", "gradesync"
    else:
        url, schema = request.getfixturevalue("postgres_url"), f"gs_dry_{tmp_path.name[-8:].lower()}"
    warehouse = Warehouse(url, schema=schema)
    try:
        warehouse.migrate()
        first = stage(tmp_path, "first", [category(1, "Homework"), category(2, "Tests"), category(3, "Quizzes")])
        warehouse.load_entity("d", "categories", "1.2", [first], run_id="r1", full_sync=True, extracted=3)
        before = snapshot(warehouse) if backend == "sqlite" else None

        second = stage(tmp_path, "second", [category(1, "Homework"), category(2, "Exams", "2026-11-02T00:00:00Z"),
                                            category(4, "Projects")])
        counts = warehouse.load_entity("d", "categories", "1.2", [second], run_id="r2", full_sync=True,
                                       extracted=3, dry_run=True, watermark=None)
        assert (counts.inserted, counts.updated, counts.unchanged, counts.deleted) == (1, 1, 1, 1)
        table = warehouse.read_table("categories", "d").set_index("sourced_id")
        assert list(table.index) == ["c1", "c2", "c3"]
        assert table.loc["c2", "title"] == "Tests" and table["deleted_at"].isna().all()
        assert warehouse.run_summary("d", "r2") == []
        if before is not None:
            assert snapshot(warehouse) == before

        real = warehouse.load_entity("d", "categories", "1.2", [second], run_id="r2", full_sync=True, extracted=3)
        assert (real.inserted, real.updated, real.unchanged, real.deleted) == (1, 1, 1, 1)
    finally:
        if backend == "postgres":
            with warehouse.engine.begin() as conn:
                conn.execute(sa.text(f'drop schema if exists "{schema}" cascade'))
        warehouse.dispose()
