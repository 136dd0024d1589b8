"""The pieces of the reload checksums that must agree between Python and Postgres."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from gradesync.warehouse import Warehouse
from gradesync.warehouse.loader import BUCKETS, _bucket, _bucket_sql, _Checksum

EDGES = [-(2**63), -(2**63) + 1, -1, 0, 1, 2**48, 2**63 - 1]


@pytest.fixture
def hashes(pg_wh: Warehouse) -> tuple[Warehouse, sa.Table, np.ndarray]:
    values = np.concatenate([np.array(EDGES, dtype=np.int64),
                             np.random.default_rng(5).integers(-(2**63), 2**63 - 1, 5000, dtype=np.int64)])
    table = sa.Table("checksum_values", sa.MetaData(), sa.Column("v", sa.BigInteger(), nullable=False),
                     schema=pg_wh.schema_name)
    with pg_wh.engine.begin() as conn:
        table.create(conn)
        conn.execute(sa.insert(table), [{"v": int(v)} for v in values])
    return pg_wh, table, values


@pytest.mark.postgres
def test_sql_and_numpy_put_a_hash_in_the_same_bucket(hashes: tuple[Warehouse, sa.Table, np.ndarray]) -> None:
    wh, table, values = hashes
    with wh.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.v, _bucket_sql(table.c.v))).all()
    by_sql = {v: b for v, b in rows}
    assert [by_sql[int(v)] for v in values] == _bucket(values).tolist()
    assert _bucket(np.array([-(2**63), 2**63 - 1], dtype=np.int64)).tolist() == [0, BUCKETS - 1]


@pytest.mark.postgres
def test_packed_values_arrive_complete(hashes: tuple[Warehouse, sa.Table, np.ndarray]) -> None:
    wh, table, values = hashes
    with wh.engine.connect() as conn:
        chunks = list(wh.backend.int8_values(conn, sa.select(table.c.v).where(table.c.v != 0)))
    got = np.sort(np.concatenate(chunks))
    assert np.array_equal(got, np.sort(values[values != 0]))
    whole, parts = _Checksum(), _Checksum()
    whole.add(values[values != 0])
    for chunk in chunks:
        parts.add(chunk)
    assert len(whole.mismatched(parts)) == 0 and whole.total[0] == len(values) - 1
