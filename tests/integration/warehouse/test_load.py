"""Loading staged files: inserts, updates, deletes, revivals, history, audit and idempotency."""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from conftest import Stager, result

from gradesync.entities import ENTITIES
from gradesync.warehouse import LoadCounts, Warehouse
from gradesync.warehouse.testing import throwaway_schema

T0 = datetime(2026, 9, 1, 2, 0, tzinfo=timezone.utc)
T1 = datetime(2026, 9, 2, 2, 0, tzinfo=timezone.utc)
T2 = datetime(2026, 9, 3, 2, 0, tzinfo=timezone.utc)


def load(wh: Warehouse, stage: Stager, records: list[dict[str, Any]], run_id: str, *, full_sync: bool = True,
         started_at: datetime | None = None, watermark: datetime | None = None, duplicates: int = 0,
         entity: str = "results", api_version: str = "1.2", files: int = 1,
         integration: str = "district-a") -> LoadCounts:
    paths, rejects, extracted = stage(records, entity, api_version, files=files)
    with wh.integration_lock(integration, run_id):
        return wh.load_entity(integration, entity, api_version, paths, run_id=run_id, full_sync=full_sync,
                              extracted=extracted + duplicates, duplicates=duplicates, rejects=rejects,
                              watermark=watermark, started_at=started_at)


def count_rows(wh: Warehouse, table: str) -> int:
    t = wh.tables.table(table)
    with wh.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()


def balanced(c: LoadCounts) -> bool:
    return c.extracted == c.inserted + c.updated + c.unchanged + c.duplicates + c.rejected


def test_initial_load_round_trips_the_staged_values(wh: Warehouse, stage: Stager) -> None:
    records = [result(i) for i in range(10)]
    records[3]["comment"] = "Great work — 👍, \"quoted\", comma, new\nline"
    records[4]["textScore"] = "B+"
    records[5]["score"] = None
    c = load(wh, stage, records, "run-1", started_at=T0)
    assert c == LoadCounts(inserted=10, updated=0, unchanged=0, deleted=0, revived=0, rejected=0, extracted=10)
    df = wh.read_table("results", "district-a")
    assert list(df.sourced_id) == sorted(f"res-{i}" for i in range(10))
    row = df.set_index("sourced_id").loc["res-3"]
    assert row.comment == records[3]["comment"]
    assert row.score == 3.0 and row.line_item_sourced_id == "li-0" and row.class_sourced_id == "cls-1"
    assert row.date_last_modified == pd.Timestamp("2026-09-01T08:00:00Z")
    assert row.score_date.isoformat() == "2026-09-01"
    assert bool(row.late) is False and pd.isna(row.missing)
    assert json.loads(row.metadata) == {"ic": {"legacysourceId": "1003"}}
    assert row.first_seen_at == pd.Timestamp(T0) and row.first_run_id == "run-1"
    assert pd.isna(row.deleted_at) and row.status == "active"
    by_id = df.set_index("sourced_id")
    assert by_id.loc["res-4"].text_score == "B+" and pd.isna(by_id.loc["res-3"].text_score)
    assert pd.isna(by_id.loc["res-5"].score)
    assert count_rows(wh, "result_history") == 0  # the first version lives in the row itself


def test_rerunning_the_same_run_writes_nothing(wh: Warehouse, stage: Stager) -> None:
    records = [result(i) for i in range(6)] + [{"sourcedId": "bad", "status": "active"}]
    first = load(wh, stage, records, "run-1", watermark=T0)
    assert (first.inserted, first.rejected) == (6, 1)
    second = load(wh, stage, [result(i, score=50.0 if i == 1 else None) for i in range(5)], "run-2",
                  watermark=T1)
    assert (second.updated, second.deleted, second.unchanged) == (1, 1, 4)
    before = {t: count_rows(wh, t) for t in ("results", "result_history", "sync_runs", "rejects",
                                               "sync_watermarks")}
    snapshot = wh.read_table("results", "district-a")
    again = load(wh, stage, [result(i, score=50.0 if i == 1 else None) for i in range(5)], "run-2", watermark=T1)
    assert again == second  # what the run did, as recorded the first time
    assert {t: count_rows(wh, t) for t in before} == before
    pd.testing.assert_frame_equal(wh.read_table("results", "district-a"), snapshot)
    summary = wh.run_summary("district-a", "run-2")
    assert len(summary) == 1 and summary[0]["attempts"] == 1 and summary[0]["updated"] == 1
    assert again == LoadCounts(**{k: summary[0][k] for k in LoadCounts.__dataclass_fields__})


