"""v3: the row hash covers the record's key as well as its content.

With the key in it, an XOR of row hashes summarises a set of (key, content) pairs, which lets a
reload compare one checksum per bucket of rows instead of every key (see ``loader``). Stored
hashes are brought up to date here, so the first load after the upgrade still sees unchanged
rows as unchanged. The new hash is the old one with the key hashed in last, so it is computed
from ``(sourced_id, row_hash)`` alone; the formula is frozen here (a unit test checks it against
the loader's ``fold_key``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import sqlalchemy as sa
from alembic import op

from gradesync.warehouse.keyhash import fold_key, unfold_key
from gradesync.warehouse.migrations import names

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ENTITIES = ("categories", "score_scales", "line_items", "results", "assessment_line_items", "assessment_results")
CHUNK = 50_000


def _rehash(convert: Callable[[np.ndarray, pa.Array], np.ndarray]) -> None:
    """Rewrite every stored row hash, table by table, in key order and chunks of CHUNK rows."""
    schema, p = names()
    conn = op.get_bind()
    for entity in ENTITIES:
        t = sa.table(p + entity, sa.column("integration_id"), sa.column("sourced_id"),
                     sa.column("row_hash", sa.BigInteger()), schema=schema)
        key = sa.tuple_(t.c.integration_id, t.c.sourced_id)
        update = sa.update(t).where(t.c.integration_id == sa.bindparam("iid"),
                                    t.c.sourced_id == sa.bindparam("sid")).values(row_hash=sa.bindparam("h"))
        after: tuple[str, str] | None = None
        while True:
            query = sa.select(t.c.integration_id, t.c.sourced_id, t.c.row_hash).order_by(
                t.c.integration_id, t.c.sourced_id).limit(CHUNK)
            if after is not None:
                query = query.where(key > sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
            rows = conn.execute(query).all()
            if not rows:
                break
            iids, sids, hashes = zip(*rows, strict=True)
            new = convert(np.array(hashes, dtype=np.int64), pa.array(sids, pa.string()))
            conn.execute(update, [{"iid": i, "sid": s, "h": int(h)} for i, s, h in zip(iids, sids, new, strict=True)])
            after = (iids[-1], sids[-1])


def upgrade() -> None:
    _rehash(fold_key)


def downgrade() -> None:
    _rehash(unfold_key)
