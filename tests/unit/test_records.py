from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pyarrow as pa

from gradesync.entities import ENTITIES, RESULTS, entities_for
from gradesync.records import arrow_schema, flatten_records, rejects_table

RESULT_12 = {
    "sourcedId": "r1",
    "status": "active",
    "dateLastModified": "2026-11-01T10:00:00.000Z",
    "metadata": {"ic": {"legacysourceId": "9"}},
    "lineItem": {"href": "x", "sourcedId": "li1", "type": "lineItem"},
    "student": {"href": "x", "sourcedId": "s1", "type": "user"},
    "class": {"href": "x", "sourcedId": "c1", "type": "class"},
    "scoreStatus": "fully graded",
    "score": 87,
    "textScore": "B+",
    "scoreDate": "2026-10-31",
    "comment": "Très bien \"quoted\"",
    "late": "true",
    "missing": "false",
}


def test_result_flattens_to_typed_columns() -> None:
    table, rejects = flatten_records(RESULTS, "1.2", [RESULT_12])
    assert rejects == []
    row = table.to_pylist()[0]
    assert row["line_item_sourced_id"] == "li1" and row["student_sourced_id"] == "s1"
    assert row["score"] == 87.0 and row["score_date"] == date(2026, 10, 31)
    assert row["date_last_modified"] == datetime(2026, 11, 1, 10, tzinfo=timezone.utc)
    assert row["late"] is True and row["missing"] is False and row["incomplete"] is None
    assert json.loads(row["metadata"]) == {"ic": {"legacysourceId": "9"}}
    assert row["comment"] == "Très bien \"quoted\""


def test_version_11_has_no_12_columns() -> None:
    table, _ = flatten_records(RESULTS, "1.1", [RESULT_12])
    assert "text_score" not in table.column_names and "late" not in table.column_names


def test_bad_records_become_counted_rejects_with_raw_json() -> None:
    missing_student = {k: v for k, v in RESULT_12.items() if k != "student"}
    bad_score = {**RESULT_12, "sourcedId": "r3", "score": "eighty"}
    bad_flag = {**RESULT_12, "sourcedId": "r4", "late": "yes"}
    table, rejects = flatten_records(RESULTS, "1.2", [RESULT_12, missing_student, bad_score, bad_flag, "junk"])
    assert table.num_rows == 1
    reasons = {r.sourced_id: r.reason for r in rejects}
    assert "missing required field student" in reasons["r1"]
    assert "score must be a number" in reasons["r3"]
    assert "late" in reasons["r4"]
    assert reasons[None] == "record is not a JSON object"
    assert json.loads(rejects[1].raw)["score"] == "eighty"
    assert rejects_table(rejects).num_rows == 4


def test_every_entity_has_a_schema_for_each_version_it_serves() -> None:
    for version in ("1.1", "1.2"):
        for name in entities_for(version):
            schema = arrow_schema(ENTITIES[name], version)
            assert schema.field("sourced_id").type == pa.string()
            assert schema.field("date_last_modified").type == pa.timestamp("us", tz="UTC")