def test_changed_unchanged_deleted_vanished_and_revived(wh: Warehouse, stage: Stager) -> None:
    load(wh, stage, [result(i) for i in range(6)], "run-1", started_at=T0)
    # res-0 score changes, res-1 becomes a tombstone, res-2 vanishes, res-3 only gets a new
    # dateLastModified, res-4/5 unchanged, res-6 is new
    second = [result(0, score=99.5, dlm="2026-09-02T07:00:00Z"), result(1, status="tobedeleted"),
              result(3, dlm="2026-09-02T07:00:00Z"), result(4), result(5), result(6)]
    c = load(wh, stage, second, "run-2", started_at=T1)
    assert c == LoadCounts(inserted=1, updated=3, unchanged=2, deleted=2, revived=0, rejected=0, extracted=6)
    df = wh.read_table("results", "district-a").set_index("sourced_id")
    assert df.loc["res-0", "score"] == 99.5 and df.loc["res-0", "changed_run_id"] == "run-2"
    assert df.loc["res-1", "status"] == "tobedeleted" and df.loc["res-1", "deleted_at"] == pd.Timestamp(T1)
    assert df.loc["res-1", "deleted_reason"] == "tobedeleted"
    assert df.loc["res-2", "status"] == "tobedeleted" and df.loc["res-2", "deleted_reason"] == "vanished"
    assert df.loc["res-4", "changed_run_id"] == "run-1"  # untouched
    assert len(df) == 7  # nothing is ever physically removed
    assert sorted(wh.known_sourced_ids("district-a", "results")) == ["res-0", "res-3", "res-4", "res-5", "res-6"]
    assert len(wh.known_sourced_ids("district-a", "results", include_deleted=True)) == 7

    hist = wh.read_table("result_history", "district-a")
    changes = {r.sourced_id: r for r in hist.itertuples()}
    assert set(changes) == {"res-0", "res-1", "res-2"}  # res-3's score/status/comment did not change
    assert (changes["res-0"].change, changes["res-0"].old_score, changes["res-0"].new_score) == ("update", 0.0, 99.5)
    assert changes["res-0"].new_date_last_modified == pd.Timestamp("2026-09-02T07:00:00Z")
    assert (changes["res-1"].change, changes["res-1"].old_status, changes["res-1"].new_status) == (
        "delete", "active", "tobedeleted")
    assert changes["res-2"].change == "delete" and changes["res-2"].run_id == "run-2"
    assert changes["res-2"].seen_at == pd.Timestamp(T1) and changes["res-2"].student_sourced_id == "stu-2"

    # both deleted records come back unchanged: revived, with a history row each
    third = [*second[:1], result(1), result(2), *second[2:]]
    c = load(wh, stage, third, "run-3", started_at=T2)
    assert (c.updated, c.revived, c.deleted, c.unchanged, c.inserted) == (2, 2, 0, 5, 0)
    df = wh.read_table("results", "district-a").set_index("sourced_id")
    assert df.loc[["res-1", "res-2"], "deleted_at"].isna().all()
    assert (df.loc[["res-1", "res-2"], "status"] == "active").all()
    assert df.loc[["res-1", "res-2"], "deleted_reason"].isna().all()
    hist = wh.read_table("result_history", "district-a")
    assert sorted(hist[hist.run_id == "run-3"].change) == ["revive", "revive"]


def test_delta_sync_does_not_delete_missing_records(wh: Warehouse, stage: Stager) -> None:
    load(wh, stage, [result(i) for i in range(4)], "run-1")
    c = load(wh, stage, [result(1, score=7.5)], "run-2", full_sync=False)
    assert (c.updated, c.deleted, c.unchanged) == (1, 0, 0)
    assert wh.read_table("results", "district-a").deleted_at.isna().all()


def test_new_tombstone_is_kept_as_a_deleted_record(wh: Warehouse, stage: Stager) -> None:
    load(wh, stage, [result(1)], "run-1")
    c = load(wh, stage, [result(1), result(2, status="tobedeleted")], "run-2", full_sync=False)
    assert (c.inserted, c.deleted) == (1, 0)
    row = wh.read_table("results", "district-a").set_index("sourced_id").loc["res-2"]
    assert row.status == "tobedeleted" and not pd.isna(row.deleted_at)


