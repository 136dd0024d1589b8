"""Reading staged Parquet files: layout, row hashes, and selecting rows by ordinal."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gradesync.entities import RESULTS
from gradesync.records import flatten_records
from gradesync.warehouse.keyhash import fold_key, key_hashes, unfold_key
from gradesync.warehouse.staging import StagedFiles, row_hashes, staging_schema


def _records(n: int, **overrides: object) -> list[dict]:
    return [{"sourcedId": f"r{i}", "status": "active", "dateLastModified": "2026-09-01T00:00:00Z",
             "lineItem": {"sourcedId": "li"}, "student": {"sourcedId": f"s{i}"}, "scoreStatus": "submitted",
             "score": i, "late": "true" if i % 2 else "false", **overrides} for i in range(n)]


def _write(tmp_path: Path, table: pa.Table, name: str = "a.parquet") -> str:
    path = tmp_path / name
    pq.write_table(table, path)
    return str(path)


def _hashes(files: StagedFiles) -> np.ndarray:
    return np.concatenate([b.hashes for b in files.batches()])


def test_hash_ignores_batching_and_file_splits(tmp_path: Path) -> None:
    table, _ = flatten_records(RESULTS, "1.2", _records(50))
    one = StagedFiles(RESULTS, [_write(tmp_path, table)], batch_rows=1000)
    many = StagedFiles(RESULTS, [_write(tmp_path, table.slice(0, 7), "b.parquet"),
                                 _write(tmp_path, table.slice(7), "c.parquet")], batch_rows=3)
    assert np.array_equal(_hashes(one), _hashes(many))
    assert len(set(_hashes(one))) == 50


@pytest.mark.parametrize("column,value", [("score", 1e-9), ("comment", "x"), ("late", None), ("status", "tobedeleted"),
                                          ("metadata", '{"a": 1}'), ("score_date", "2026-01-01")])
def test_any_content_change_changes_the_hash(tmp_path: Path, column: str, value: object) -> None:
    table, _ = flatten_records(RESULTS, "1.2", _records(3))
    base = _hashes(StagedFiles(RESULTS, [_write(tmp_path, table)]))
    col = table.column(column).to_pylist()
    if column == "score_date":
        value = datetime(2026, 1, 1).date()
    col[1] = value if column != "score" else col[1] + value
    changed = table.set_column(table.schema.get_field_index(column), column,
                               pa.array(col, table.schema.field(column).type))
    after = _hashes(StagedFiles(RESULTS, [_write(tmp_path, changed, "b.parquet")]))
    assert after[0] == base[0] and after[2] == base[2] and after[1] != base[1]


def test_reading_files_in_threads_yields_the_same_batches_in_order(tmp_path: Path) -> None:
    table, _ = flatten_records(RESULTS, "1.2", _records(100))
    paths = [_write(tmp_path, table.slice(start, size), f"{i}.parquet")
             for i, (start, size) in enumerate([(0, 7), (7, 40), (47, 0), (47, 30), (77, 23)])]
    files = StagedFiles(RESULTS, paths, batch_rows=16)
    one = list(files.batches())
    for threads in (2, 3):
        many = list(files.batches(threads=threads))
        assert [b.first_ord for b in many] == [b.first_ord for b in one]
        assert np.array_equal(np.concatenate([b.hashes for b in many]), np.concatenate([b.hashes for b in one]))
        assert [b.batch.column("sourced_id").to_pylist() for b in many] == [
            b.batch.column("sourced_id").to_pylist() for b in one]
    assert one[-1].first_ord + one[-1].batch.num_rows == 100


def test_the_key_is_part_of_the_hash(tmp_path: Path) -> None:
    """Same content under another key hashes differently, so checksums over rows see key swaps."""
    table, _ = flatten_records(RESULTS, "1.2", _records(2, score=5, late="false", student={"sourcedId": "s"}))
    files = StagedFiles(RESULTS, [_write(tmp_path, table)])
    (sb,) = files.batches()
    assert sb.hashes[0] != sb.hashes[1]
    content_only = row_hashes(sb.batch, files.hash_columns)
    assert content_only[0] == content_only[1]


def test_key_hashes_are_the_same_however_keys_are_batched() -> None:
    keys = [f"{i:x}" * (1 + i % 7) + "é" * (i % 3) for i in range(3000)] + ["", "a", "a\x00", "12345678"]
    arr = pa.array(keys)
    whole = key_hashes(arr)
    assert np.array_equal(np.concatenate([key_hashes(arr.slice(i, 97)) for i in range(0, len(keys), 97)]), whole)
    assert np.array_equal(key_hashes(arr.cast(pa.large_string())), whole)
    assert key_hashes(pa.array(["a"]))[0] == whole[-3] and len(set(whole.tolist())) == len(set(keys))
    many = pa.array([f"{i}-{'x' * (i % 13)}" for i in range(20_000)])  # hashed in several slices
    assert np.array_equal(key_hashes(many), np.concatenate([key_hashes(many.slice(i, 999))
                                                            for i in range(0, 20_000, 999)]))


def test_folding_the_key_in_is_invertible() -> None:
    """What migration 0003 relies on to upgrade (fold) and downgrade (unfold) stored hashes."""
    rng = np.random.default_rng(3)
    content = rng.integers(-(2**63), 2**63 - 1, 1000, dtype=np.int64)
    keys = pa.array([f"key-{i}-{'ü' * (i % 5)}" for i in range(1000)])
    folded = fold_key(content, keys)
    assert not np.any(folded == content)
    assert np.array_equal(unfold_key(folded, keys), content)


def test_null_empty_and_false_hash_differently() -> None:
    schema = staging_schema(RESULTS)
    rows = {name: pa.nulls(3, schema.field(name).type) for name in schema.names}
    rows["comment"] = pa.array([None, "", "x"])
    rows["late"] = pa.array([None, False, True])
    batch = pa.RecordBatch.from_arrays(list(rows.values()), schema=schema)
    h = row_hashes(batch, ["comment"])
    assert len(set(h)) == 3
    h = row_hashes(batch, ["late"])
    assert len(set(h)) == 3
    # a boolean column without nulls hashes like the same values next to a null
    no_null = pa.RecordBatch.from_arrays([pa.array([False, True])], names=["late"])
    assert list(row_hashes(no_null, ["late"])) == list(h[1:])


def test_missing_optional_columns_naive_timestamps_and_provenance(tmp_path: Path) -> None:
    table = pa.table({
        "sourced_id": ["a"], "status": ["active"],
        "date_last_modified": pa.array([datetime(2026, 9, 1, 8)], pa.timestamp("ms")),  # naive: UTC
        "line_item_sourced_id": ["li"], "student_sourced_id": ["s"], "score_status": ["submitted"],
        "field_sources": ['{"score": "ic"}'],
    })
    batches = list(StagedFiles(RESULTS, [_write(tmp_path, table)]).batches())
    batch = batches[0].batch
    assert batch.schema.names == staging_schema(RESULTS).names
    assert batch.column("date_last_modified")[0].as_py() == datetime(2026, 9, 1, 8, tzinfo=timezone.utc)
    assert batch.column("score")[0].as_py() is None and batch.column("record_source")[0].as_py() is None
    assert batch.column("field_sources")[0].as_py() == '{"score": "ic"}'


def test_selecting_wanted_ordinals_skips_the_rest(tmp_path: Path) -> None:
    table, _ = flatten_records(RESULTS, "1.2", _records(30))
    files = [_write(tmp_path, table.slice(i, 10), f"{i}.parquet") for i in (0, 10, 20)]
    staged = StagedFiles(RESULTS, files, batch_rows=4)
    all_hashes = _hashes(staged)
    wanted = np.array([1, 2, 25, 29], dtype=np.int64)
    picked = list(staged.batches(wanted))
    ords = np.concatenate([b.ords for b in picked])
    assert list(ords) == [1, 2, 25, 29]
    assert [s for b in picked for s in b.batch.column("sourced_id").to_pylist()] == ["r1", "r2", "r25", "r29"]
    assert np.array_equal(np.concatenate([b.hashes for b in picked]), all_hashes[wanted])
    assert list(staged.batches(np.array([], dtype=np.int64))) == []
