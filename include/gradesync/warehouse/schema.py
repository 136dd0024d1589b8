"""The warehouse schema as SQLAlchemy Core metadata, derived from the entity registry.

This module describes the *head* schema. Migrations (``migrations/versions``) are frozen copies
of each step, and a test checks that upgrading to head yields exactly this metadata, so a field
added to ``gradesync.entities`` without a migration fails the build instead of a user's upgrade.

Every entity table is keyed by (``integration_id``, ``sourced_id``) and carries the typed
OneRoster fields of all API versions (a 1.1 integration leaves the 1.2-only columns empty), plus
bookkeeping: the provenance of the master-field merge (``field_sources``, ``record_source``), a
``row_hash`` of the content used to skip unchanged rows, when and by which run the row was first
seen and last changed, and soft deletion (``deleted_at``, ``deleted_reason``).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from gradesync.entities import ENTITIES, Entity, Field
from gradesync.warehouse.naming import validate_identifier
from gradesync.warehouse.types import JsonText, KeyText, UTCDateTime

DEFAULT_SCHEMA = "gradesync"
MAX_PREFIX = 16

# Entities whose score changes are kept forever, and the history table of each.
HISTORY_TABLES: dict[str, str] = {
    "results": "result_history",
    "assessment_results": "assessment_result_history",
}
# Columns whose old and new values a history row records.
TRACKED_COLUMNS: tuple[str, ...] = ("status", "score_status", "score", "text_score", "comment", "date_last_modified")
# Reference columns copied into history rows so "history of a student's score" needs no join.
HISTORY_REFS: dict[str, tuple[str, ...]] = {
    "results": ("student_sourced_id", "line_item_sourced_id"),
    "assessment_results": ("student_sourced_id", "assessment_line_item_sourced_id"),
}

DELETED_STATUS = "tobedeleted"
# deleted_reason values
REASON_TOMBSTONE = "tobedeleted"  # IC returned the record with status tobedeleted
REASON_VANISHED = "vanished"  # the record was missing from a full sync

SYNC_TABLES = ("sync_runs", "sync_watermarks", "rejects", "sync_locks")


def sa_type(kind: str) -> sa.types.TypeEngine:
    """SQL type of an entity field kind (see ``gradesync.entities.Kind``)."""
    return {
        "str": sa.Text(),
        "ref": KeyText(),
        "json": JsonText(),
        "float": sa.Float(precision=53),
        "datetime": UTCDateTime(),
        "date": sa.Date(),
        "flag": sa.Boolean(),
    }[kind]


def content_fields(entity: Entity) -> tuple[Field, ...]:
    """All fields of an entity over all API versions, except the key."""
    return tuple(f for f in entity.fields if f.column != "sourced_id")


PROVENANCE_COLUMNS = ("field_sources", "record_source")


@dataclass(frozen=True)
class WarehouseSchema:
    """The tables of one warehouse (one schema name and table prefix)."""

    metadata: sa.MetaData
    schema: str | None
    prefix: str

    def table(self, name: str) -> sa.Table:
        """A table by its unprefixed name, e.g. ``results`` or ``sync_runs``."""
        key = f"{self.schema}.{self.prefix}{name}" if self.schema else f"{self.prefix}{name}"
        return self.metadata.tables[key]

    def entity(self, name: str) -> sa.Table:
        if name not in ENTITIES:
            raise KeyError(f"unknown entity {name!r}; known: {', '.join(ENTITIES)}")
        return self.table(name)

    def history(self, entity_name: str) -> sa.Table | None:
        name = HISTORY_TABLES.get(entity_name)
        return None if name is None else self.table(name)


def _entity_table(md: sa.MetaData, entity: Entity, prefix: str) -> sa.Table:
    name = prefix + entity.name
    cols: list[sa.Column] = [
        sa.Column("integration_id", KeyText(), nullable=False),
        sa.Column("sourced_id", KeyText(), nullable=False),
    ]
    for f in content_fields(entity):
        cols.append(sa.Column(f.column, sa_type(f.kind), nullable=not f.required))
    cols += [
        sa.Column("field_sources", JsonText()),
        sa.Column("record_source", sa.Text()),
        sa.Column("row_hash", sa.BigInteger(), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("first_run_id", KeyText(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.Column("changed_run_id", KeyText(), nullable=False),
        sa.Column("deleted_at", UTCDateTime()),
        sa.Column("deleted_reason", sa.Text()),
    ]
    return sa.Table(
        name, md, *cols, sa.PrimaryKeyConstraint("sourced_id", "integration_id", name=f"{name}_pkey")
    )


def _history_table(md: sa.MetaData, entity: Entity, table_name: str, prefix: str) -> sa.Table:
    name = prefix + table_name
    by_col = {f.column: f for f in entity.fields}
    cols: list[sa.Column] = [
        sa.Column("history_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(),
                  primary_key=True),
        sa.Column("integration_id", KeyText(), nullable=False),
        sa.Column("sourced_id", KeyText(), nullable=False),
        sa.Column("run_id", KeyText(), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
        sa.Column("change", sa.Text(), nullable=False),
    ]
    for ref in HISTORY_REFS[entity.name]:
        cols.append(sa.Column(ref, KeyText()))
    for c in TRACKED_COLUMNS:
        t = sa_type(by_col[c].kind)
        cols += [sa.Column(f"old_{c}", t), sa.Column(f"new_{c}", t)]
    table = sa.Table(name, md, *cols)
    sa.Index(f"{name}_key_idx", table.c.integration_id, table.c.sourced_id, table.c.seen_at)
    sa.Index(f"{name}_run_idx", table.c.integration_id, table.c.run_id)
    return table


def _sync_tables(md: sa.MetaData, prefix: str) -> None:
    p = prefix
    counts = ("extracted", "inserted", "updated", "unchanged", "deleted", "revived", "duplicates", "rejected",
              "staged")
    sa.Table(
        p + "sync_runs", md,
        sa.Column("integration_id", KeyText(), nullable=False),
        sa.Column("run_id", KeyText(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("api_version", sa.Text()),
        sa.Column("full_sync", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        *[sa.Column(c, sa.Integer(), nullable=False, server_default=sa.text("0")) for c in counts],
        sa.Column("watermark", UTCDateTime()),
        sa.Column("previous_watermark", UTCDateTime()),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("load_started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.Column("load_seconds", sa.Float(precision=53), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.PrimaryKeyConstraint("integration_id", "run_id", "entity", name=f"{p}sync_runs_pkey"),
    )
    sa.Table(
        p + "sync_watermarks", md,
        sa.Column("integration_id", KeyText(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("watermark", UTCDateTime(), nullable=False),
        sa.Column("run_id", KeyText(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("integration_id", "entity", name=f"{p}sync_watermarks_pkey"),
    )
    sa.Table(
        p + "rejects", md,
        sa.Column("integration_id", KeyText(), nullable=False),
        sa.Column("run_id", KeyText(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("reject_no", sa.Integer(), nullable=False),
        sa.Column("sourced_id", KeyText()),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("rejected_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("integration_id", "run_id", "entity", "reject_no", name=f"{p}rejects_pkey"),
    )
    sa.Table(
        p + "sync_locks", md,
        sa.Column("integration_id", KeyText(), nullable=False),
        sa.Column("run_id", KeyText(), nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("integration_id", name=f"{p}sync_locks_pkey"),
    )


def build_schema(schema: str | None = DEFAULT_SCHEMA, prefix: str = "") -> WarehouseSchema:
    """Metadata of the head schema for a (validated) schema name and table prefix."""
    if schema is not None:
        validate_identifier(schema, "warehouse schema")
    validate_identifier(prefix, "table prefix", allow_empty=True)
    if len(prefix) > MAX_PREFIX:
        raise ValueError(f"table prefix {prefix!r} is longer than {MAX_PREFIX} characters")
    md = sa.MetaData(schema=schema)
    for entity in ENTITIES.values():
        _entity_table(md, entity, prefix)
        if entity.name in HISTORY_TABLES:
            _history_table(md, entity, HISTORY_TABLES[entity.name], prefix)
    _sync_tables(md, prefix)
    return WarehouseSchema(md, schema, prefix)