def test_as_of_query_from_the_readme(wh: Warehouse, stage: Stager) -> None:
    load(wh, stage, [result(1, score=70.0)], "run-1", started_at=T0)
    load(wh, stage, [result(1, score=80.0)], "run-2", started_at=T1)
    load(wh, stage, [result(1, score=90.0, comment="retake")], "run-3", started_at=T2)
    sql = _readme_query("what was this grade on")
    sql = sql.replace("gradesync.", f"{wh.schema_name}." if wh.schema_name else "")
    expectations = {
        datetime(2026, 8, 31, tzinfo=timezone.utc): None,
        T0: 70.0,
        datetime(2026, 9, 1, 12, tzinfo=timezone.utc): 70.0,
        datetime(2026, 9, 2, 12, tzinfo=timezone.utc): 80.0,
        datetime(2026, 9, 4, tzinfo=timezone.utc): 90.0,
    }
    with wh.engine.connect() as conn:
        for at, expected in expectations.items():
            at_param: Any = at if wh.backend.name == "postgresql" else at.strftime("%Y-%m-%d %H:%M:%S.%f")
            rows = conn.execute(sa.text(sql), {"integration_id": "district-a", "sourced_id": "res-1",
                                               "at": at_param}).all()
            got = rows[0].score if rows else None
            assert got == expected, (at, rows)


