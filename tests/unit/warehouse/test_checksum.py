"""Reload checksums: per-bucket counts and XORs of row hashes."""

from __future__ import annotations

import numpy as np

from gradesync.warehouse.loader import _bucket, _Checksum


def test_a_checksum_sees_any_difference() -> None:
    rng = np.random.default_rng(9)
    values = rng.integers(-(2**63), 2**63 - 1, 2000, dtype=np.int64)
    a, b = _Checksum(), _Checksum()
    a.add(values)
    b.add(values[::-1])
    assert len(a.mismatched(b)) == 0 and a.total == b.total  # order does not matter
    b.add(values[:1], sign=-1)  # one row gone: its bucket differs, and only it
    assert a.mismatched(b).tolist() == _bucket(values[:1]).tolist()
    c = _Checksum()
    c.add(np.concatenate([values, values[:1]]))  # one row twice
    assert a.mismatched(c).tolist() == _bucket(values[:1]).tolist()
