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

from gradesync.warehouse.backends import backend_for
from gradesync.warehouse.keyhash import fold_key, unfold_key
from gradesync.warehouse.migrations import names

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ENTITIES = ("categories", "score_scales", "line_items", "results", "assessment_line_items", "assessment_results")
CHUNK = 100_000


def _rehash(convert: Callable[[np.ndarray, pa.Array], np.ndarray]) -> None:
    """Rewrite every stored row hash, table by table.

    Stored hashes are read in chunks (integration by integration, in key order), converted, and
    bulk-staged in a temporary table (COPY on Postgres); one ``UPDATE ... FROM`` per table then
    writes them: a million rows take seconds, not the minutes of one UPDATE per row.
    """
    schema, p = names()
    conn = op.get_bind()
    backend = backend_for(conn.engine.url)
    new_hashes = sa.Table("gs_rehash", sa.MetaData(), sa.Column("iid", sa.Text()), sa.Column("sid", sa.Text()),
                          sa.Column("h", sa.BigInteger()), prefixes=["TEMPORARY"])
    new_hashes.create(conn)
    for entity in ENTITIES:
        t = sa.table(p + entity, sa.column("integration_id"), sa.column("sourced_id"),
                     sa.column("row_hash", sa.BigInteger()), schema=schema)
        integrations = conn.execute(sa.select(t.c.integration_id).distinct()).scalars().all()
        for iid in integrations:  # then by key: an index range scan whichever column leads the key
            after: str | None = None
            while True:
                query = sa.select(t.c.sourced_id, t.c.row_hash).where(t.c.integration_id == iid).order_by(
                    t.c.sourced_id).limit(CHUNK)
                if after is not None:
                    query = query.where(t.c.sourced_id > after)
                rows = conn.execute(query).all()
                if not rows:
                    break
                sids, hashes = zip(*rows, strict=True)
                keys = pa.array(sids, pa.string())
                new = convert(np.array(hashes, dtype=np.int64), keys)
                backend.stage(conn, new_hashes, [pa.RecordBatch.from_arrays(
                    [pa.array([iid] * len(sids), pa.string()), keys, pa.array(new)], names=["iid", "sid", "h"])])
                after = sids[-1]
        if integrations:
            backend.analyze(conn, new_hashes)
            conn.execute(sa.update(t).where(t.c.integration_id == new_hashes.c.iid, t.c.sourced_id == new_hashes.c.sid)
                         .values(row_hash=new_hashes.c.h))
            conn.execute(sa.delete(new_hashes))
    new_hashes.drop(conn)


def upgrade() -> None:
    _rehash(fold_key)


def downgrade() -> None:
    _rehash(unfold_key)