def _readme_query(marker: str) -> str:
    """The SQL block that follows ``marker`` in docs/warehouse.md (tests keep the docs honest)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "docs" / "warehouse.md").read_text()
    after = text[text.lower().index(marker.lower()):]
    block = after[after.index("```sql") + len("```sql"):]
    return block[: block.index("```")].strip().rstrip(";")


@pytest.mark.parametrize("marker", ["latest grades of a class", "history of a student's score",
                                    "what changed last night", "what was rejected, and why"])
def test_every_readme_query_runs(wh: Warehouse, stage: Stager, marker: str) -> None:
    line_items = [{"sourcedId": f"li-{i}", "status": "active", "dateLastModified": "2026-09-01T00:00:00Z",
                   "title": f"Quiz {i}", "class": {"sourcedId": "cls-1"}} for i in range(3)]
    load(wh, stage, line_items, "run-1", entity="line_items", started_at=T0)
    load(wh, stage, [result(1, score=70.0), {"sourcedId": "x", "status": "active"}], "run-1", started_at=T0)
    load(wh, stage, [result(1, score=80.0)], "run-2", started_at=T1)
    sql = _readme_query(marker).replace("gradesync.", f"{wh.schema_name}." if wh.schema_name else "")
    params = {"integration_id": "district-a", "class_sourced_id": "cls-1", "student_sourced_id": "stu-1",
              "since": T0 if wh.backend.name == "postgresql" else T0.strftime("%Y-%m-%d %H:%M:%S.%f")}
    with wh.engine.connect() as conn:
        rows = conn.execute(sa.text(sql), params).all()
    assert rows, marker


def test_audit_counts_add_up_with_rejects_and_duplicates(wh: Warehouse, stage: Stager) -> None:
    bad = [{"sourcedId": "r-bad-1", "status": "active"}, {"sourcedId": "r-bad-2", "status": "active",
           "dateLastModified": "yesterday"}]
    c = load(wh, stage, [result(i) for i in range(5)] + bad, "run-1", duplicates=3)
    assert (c.inserted, c.rejected, c.duplicates, c.extracted) == (5, 2, 3, 10) and balanced(c)
    rej = wh.read_table("rejects", "district-a")
    assert list(rej.sourced_id) == ["r-bad-1", "r-bad-2"] and rej.reason.str.contains("dateLastModified").all()
    assert rej.run_id.eq("run-1").all() and json.loads(rej.raw[0])["sourcedId"] == "r-bad-1"
    row = wh.run_summary("district-a", "run-1")[0]
    assert row["extracted"] == row["inserted"] + row["updated"] + row["unchanged"] + row["duplicates"] + row["rejected"]
    assert row["status"] == "success" and row["staged"] == 5 and row["full_sync"] is True


def test_duplicate_keys_in_files_keep_the_latest_version(wh: Warehouse, stage: Stager) -> None:
    records = [result(1, score=1.0, dlm="2026-09-01T00:00:00Z"), result(2),
               result(1, score=3.0, dlm="2026-09-03T00:00:00Z"), result(1, score=2.0, dlm="2026-09-02T00:00:00Z")]
    c = load(wh, stage, records, "run-1", files=2)
    assert (c.inserted, c.duplicates) == (2, 2) and balanced(c)
    assert wh.read_table("results", "district-a").set_index("sourced_id").loc["res-1", "score"] == 3.0
    c = load(wh, stage, records + [result(5)], "run-2", files=3)
    assert (c.inserted, c.updated, c.unchanged, c.duplicates) == (1, 0, 2, 2) and balanced(c)


def test_watermark_advances_only_with_a_committed_load(wh: Warehouse, stage: Stager, tmp_path: Any) -> None:
    assert wh.get_watermark("district-a", "results") is None
    load(wh, stage, [result(1)], "run-1", watermark=T0)
    assert wh.get_watermark("district-a", "results") == T0
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    good, _, _ = stage([result(2)])
    with pytest.raises(Exception):  # noqa: B017 - any failure must roll back
        wh.load_entity("district-a", "results", "1.2", [*good, str(broken)], run_id="run-2", full_sync=True,
                       extracted=2, watermark=T1)
    assert wh.get_watermark("district-a", "results") == T0
    assert list(wh.read_table("results", "district-a").sourced_id) == ["res-1"]
    failed = wh.run_summary("district-a", "run-2")
    assert failed[0]["status"] == "failed" and failed[0]["error"]
    load(wh, stage, [result(1), result(2)], "run-2", watermark=T1)
    assert wh.get_watermark("district-a", "results") == T1
    summary = wh.run_summary("district-a", "run-2")[0]
    assert summary["status"] == "success" and summary["attempts"] == 2 and summary["error"] is None
    load(wh, stage, [result(1), result(2)], "run-3")  # watermark=None leaves it
    assert wh.get_watermark("district-a", "results") == T1


def test_integrations_do_not_touch_each_other(wh: Warehouse, stage: Stager) -> None:
    load(wh, stage, [result(i) for i in range(3)], "a-1", integration="district-a")
    load(wh, stage, [result(i, score=5.0) for i in range(2)], "b-1", integration="district-b")
    c = load(wh, stage, [result(0)], "b-2", integration="district-b")
    assert (c.deleted, c.unchanged) == (1, 0) or (c.deleted, c.updated) == (1, 1)
    assert wh.read_table("results", "district-a").deleted_at.isna().all()
    assert len(wh.read_table("results", "district-b")) == 2


def test_every_entity_and_api_version_loads(wh: Warehouse, stage: Stager) -> None:
    ref = {"sourcedId": "x-1", "type": "t", "href": "h"}
    base = {"status": "active", "dateLastModified": "2026-09-01T00:00:00Z", "title": "T", "class": ref}
    samples = {
        "categories": {**base, "weight": 0.25},
        "score_scales": {**base, "type": "letter", "scoreScaleValue": [{"itemValueLHS": "A", "itemValueRHS": "90"}]},
        "line_items": {**base, "assignDate": "2026-09-01T00:00:00Z", "dueDate": "2026-09-08T00:00:00Z",
                       "school": ref, "category": ref, "resultValueMin": 0, "resultValueMax": 100},
        "results": result(0),
        "assessment_line_items": {**base, "parentAssessmentLineItem": ref},
        "assessment_results": {**base, "assessmentLineItem": ref, "student": ref, "scoreStatus": "submitted",
                               "score": 12.5, "scorePercentile": 80.0, "inProgress": "true"},
    }
    for name, entity in ENTITIES.items():
        for api in entity.versions:
            rec = {**samples[name], "sourcedId": f"{name}-{api}"}
            c = load(wh, stage, [rec], f"run-{name}-{api}", entity=name, api_version=api, full_sync=False)
            assert c.inserted == 1 and c.rejected == 0, (name, api)
        assert len(wh.read_table(name, "district-a")) == len(entity.versions)
    sv = wh.read_table("score_scales", "district-a").score_scale_value[0]
    assert json.loads(sv) == [{"itemValueLHS": "A", "itemValueRHS": "90"}]
    assert pd.isna(wh.read_table("line_items", "district-a").set_index("sourced_id").loc[
        "line_items-1.1", "school_sourced_id"])


def test_provenance_columns_and_object_storage_paths(wh: Warehouse, tmp_path: Any) -> None:
    """field_sources/record_source are stored; files may be path objects opened with .open('rb')."""
    from gradesync.entities import RESULTS
    from gradesync.records import flatten_records

    table, _ = flatten_records(RESULTS, "1.2", [result(1), result(2)])
    table = table.append_column("field_sources", pa.array(['{"score": "ic"}', None]))
    table = table.append_column("record_source", pa.array(["ic", ""]))  # "" stays apart from null
    path = tmp_path / "prov.parquet"
    pq.write_table(table, path)

    class StoragePath:  # the shape of airflow.sdk.ObjectStoragePath that the loader uses
        def __init__(self, p: Any) -> None:
            self.p = p

        def open(self, mode: str) -> Any:
            return open(self.p, mode)

    c = wh.load_entity("district-a", "results", "1.2", [StoragePath(path)], run_id="run-1", full_sync=True,
                       extracted=2)
    assert c.inserted == 2
    df = wh.read_table("results", "district-a").set_index("sourced_id")
    assert json.loads(df.loc["res-1", "field_sources"]) == {"score": "ic"}
    assert list(df.record_source) == ["ic", ""]
    # a changed provenance alone is a change of the row
    table = table.set_column(table.schema.get_field_index("record_source"), "record_source",
                             pa.array(["ic", "ic"]))
    pq.write_table(table, path)
    c = wh.load_entity("district-a", "results", "1.2", [str(path)], run_id="run-2", full_sync=True, extracted=2)
    assert (c.updated, c.unchanged) == (1, 1)


def test_bigger_reload_takes_the_keys_first_path(wh: Warehouse, stage: Stager) -> None:
    n = 3000
    load(wh, stage, [result(i) for i in range(n)], "run-1", files=3)
    changed = {7, 1500, 2999}
    records = [result(i, score=-1.0 if i in changed else None) for i in range(n) if i != 42] + [result(n)]
    c = load(wh, stage, records, "run-2", files=4)
    assert (c.inserted, c.updated, c.deleted, c.unchanged) == (1, 3, 1, n - 4) and balanced(c)
    df = wh.read_table("results", "district-a").set_index("sourced_id")
    assert (df.loc[[f"res-{i}" for i in changed], "score"] == -1.0).all()
    assert df.loc["res-42", "deleted_reason"] == "vanished"
    hist = wh.read_table("result_history", "district-a")
    assert sorted(hist.sourced_id) == sorted([f"res-{i}" for i in changed] + ["res-42"])


def test_empty_full_sync_deletes_everything_and_empty_delta_nothing(wh: Warehouse, stage: Stager) -> None:
    load(wh, stage, [result(i) for i in range(3)], "run-1")
    c = load(wh, stage, [], "run-2", full_sync=False)
    assert c == LoadCounts()
    assert wh.read_table("results", "district-a").deleted_at.isna().all()
    c = load(wh, stage, [], "run-3", full_sync=True)
    assert (c.deleted, c.extracted) == (3, 0) and balanced(c)
    assert (wh.read_table("results", "district-a").deleted_reason == "vanished").all()


def test_threads_of_one_run_share_the_lock_and_load_entities_in_parallel(wh: Warehouse, stage: Stager) -> None:
    import threading

    jobs = {"categories": [{"sourcedId": "c1", "status": "active", "dateLastModified": "2026-09-01T00:00:00Z",
                            "title": "Homework"}],
            "results": [result(i) for i in range(20)]}
    staged = {name: stage(records, name) for name, records in jobs.items()}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        paths, rejects, n = staged[name]
        try:
            wh.load_entity("district-a", name, "1.2", paths, run_id="run-1", full_sync=True, extracted=n)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    with wh.integration_lock("district-a", "run-1"):
        threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert sorted(r["entity"] for r in wh.run_summary("district-a", "run-1")) == ["categories", "results"]
    with wh.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(wh.tables.table("sync_locks"))).scalar() == 0


def test_files_written_by_pandas_load_the_same(wh: Warehouse, tmp_path: Any) -> None:
    """The merge step writes its output with pandas: ns timestamps, object columns, NaN, extra columns."""
    frame = pd.DataFrame({
        "sourced_id": ["res-1", "res-2"],
        "status": ["active", "active"],
        "date_last_modified": pd.to_datetime(["2026-09-01T08:00:00Z", "2026-09-02T08:00:00Z"], utc=True),
        "metadata": ['{"ic": {"legacysourceId": "7"}}', None],
        "line_item_sourced_id": ["li-1", "li-1"],
        "student_sourced_id": ["stu-1", "stu-2"],
        "score_status": ["fully graded", "submitted"],
        "score": [91.5, float("nan")],
        "score_date": [datetime(2026, 9, 1).date(), None],
        "late": [True, None],
        "comment": [None, None],
        "record_source": ["ic", "vendor"],
        "merge_note": ["x", "y"],  # unknown columns are ignored
    })
    path = tmp_path / "merged.parquet"
    frame.to_parquet(path)
    c = wh.load_entity("district-a", "results", "1.2", [f"file://{path}"], run_id="run-1", full_sync=True,
                       extracted=2)
    assert c.inserted == 2
    df = wh.read_table("results", "district-a").set_index("sourced_id")
    assert df.loc["res-1", "score"] == 91.5 and pd.isna(df.loc["res-2", "score"])
    assert df.loc["res-2", "date_last_modified"] == pd.Timestamp("2026-09-02T08:00:00Z")
    assert bool(df.loc["res-1", "late"]) is True and pd.isna(df.loc["res-2", "late"])
    assert df.loc["res-2", "record_source"] == "vendor"
    c = wh.load_entity("district-a", "results", "1.2", [str(path)], run_id="run-2", full_sync=True, extracted=2)
    assert c.unchanged == 2


def test_assessment_results_keep_history_too(wh: Warehouse, stage: Stager) -> None:
    def rec(score: float) -> dict[str, Any]:
        return {"sourcedId": "ar-1", "status": "active", "dateLastModified": "2026-09-01T00:00:00Z",
                "assessmentLineItem": {"sourcedId": "ali-1"}, "student": {"sourcedId": "stu-1"},
                "scoreStatus": "fully graded", "score": score}

    load(wh, stage, [rec(10.0)], "run-1", entity="assessment_results", started_at=T0)
    c = load(wh, stage, [rec(12.0)], "run-2", entity="assessment_results", started_at=T1)
    assert c.updated == 1
    hist = wh.read_table("assessment_result_history", "district-a")
    assert list(zip(hist.old_score, hist.new_score, hist.assessment_line_item_sourced_id, strict=True)) == [
        (10.0, 12.0, "ali-1")]


@pytest.mark.parametrize("cap", [100_000, 3])
def test_reload_with_rows_kept_from_the_first_pass(wh: Warehouse, stage: Stager, cap: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows modified after the watermark are kept from the first pass; the rest come from a second."""
    import gradesync.warehouse.loader as loader

    monkeypatch.setattr(loader, "SPECULATION_CAP", cap)
    old, new = "2026-08-20T08:00:00Z", "2026-09-05T08:00:00Z"  # the watermark is 2026-09-02
    load(wh, stage, [result(i, dlm=old) for i in range(200)], "run-1", watermark=datetime(2026, 9, 2, tzinfo=timezone.utc))
    records = [result(i, dlm=old) for i in range(200) if i != 9]
    records[1] = result(1, score=-1.0, dlm=new)  # changed, modified after the watermark
    records[2] = result(2, score=-2.0, dlm=old)  # changed without a new dateLastModified
    records[3] = result(3, dlm=new)  # only touched
    records += [result(1, score=-7.0, dlm=old), result(500, dlm=new), result(501, dlm=old)]  # older copy, new rows
    c = load(wh, stage, records, "run-2", files=3, duplicates=0)
    assert (c.inserted, c.updated, c.deleted, c.duplicates) == (2, 3, 1, 1) and balanced(c)
    df = wh.read_table("results", "district-a").set_index("sourced_id")
    assert df.loc["res-1", "score"] == -1.0 and df.loc["res-2", "score"] == -2.0
    assert df.loc["res-3", "date_last_modified"] == pd.Timestamp(new)
    assert df.loc["res-9", "deleted_reason"] == "vanished" and {"res-500", "res-501"} <= set(df.index)
    hist = wh.read_table("result_history", "district-a")
    assert sorted(hist.sourced_id) == ["res-1", "res-2", "res-9"]


