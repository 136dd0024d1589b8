"""v1: entity tables, result history, run audit, watermarks, rejects and locks.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gradesync.warehouse.migrations import names
from gradesync.warehouse.types import JsonText, KeyText, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copy of the entity fields as of v1: (column, kind, required), key excluded.
ENTITY_FIELDS: dict[str, list[tuple[str, str, bool]]] = {
    "categories": [
        ("status", "str", True),
        ("date_last_modified", "datetime", True),
        ("metadata", "json", False),
        ("title", "str", True),
        ("weight", "float", False),
    ],
    "score_scales": [
        ("status", "str", True),
        ("date_last_modified", "datetime", True),
        ("metadata", "json", False),
        ("title", "str", True),
        ("type", "str", False),
        ("course_sourced_id", "ref", False),
        ("class_sourced_id", "ref", False),
        ("score_scale_value", "json", False),
    ],
    "line_items": [
        ("status", "str", True),
        ("date_last_modified", "datetime", True),
        ("metadata", "json", False),
        ("title", "str", True),
        ("description", "str", False),
        ("assign_date", "datetime", False),
        ("due_date", "datetime", False),
        ("class_sourced_id", "ref", True),
        ("school_sourced_id", "ref", False),
        ("category_sourced_id", "ref", False),
        ("grading_period_sourced_id", "ref", False),
        ("academic_session_sourced_id", "ref", False),
        ("score_scale_sourced_id", "ref", False),
        ("result_value_min", "float", False),
        ("result_value_max", "float", False),
    ],
    "results": [
        ("status", "str", True),
        ("date_last_modified", "datetime", True),
        ("metadata", "json", False),
        ("line_item_sourced_id", "ref", True),
        ("student_sourced_id", "ref", True),
        ("class_sourced_id", "ref", False),
        ("score_scale_sourced_id", "ref", False),
        ("score_status", "str", True),
        ("score", "float", False),
        ("text_score", "str", False),
        ("score_date", "date", False),
        ("comment", "str", False),
        ("in_progress", "flag", False),
        ("incomplete", "flag", False),
        ("late", "flag", False),
        ("missing", "flag", False),
    ],
    "assessment_line_items": [
        ("status", "str", True),
        ("date_last_modified", "datetime", True),
        ("metadata", "json", False),
        ("title", "str", True),
        ("description", "str", False),
        ("class_sourced_id", "ref", False),
        ("parent_assessment_line_item_sourced_id", "ref", False),
        ("score_scale_sourced_id", "ref", False),
        ("result_value_min", "float", False),
        ("result_value_max", "float", False),
    ],
    "assessment_results": [
        ("status", "str", True),
        ("date_last_modified", "datetime", True),
        ("metadata", "json", False),
        ("assessment_line_item_sourced_id", "ref", True),
        ("student_sourced_id", "ref", True),
        ("score_status", "str", True),
        ("score", "float", False),
        ("text_score", "str", False),
        ("score_date", "date", False),
        ("score_scale_sourced_id", "ref", False),
        ("score_percentile", "float", False),
        ("comment", "str", False),
        ("in_progress", "flag", False),
        ("incomplete", "flag", False),
        ("late", "flag", False),
        ("missing", "flag", False),
    ],
}
HISTORY = {
    "results": ("result_history", ("student_sourced_id", "line_item_sourced_id")),
    "assessment_results": ("assessment_result_history", ("student_sourced_id", "assessment_line_item_sourced_id")),
}
TRACKED = ("status", "score_status", "score", "text_score", "comment", "date_last_modified")


def _type(kind: str) -> sa.types.TypeEngine:
    return {
        "str": sa.Text(), "ref": KeyText(), "json": JsonText(), "float": sa.Float(precision=53),
        "datetime": UTCDateTime(), "date": sa.Date(), "flag": sa.Boolean(),
    }[kind]


def upgrade() -> None:
    schema, p = names()
    for entity, fields in ENTITY_FIELDS.items():
        op.create_table(
            p + entity,
            sa.Column("integration_id", KeyText(), nullable=False),
            sa.Column("sourced_id", KeyText(), nullable=False),
            *[sa.Column(c, _type(k), nullable=not req) for c, k, req in fields],
            sa.Column("field_sources", JsonText()),
            sa.Column("record_source", sa.Text()),
            sa.Column("row_hash", sa.BigInteger(), nullable=False),
            sa.Column("first_seen_at", UTCDateTime(), nullable=False),
            sa.Column("first_run_id", KeyText(), nullable=False),
            sa.Column("changed_at", UTCDateTime(), nullable=False),
            sa.Column("changed_run_id", KeyText(), nullable=False),
            sa.Column("deleted_at", UTCDateTime()),
            sa.PrimaryKeyConstraint("integration_id", "sourced_id", name=f"{p}{entity}_pkey"),
            schema=schema,
        )
        if entity in HISTORY:
            hist, refs = HISTORY[entity]
            kinds = {c: k for c, k, _ in fields}
            op.create_table(
                p + hist,
                sa.Column("history_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(),
                          primary_key=True),
                sa.Column("integration_id", KeyText(), nullable=False),
                sa.Column("sourced_id", KeyText(), nullable=False),
                sa.Column("run_id", KeyText(), nullable=False),
                sa.Column("seen_at", UTCDateTime(), nullable=False),
                sa.Column("change", sa.Text(), nullable=False),
                *[sa.Column(r, KeyText()) for r in refs],
                *[sa.Column(f"{x}_{c}", _type(kinds[c])) for c in TRACKED for x in ("old", "new")],
                schema=schema,
            )
            op.create_index(f"{p}{hist}_key_idx", p + hist, ["integration_id", "sourced_id", "seen_at"],
                            schema=schema)
            op.create_index(f"{p}{hist}_run_idx", p + hist, ["integration_id", "run_id"], schema=schema)

    counts = ("extracted", "inserted", "updated", "unchanged", "deleted", "revived", "duplicates", "rejected",
              "staged")
    op.create_table(
        p + "sync_runs",
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
        sa.PrimaryKeyConstraint("integration_id", "run_id", "entity", name=f"{p}sync_runs_pkey"),
        schema=schema,
    )
    op.create_table(
        p + "sync_watermarks",
        sa.Column("integration_id", KeyText(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("watermark", UTCDateTime(), nullable=False),
        sa.Column("run_id", KeyText(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("integration_id", "entity", name=f"{p}sync_watermarks_pkey"),
        schema=schema,
    )
    op.create_table(
        p + "rejects",
        sa.Column("integration_id", KeyText(), nullable=False),
        sa.Column("run_id", KeyText(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("reject_no", sa.Integer(), nullable=False),
        sa.Column("sourced_id", KeyText()),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("rejected_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("integration_id", "run_id", "entity", "reject_no", name=f"{p}rejects_pkey"),
        schema=schema,
    )
    op.create_table(
        p + "sync_locks",
        sa.Column("integration_id", KeyText(), nullable=False),
        sa.Column("run_id", KeyText(), nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("integration_id", name=f"{p}sync_locks_pkey"),
        schema=schema,
    )


def downgrade() -> None:
    schema, p = names()
    for name in ("sync_locks", "rejects", "sync_watermarks", "sync_runs"):
        op.drop_table(p + name, schema=schema)
    for entity in reversed(list(ENTITY_FIELDS)):
        if entity in HISTORY:
            op.drop_table(p + HISTORY[entity][0], schema=schema)
        op.drop_table(p + entity, schema=schema)
