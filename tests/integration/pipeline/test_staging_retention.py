"""The report task removes staged runs older than the integration's retention, and only those."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gradesync.config import parse_config
from gradesync.pipeline import clean_staging


def test_old_runs_are_removed_recent_ones_kept(tmp_path: Path) -> None:
    config = parse_config({"name": "a", "api_version": "1.2", "connection_id": "ic",
                           "staging": {"url": f"file://{tmp_path}", "retention_days": 7}})
    old = tmp_path / config.dag_id / "scheduled__2026-10-01" / "extract" / "results"
    new = tmp_path / config.dag_id / "scheduled__2026-11-29" / "extract" / "results"
    for folder in (old, new):
        folder.mkdir(parents=True)
        (folder / "part-00000.parquet").write_bytes(b"x")
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old / "part-00000.parquet", (ten_days_ago, ten_days_ago))
    assert clean_staging(config) == 1
    assert not old.exists() and new.exists()
    assert clean_staging(config) == 0