def _next_state(rng: random.Random, state: dict[int, dict[str, Any]], gone: dict[int, dict[str, Any]],
                new_dlm: str, old_dlm: str, kinds: tuple[str, ...], serial: list[int]) -> list[dict[str, Any]]:
    """Apply random changes of the given kinds to ``state``; return the records a full sync serves."""
    live = sorted(state)
    extra: list[dict[str, Any]] = []
    for kind in kinds:
        for _ in range(rng.randint(1, 6)):
            i = rng.choice(live)
            if kind == "changed":  # IC stamps the change
                state[i] = result(i, score=rng.random() * 100, dlm=new_dlm)
            elif kind == "changed unstamped":
                state[i] = {**state[i], "comment": f"edited {rng.random()}"}
            elif kind == "tombstone":
                state[i] = {**state[i], "status": "tobedeleted", "dateLastModified": new_dlm}
            elif kind == "vanished" and i in state:
                gone[i] = state.pop(i)
            elif kind == "revived" and gone:
                j = rng.choice(sorted(gone))
                state[j] = gone.pop(j)
            elif kind in ("new", "new unstamped"):
                serial[0] += 1
                state[serial[0]] = result(serial[0], dlm=new_dlm if kind == "new" else old_dlm)
            elif kind == "duplicate" and i in state:  # an older copy next to the current one
                extra.append({**state[i], "score": -1.0, "dateLastModified": old_dlm})
    records = list(state.values()) + extra
    rng.shuffle(records)
    return records


