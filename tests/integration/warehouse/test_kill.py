"""A load killed at any point (really: SIGKILL of the loading process) leaves the previous state,
and a rerun of the same run then produces the right one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import Stager, result

from gradesync.warehouse import Warehouse

CHILD = textwrap.dedent('''
    import logging, sys, time
    from datetime import datetime, timezone
    from gradesync.warehouse import Warehouse

    url, schema, marker, point, run_id, extracted, *files = sys.argv[1:]

    def stall():
        open(marker, "w").close()
        time.sleep(600)

    class StallAt(logging.Handler):  # the loader logs each finished phase at DEBUG
        def emit(self, record):
            if record.getMessage().split(": ", 1)[-1].startswith(point):
                stall()

    class SlowStorage:  # a staged file whose second file "hangs" while the COPY is streaming
        def __init__(self, path, hang):
            self.path, self.hang = path, hang
        def open(self, mode):
            if self.hang:
                stall()
            return open(self.path, mode)

    log = logging.getLogger("gradesync.warehouse.loader")
    log.setLevel(logging.DEBUG)
    log.addHandler(StallAt())
    paths = [SlowStorage(f, point == "streaming" and i == 1) for i, f in enumerate(files)]
    wh = Warehouse(url, schema=schema)
    wh.load_entity("district-a", "results", "1.2", paths, run_id=run_id, full_sync=True,
                   extracted=int(extracted), watermark=datetime(2026, 9, 9, tzinfo=timezone.utc))
    print("finished without stalling", file=sys.stderr)
    sys.exit(3)
''')


def kill_during(wh: Warehouse, tmp_path: Path, point: str, run_id: str, files: list[str], extracted: int) -> None:
    marker = tmp_path / f"stalled-{point}"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    url = wh.url.render_as_string(hide_password=False)
    proc = subprocess.Popen([sys.executable, str(script), url, wh.schema_name or "gradesync", str(marker), point,
                             run_id, str(extracted), *files], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"loader exited with {proc.returncode} before {point}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"loader never reached {point}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def snapshot(wh: Warehouse) -> dict[str, pd.DataFrame]:
    return {t: wh.read_table(t, "district-a") for t in ("results", "result_history", "sync_runs", "rejects",
                                                        "sync_watermarks")}


def assert_same(before: dict[str, pd.DataFrame], after: dict[str, pd.DataFrame]) -> None:
    for table in before:
        pd.testing.assert_frame_equal(after[table], before[table], obj=table)


@pytest.mark.parametrize("point", ["streaming"])
def test_first_load_killed_then_rerun(wh: Warehouse, stage: Stager, tmp_path: Path, point: str) -> None:
    files, _, n = stage([result(i) for i in range(1200)], files=3)
    before = snapshot(wh)
    kill_during(wh, tmp_path, point, "run-1", files, n)
    assert_same(before, snapshot(wh))
    with wh.engine.connect() as conn:  # the dead run's lock row is there; it must not block its rerun
        locks = conn.execute(sa.select(wh.tables.table("sync_locks"))).all()
    assert [row.run_id for row in locks] == ["run-1"]
    counts = wh.load_entity("district-a", "results", "1.2", files, run_id="run-1", full_sync=True, extracted=n)
    assert counts.inserted == 1200
    assert len(wh.read_table("results", "district-a")) == 1200


@pytest.mark.parametrize("point", ["update+insert", "vanished"])
def test_reload_killed_mid_merge_then_rerun(wh: Warehouse, stage: Stager, tmp_path: Path, point: str) -> None:
    first, _, n = stage([result(i) for i in range(1200)], files=2)
    wh.load_entity("district-a", "results", "1.2", first, run_id="run-1", full_sync=True, extracted=n,
                   watermark=datetime(2026, 9, 1, tzinfo=timezone.utc))
    changed = [result(i, score=-5.0 if i % 100 == 0 else None) for i in range(1200) if i != 17] + [result(5000)]
    second, _, n2 = stage(changed, files=3)
    before = snapshot(wh)
    kill_during(wh, tmp_path, point, "run-2", second, n2)
    assert_same(before, snapshot(wh))
    assert wh.get_watermark("district-a", "results") == datetime(2026, 9, 1, tzinfo=timezone.utc)

    counts = wh.load_entity("district-a", "results", "1.2", second, run_id="run-2", full_sync=True, extracted=n2,
                            watermark=datetime(2026, 9, 9, tzinfo=timezone.utc))
    assert (counts.inserted, counts.updated, counts.deleted, counts.unchanged) == (1, 12, 1, 1187)
    assert wh.get_watermark("district-a", "results") == datetime(2026, 9, 9, tzinfo=timezone.utc)
    history = wh.read_table("result_history", "district-a")
    assert len(history) == 13 and set(history.run_id) == {"run-2"}
    assert [r["attempts"] for r in wh.run_summary("district-a", "run-2")] == [1]
