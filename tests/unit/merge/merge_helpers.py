"""Build merge inputs the way the pipeline hands them over: staging tables read back with to_pandas()."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow as pa

from gradesync.entities import Entity
from gradesync.merge import MergeOutcome
from gradesync.records import arrow_schema

UTC = timezone.utc


def ts(text: str) -> datetime:
    """A UTC datetime from 'YYYY-MM-DD' or 'YYYY-MM-DDTHH:MM'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


DEFAULTS: dict[str, dict[str, Any]] = {
    "line_items": {
        "status": "active",
        "date_last_modified": ts("2026-09-01"),
        "title": "Quiz 1",
        "class_sourced_id": "c1",
        "assign_date": ts("2026-09-01"),
        "due_date": ts("2026-09-08"),
    },
    "results": {
        "status": "active",
        "date_last_modified": ts("2026-09-01"),
        "line_item_sourced_id": "li1",
        "student_sourced_id": "s1",
        "score_status": "fully graded",
    },
    "categories": {"status": "active", "date_last_modified": ts("2026-09-01"), "title": "Homework"},
}


def staging(
    entity: Entity, rows: list[dict[str, Any]], version: str = "1.2", *, defaults: bool = True
) -> pd.DataFrame:
    """Rows (column → value; unspecified columns take DEFAULTS or null) as a staging DataFrame."""
    schema = arrow_schema(entity, version)
    base = DEFAULTS.get(entity.name, {}) if defaults else {}
    full = [{f.name: {**base, **row}.get(f.name) for f in schema} for row in rows]
    if not full:
        return schema.empty_table().to_pandas()
    # nullable=False fields must be filled for Arrow; tests that need a missing required value use loose()
    relaxed = pa.schema([f.with_nullable(True) for f in schema])
    return pa.Table.from_pylist(full, schema=relaxed).to_pandas()


def loose(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A vendor frame as a loosely typed table would give it: plain object columns."""
    return pd.DataFrame(rows, dtype=object)


def lineage(outcome: MergeOutcome, sourced_id: str) -> dict[str, Any]:
    merged = outcome.merged
    text = merged.loc[merged["sourced_id"] == sourced_id, "field_sources"]
    assert len(text) == 1, f"{sourced_id} appears {len(text)} times in merged"
    return json.loads(str(text.iloc[0]))


def record(outcome: MergeOutcome, sourced_id: str) -> dict[str, Any]:
    merged = outcome.merged
    rows = merged[merged["sourced_id"] == sourced_id]
    assert len(rows) == 1, f"{sourced_id} appears {len(rows)} times in merged"
    return {k: (None if _missing(v) else v) for k, v in rows.iloc[0].to_dict().items()}


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def reasons(outcome: MergeOutcome) -> list[tuple[str, str | None, str]]:
    """(source, sourced_id, reason) of every reject."""
    r = outcome.rejects
    return [
        (s, None if _missing(i) else i, reason)
        for s, i, reason in zip(r["source"], r["sourced_id"], r["reason"], strict=True)
    ]