@pytest.mark.postgres
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_checksum_comparison_writes_exactly_what_comparing_every_key_writes(
        stage: Stager, caplog: pytest.LogCaptureFixture, seed: int) -> None:
    """Warehouse A keeps a watermark, so reloads compare checksums and stage few keys; B has none,
    so every key is compared. Round after round of random changes, both must end up identical."""
    rng = random.Random(seed)
    state = {i: result(i, dlm="2026-08-20T08:00:00Z") for i in range(600)}
    gone: dict[int, dict[str, Any]] = {}
    serial = [10_000]
    rounds = [("changed", "new", "tombstone"),  # all stamped: the checksums match
              ("vanished", "changed unstamped", "new unstamped"),
              ("revived", "duplicate", "changed"),
              ("changed", "changed unstamped", "vanished", "revived", "new", "new unstamped", "duplicate",
               "tombstone")]
    verdicts = []
    with throwaway_schema() as (url_a, schema_a), throwaway_schema() as (url_b, schema_b):
        a, b = Warehouse(url_a, schema=schema_a), Warehouse(url_b, schema=schema_b)
        a.migrate()
        b.migrate()
        try:
            records = list(state.values())
            for n, kinds in enumerate([(), *rounds]):
                new_dlm = f"2026-09-{n + 1:02d}T08:00:00Z"
                if n:
                    records = _next_state(rng, state, gone, new_dlm, "2026-08-20T08:00:00Z", kinds, serial)
                paths, rejects, extracted = stage(records)
                seen = datetime(2026, 9, n + 1, 23, tzinfo=timezone.utc)
                caplog.clear()
                with caplog.at_level(logging.INFO, logger="gradesync.warehouse.loader"):
                    got_a = a.load_entity("district-a", "results", "1.2", paths, run_id=f"run-{n}", full_sync=True,
                                          extracted=extracted, watermark=datetime.fromisoformat(new_dlm),
                                          started_at=seen)
                verdicts += [r.getMessage() for r in caplog.records if "staged rows by key" in r.getMessage()]
                got_b = b.load_entity("district-a", "results", "1.2", paths, run_id=f"run-{n}", full_sync=True,
                                      extracted=extracted, started_at=seen)
                assert got_a == got_b and balanced(got_a), (kinds, got_a, got_b)
                for table in ("results", "result_history"):
                    frames = [wh.read_table(table, "district-a") for wh in (a, b)]
                    order = ["sourced_id"] + (["run_id"] if table == "result_history" else [])
                    frames = [f.drop(columns=["history_id"], errors="ignore").sort_values(order).reset_index(drop=True)
                              for f in frames]
                    pd.testing.assert_frame_equal(*frames)
        finally:
            a.dispose()
            b.dispose()
    assert "checksums differ in 0 of" in verdicts[0]  # round 1: nothing outside the staged keys changed
    assert all("checksums differ in 0 of" not in v for v in verdicts[1:])
    staged = [int(v.split(" of ")[0].split()[-1].replace(",", "")) for v in verdicts]
    assert all(k < 600 for k in staged), verdicts  # some rows were settled by checksum each time
