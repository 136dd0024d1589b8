"""v2: why a record is deleted (``deleted_reason``) and how often a run's load was attempted.

``deleted_reason`` tells a record IC deleted (``tobedeleted``) from one that was simply missing
from a full sync (``vanished``: e.g. last school year's results, which IC stops serving). Rows
deleted under v1 cannot be told apart and get ``unknown``.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gradesync.warehouse.migrations import names

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ENTITIES = ("categories", "score_scales", "line_items", "results", "assessment_line_items", "assessment_results")


def upgrade() -> None:
    schema, p = names()
    for entity in ENTITIES:
        with op.batch_alter_table(p + entity, schema=schema) as batch:
            batch.add_column(sa.Column("deleted_reason", sa.Text()))
        table = sa.table(p + entity, sa.column("deleted_at"), sa.column("deleted_reason"), schema=schema)
        op.execute(table.update().where(table.c.deleted_at.is_not(None)).values(deleted_reason="unknown"))
    with op.batch_alter_table(p + "sync_runs", schema=schema) as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("1")))


def downgrade() -> None:
    schema, p = names()
    with op.batch_alter_table(p + "sync_runs", schema=schema) as batch:
        batch.drop_column("attempts")
    for entity in ENTITIES:
        with op.batch_alter_table(p + entity, schema=schema) as batch:
            batch.drop_column("deleted_reason")
