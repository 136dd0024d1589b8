"""Turn OneRoster JSON records into typed Arrow tables, and bad records into counted rejects.

The Arrow schema derived here is the staging format every later step reads: Parquet files whose
columns are ``Entity.columns(api_version)``. A record that lacks a required field or carries an
unparseable value is never dropped: it becomes a ``Reject`` with its raw JSON and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import pyarrow as pa

from gradesync.entities import Entity, Field

_ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "ref": pa.string(),
    "json": pa.string(),
    "float": pa.float64(),
    "datetime": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "flag": pa.bool_(),
}


def arrow_schema(entity: Entity, api_version: str) -> pa.Schema:
    return pa.schema(
        [
            pa.field(f.column, _ARROW_TYPES[f.kind], nullable=not f.required)
            for f in entity.fields_for(api_version)
        ]
    )


@dataclass(frozen=True)
class Reject:
    entity: str
    sourced_id: str | None
    reason: str
    raw: str  # the record as received, JSON text

    def as_row(self) -> dict[str, Any]:
        return {"entity": self.entity, "sourced_id": self.sourced_id, "reason": self.reason, "raw": self.raw}


REJECT_SCHEMA = pa.schema(
    [
        pa.field("entity", pa.string(), nullable=False),
        pa.field("sourced_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),
    ]
)


class BadValue(ValueError):
    pass


def parse_datetime(value: str) -> datetime:
    """OneRoster date-times are UTC ISO 8601; a bare date is taken as midnight UTC."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _convert(f: Field, value: Any) -> Any:
    if value is None or value == "":
        return None
    kind = f.kind
    if kind in ("str",):
        return str(value)
    if kind == "ref":
        if isinstance(value, dict):
            ref = value.get("sourcedId")
            return None if ref in (None, "") else str(ref)
        raise BadValue(f"{f.source} must be a reference object with sourcedId")
    if kind == "float":
        if isinstance(value, bool):
            raise BadValue(f"{f.source} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise BadValue(f"{f.source} must be a number, got {value!r}") from None
    if kind == "datetime":
        try:
            return parse_datetime(str(value))
        except ValueError:
            raise BadValue(f"{f.source} must be an ISO 8601 date-time, got {value!r}") from None
    if kind == "date":
        try:
            return date.fromisoformat(str(value)[:10])
        except ValueError:
            raise BadValue(f"{f.source} must be an ISO 8601 date, got {value!r}") from None
    if kind == "flag":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "false"):
            return text == "true"
        raise BadValue(f"{f.source} must be \"true\" or \"false\", got {value!r}")
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    raise AssertionError(kind)


def flatten_record(entity: Entity, api_version: str, record: dict[str, Any]) -> dict[str, Any]:
    """One OneRoster record → one staging row; raises ``BadValue`` with a reason."""
    if not isinstance(record, dict):
        raise BadValue("record is not a JSON object")
    row: dict[str, Any] = {}
    for f in entity.fields_for(api_version):
        value = _convert(f, record.get(f.source))
        if value is None and f.required:
            raise BadValue(f"missing required field {f.source}")
        row[f.column] = value
    return row


def flatten_records(
    entity: Entity, api_version: str, records: Iterable[dict[str, Any]]
) -> tuple[pa.Table, list[Reject]]:
    """Flatten a page of records into a typed table plus the rejects it contained."""
    fields = entity.fields_for(api_version)
    columns: dict[str, list[Any]] = {f.column: [] for f in fields}
    rejects: list[Reject] = []
    for record in records:
        try:
            row = flatten_record(entity, api_version, record)
        except BadValue as exc:
            sourced_id = record.get("sourcedId") if isinstance(record, dict) else None
            rejects.append(
                Reject(entity.name, None if sourced_id is None else str(sourced_id), str(exc),
                       json.dumps(record, ensure_ascii=False, sort_keys=True, default=str))
            )
            continue
        for column, value in row.items():
            columns[column].append(value)
    table = pa.Table.from_pydict(columns, schema=arrow_schema(entity, api_version))
    return table, rejects


def rejects_table(rejects: list[Reject]) -> pa.Table:
    return pa.Table.from_pylist([r.as_row() for r in rejects], schema=REJECT_SCHEMA)
