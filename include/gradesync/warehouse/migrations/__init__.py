"""Alembic migrations of the warehouse schema, run programmatically by ``Warehouse.migrate``.

Each revision is a frozen step: it must not import the entity registry or ``schema.py``, which
describe only the head. To change the schema: edit ``schema.py``, add
``versions/NNNN_<what>.py`` with ``down_revision`` set to the previous head and the same
``upgrade`` steps, and run the warehouse tests (one compares the migrated schema with the
metadata). Schema name and table prefix come from ``names()``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

SCRIPT_LOCATION = str(Path(__file__).parent)


def names() -> tuple[str | None, str]:
    """(schema, table prefix) of the warehouse being migrated; schema is None on SQLite."""
    attrs = op.get_context().config.attributes
    return attrs["gradesync_schema"], attrs["gradesync_prefix"]
