"""The columnar page decoder must equal records.flatten_records exactly; staging retention."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradesync.entities import get_entity
from gradesync.oneroster import RetryableError
from gradesync.records import flatten_records
from gradesync.staging import PageDecoder, cleanup_staging, staging_path

NICE_TIMES = ["2026-10-01T12:34:56Z", "2026-10-01T12:34:56.1Z", "2026-10-01T12:34:56.123456Z",
              "2026-10-01T12:34:56+02:00", "2026-10-01T23:59:59.999-05:30", "2026-02-28T00:00:00.000Z"]
ODD_TIMES = ["2026-10-01T12:34:56", "2026-10-01 12:34:56Z", "2026-10-01", "2026-02-30T00:00:00Z",
             "2026-10-01T24:00:00Z", " 2026-10-01T12:34:56Z", "2026-10-01T12:34:56.1234567Z", "yesterday",
             "2026-10-01T12:34:56z", "0000-01-01T00:00:00Z", "", 20261001]

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
times = st.one_of(st.sampled_from(NICE_TIMES), st.sampled_from(ODD_TIMES), st.none())
dates = st.one_of(st.sampled_from(["2026-10-01", "2026-10-01T00:00:00Z", "2026-02-30", "20261001", "", "2026-1-1"]),
                  st.none(), st.integers(0, 3))
numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(-1000, 1000),
                    st.sampled_from(["12.5", "", "high", True]), st.none())
flags = st.sampled_from(["true", "false", "True", " false", True, False, None, "", "yes", 1])
refs = st.one_of(st.builds(lambda s: {"href": "h", "sourcedId": s, "type": "t"},
                           st.one_of(texts, st.none(), st.just(""), st.integers(0, 9))),
                 st.sampled_from(["", "li-1", None, 5, ["x"]]))
plain = st.one_of(texts, st.none(), st.just(""), st.integers(0, 5), st.dictionaries(texts, texts, max_size=2))
metadata = st.one_of(st.none(), st.just(""), st.integers(0, 3),
                     st.recursive(st.one_of(texts, st.integers(0, 9), st.booleans(), st.none()),
                                  lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(texts, inner, max_size=3)), max_leaves=6))


def result_strategy(canonical: bool) -> st.SearchStrategy[dict[str, Any]]:
    """``canonical`` pages are what IC normally sends; the others mix in every odd value."""
    if canonical:
        return st.fixed_dictionaries({
            "sourcedId": texts.filter(bool), "status": st.sampled_from(["active", "tobedeleted"]),
            "dateLastModified": st.sampled_from(NICE_TIMES), "metadata": metadata,
            "lineItem": st.builds(lambda s: {"sourcedId": s}, texts.filter(bool)),
            "student": st.builds(lambda s: {"sourcedId": s, "href": "x"}, texts.filter(bool)),
            "scoreStatus": st.sampled_from(["fully graded", "exempt"]),
            "score": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 5), st.none()),
            "scoreDate": st.sampled_from(["2026-10-01", "2026-10-01T00:00:00Z"]), "late": st.sampled_from(["true", "false"]),
        }, optional={"comment": st.one_of(texts, st.none(), st.just("")), "textScore": texts})
    return st.fixed_dictionaries({}, optional={
        "sourcedId": plain, "status": plain, "dateLastModified": times, "metadata": metadata, "lineItem": refs,
        "student": refs, "class": refs, "scoreStatus": plain, "score": numbers, "textScore": plain,
        "scoreDate": dates, "comment": plain, "inProgress": flags, "late": flags, "missing": flags,
    })


def compare(entity_name: str, version: str, records: list[Any]) -> bool:
    entity = get_entity(entity_name)
    body = json.dumps({entity.collection: records}).encode()
    decoded = PageDecoder(entity, version)(body)
    table, rejects = flatten_records(entity, version, json.loads(body)[entity.collection])
    assert decoded.table.equals(table), (decoded.table.to_pylist(), table.to_pylist())
    assert decoded.rejects == rejects
    assert decoded.received == len(records)
    return decoded.fast


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(result_strategy(canonical=False), max_size=6), st.sampled_from(["1.1", "1.2"]))
def test_decoder_equals_flatten_records_on_any_page(records: list[dict[str, Any]], version: str) -> None:
    compare("results", version, records)


@settings(max_examples=60, deadline=None)
@given(st.lists(result_strategy(canonical=True), min_size=1, max_size=6))
def test_canonical_pages_take_the_columnar_route(records: list[dict[str, Any]]) -> None:
    assert compare("results", "1.2", records) is True


def test_other_entities_and_non_objects() -> None:
    line_item = {"sourcedId": "li", "status": "active", "dateLastModified": "2026-10-01T00:00:00Z", "title": "T",
                 "class": {"sourcedId": "c"}, "assignDate": "2026-09-01T00:00:00Z", "resultValueMax": 10,
                 "school": {"sourcedId": "s"}, "scoreScale": None}
    assert compare("line_items", "1.2", [line_item]) is True
    assert compare("line_items", "1.1", [line_item, 5, None, "x"]) is False
    scale = {"sourcedId": "ss", "status": "active", "dateLastModified": "2026-10-01T00:00:00Z", "title": "P",
             "scoreScaleValue": [{"itemValueLHS": "90-100", "itemValueRHS": "A"}]}
    assert compare("score_scales", "1.2", [scale]) is True
    assert compare("categories", "1.2", []) is True


@pytest.mark.parametrize("body", [b'{"results": [{"sourcedId": "a"', b"<html>", b'{"lineItems": []}', b"[]", b""])
def test_bad_bodies_are_retryable(body: bytes) -> None:
    with pytest.raises(RetryableError):
        PageDecoder(get_entity("results"), "1.2")(body)


def test_cleanup_removes_only_old_run_folders(tmp_path: Path) -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)

    def make(rel: str, age: timedelta) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        stamp = (now - age).timestamp()
        os.utime(path, (stamp, stamp))

    make("grade_sync_a/run_old/extract/results/part-00000.parquet", timedelta(days=9))
    make("grade_sync_a/run_old/merged/results.parquet", timedelta(days=8))
    make("grade_sync_a/run_mixed/extract/results/part-00000.parquet", timedelta(days=9))
    make("grade_sync_a/run_mixed/merged/results.parquet", timedelta(hours=1))  # still in use: keep all of it
    make("grade_sync_a/run_new/extract/results/part-00000.parquet", timedelta(hours=2))
    make("grade_sync_b/run_old/extract/x.parquet", timedelta(days=30))
    make("top-level-file.txt", timedelta(days=30))
    removed = cleanup_staging(staging_path(str(tmp_path)), timedelta(days=7), now, run_depth=2)
    assert sorted(Path(r.removeprefix("file://")).relative_to(tmp_path).as_posix() for r in removed) == [
        "grade_sync_a/run_old", "grade_sync_b/run_old"]
    assert (tmp_path / "grade_sync_a/run_mixed/extract/results/part-00000.parquet").exists()
    assert (tmp_path / "grade_sync_a/run_new").exists() and (tmp_path / "top-level-file.txt").exists()
    assert cleanup_staging(tmp_path / "does-not-exist", timedelta(days=1), now) == []
    # one DAG's folder as root (run_depth=1): the mixed run stays, then goes once it is all old
    make("grade_sync_a/run_mixed/merged/results.parquet", timedelta(days=8))
    removed = cleanup_staging(tmp_path / "grade_sync_a", timedelta(days=7), now)
    assert [Path(r.removeprefix("file://")).name for r in removed] == ["run_mixed"]
    assert cleanup_staging(tmp_path, timedelta(0), now, run_depth=2) == [str(staging_path(tmp_path / "grade_sync_a/run_new"))]


def _results_table(start: int, n: int) -> Any:

    from gradesync.records import arrow_schema

    schema = arrow_schema(get_entity("results"), "1.2")
    records = [{"sourcedId": f"r-{i:05d}", "status": "active", "dateLastModified": "2026-10-01T00:00:00Z",
                "lineItem": {"sourcedId": "li-1"}, "student": {"sourcedId": "s-1"}, "scoreStatus": "fully graded"}
               for i in range(start, start + n)]
    table, rejects = flatten_records(get_entity("results"), "1.2", records)
    assert not rejects and table.schema == schema
    return table


def test_part_writer_writes_chunks_in_order_while_the_next_fills(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from gradesync.records import arrow_schema
    from gradesync.staging import PartWriter

    writer = PartWriter(staging_path(tmp_path), arrow_schema(get_entity("results"), "1.2"), chunk_rows=250)
    for start in range(0, 1000, 100):
        writer.write(_results_table(start, 100))
    writer.close()
    assert [Path(f).name for f in writer.files] == [f"part-{i:05d}.parquet" for i in range(4)]
    ids = [i for f in writer.files for i in pq.read_table(f.removeprefix("file://")).column("sourced_id").to_pylist()]
    assert ids == [f"r-{i:05d}" for i in range(1000)] and writer.rows_written == 1000


def test_part_writer_raises_a_failed_background_write_and_stops_its_thread(tmp_path: Path) -> None:
    import threading

    from gradesync.records import arrow_schema
    from gradesync.staging import PartWriter

    before = threading.active_count()
    writer = PartWriter(staging_path(tmp_path / "gone"), arrow_schema(get_entity("results"), "1.2"), chunk_rows=10)
    writer.write(_results_table(0, 10))  # handed to the writer thread; its folder does not exist
    with pytest.raises(FileNotFoundError):
        writer.close()
    writer.abort()
    assert threading.active_count() == before
