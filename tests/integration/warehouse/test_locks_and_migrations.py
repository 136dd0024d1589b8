"""Integration locks, migrations (v1 and v2 -> head with data), concurrency and configuration safety."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import Stager, result

from gradesync.warehouse import IntegrationLocked, Warehouse
from gradesync.warehouse.keyhash import unfold_key
from gradesync.warehouse.migrate import VERSION_TABLE, current_revision, head_revision
from gradesync.warehouse.testing import throwaway_schema

HOLDER = textwrap.dedent('''
    import sys, time
    from gradesync.warehouse import Warehouse
    url, schema, marker = sys.argv[1:]
    wh = Warehouse(url, schema=schema)
    with wh.integration_lock("district-a", "run-held"):
        open(marker, "w").close()
        time.sleep(600)
''')


def test_a_second_run_is_refused_while_the_first_holds_the_lock(wh: Warehouse) -> None:
    other = Warehouse(wh.url, schema=wh.schema_name or "gradesync")
    with wh.integration_lock("district-a", "run-1"):
        with pytest.raises(IntegrationLocked, match="run-1"):
            with other.integration_lock("district-a", "run-2"):
                pass
        with other.integration_lock("district-a", "run-1"):  # the same run (e.g. a parallel task) shares it
            pass
        with other.integration_lock("district-b", "run-9"):  # other integrations are independent
            pass
    with other.integration_lock("district-a", "run-2"):
        pass
    other.dispose()


def test_load_entity_takes_the_lock_itself(wh: Warehouse, stage: Stager) -> None:
    files, _, n = stage([result(1)])
    other = Warehouse(wh.url, schema=wh.schema_name or "gradesync")
    with other.integration_lock("district-a", "run-1"):
        with pytest.raises(IntegrationLocked):
            wh.load_entity("district-a", "results", "1.2", files, run_id="run-2", full_sync=True, extracted=n)
    assert wh.load_entity("district-a", "results", "1.2", files, run_id="run-2", full_sync=True,
                          extracted=n).inserted == 1
    other.dispose()


def test_lock_of_a_killed_holder_is_taken_over(wh: Warehouse, tmp_path: Path) -> None:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    marker = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, str(script), wh.url.render_as_string(hide_password=False),
                             wh.schema_name or "gradesync", str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(IntegrationLocked, match="run-held"):
            with wh.integration_lock("district-a", "run-new"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with wh.integration_lock("district-a", "run-new"):
        with wh.engine.connect() as conn:
            holder = conn.execute(sa.select(wh.tables.table("sync_locks"))).one()
        assert holder.run_id == "run-new"


def test_sqlite_lock_goes_stale_after_the_timeout(tmp_path: Path) -> None:
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.db'}", stale_lock_after=timedelta(hours=1))
    wh.migrate()
    locks = wh.tables.table("sync_locks")
    with wh.engine.begin() as conn:
        conn.execute(sa.insert(locks).values(integration_id="district-a", run_id="run-elsewhere",
                                             acquired_at=datetime.now(timezone.utc) - timedelta(minutes=5),
                                             host="another-host", pid=1))
    with pytest.raises(IntegrationLocked, match="another-host"):
        with wh.integration_lock("district-a", "run-2"):
            pass
    with wh.engine.begin() as conn:
        conn.execute(sa.update(locks).values(acquired_at=datetime.now(timezone.utc) - timedelta(hours=2)))
    with wh.integration_lock("district-a", "run-2"):
        pass


def _insert_v1_data(wh: Warehouse) -> None:
    md_schema = wh.schema_name
    now = datetime(2026, 9, 1, tzinfo=timezone.utc)
    results = sa.table("results", *[sa.column(c) for c in (
        "integration_id", "sourced_id", "status", "date_last_modified", "line_item_sourced_id",
        "student_sourced_id", "score_status", "score", "row_hash", "first_seen_at", "first_run_id", "changed_at",
        "changed_run_id", "deleted_at")], schema=md_schema)
    runs = sa.table("sync_runs", *[sa.column(c) for c in (
        "integration_id", "run_id", "entity", "full_sync", "status", "extracted", "inserted", "load_started_at",
        "finished_at", "load_seconds")], schema=md_schema)
    stamp = sa.literal(now) if wh.backend.name == "postgresql" else now.strftime("%Y-%m-%d %H:%M:%S.%f")
    with wh.engine.begin() as conn:
        for i, deleted in ((1, None), (2, stamp)):
            conn.execute(sa.insert(results).values(
                integration_id="district-a", sourced_id=f"res-{i}", status="tobedeleted" if i == 2 else "active",
                date_last_modified=stamp, line_item_sourced_id="li-1", student_sourced_id=f"stu-{i}",
                score_status="fully graded", score=float(i), row_hash=0, first_seen_at=stamp, first_run_id="old",
                changed_at=stamp, changed_run_id="old", deleted_at=deleted))
        conn.execute(sa.insert(runs).values(integration_id="district-a", run_id="old", entity="results",
                                            full_sync=True, status="success", extracted=2, inserted=2,
                                            load_started_at=stamp, finished_at=stamp, load_seconds=1.0))


def _unmigrated(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Warehouse:
    """An empty warehouse, not migrated yet, dropped after the test."""
    if backend == "postgres":
        ctx = throwaway_schema()
        url, schema = ctx.__enter__()
        request.addfinalizer(lambda: ctx.__exit__(None, None, None))
    else:
        url, schema = f"sqlite:///{tmp_path / 'old.db'}", "gradesync"
    wh = Warehouse(url, schema=schema)
    request.addfinalizer(wh.dispose)
    return wh


def test_upgrade_a_v1_warehouse_with_data(tmp_path: Path, stage: Stager, request: pytest.FixtureRequest) -> None:
    for backend in ("sqlite", "postgres"):
        wh = _unmigrated(backend, tmp_path, request)
        assert wh.migrate("0001") == "0001"
        _insert_v1_data(wh)
        assert wh.migrate() == head_revision() == "0004"
        with wh.engine.connect() as conn:
            pk = sa.inspect(conn).get_pk_constraint("results", schema=wh.schema_name)
        assert pk["constrained_columns"] == ["sourced_id", "integration_id"]  # 0004
        df = wh.read_table("results", "district-a").set_index("sourced_id")
        assert list(df.index) == ["res-1", "res-2"] and df.loc["res-1", "score"] == 1.0
        assert df.loc["res-2", "deleted_reason"] == "unknown" and pd.isna(df.loc["res-1", "deleted_reason"])
        assert wh.run_summary("district-a", "old")[0]["attempts"] == 1
        # the upgraded warehouse loads as usual: res-1 changes, res-2 (deleted in v1) comes back
        files, _, n = stage([result(1, score=9.0), result(2, score=2.0)])
        counts = wh.load_entity("district-a", "results", "1.2", files, run_id="new", full_sync=True, extracted=n)
        assert (counts.updated, counts.revived) == (2, 1)


def _stored_hashes(wh: Warehouse) -> dict[str, int]:
    t = wh.tables.entity("results")
    with wh.engine.connect() as conn:
        return {sid: h for sid, h in conn.execute(sa.select(t.c.sourced_id, t.c.row_hash))}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrade_to_v3_rehashes_stored_rows_so_they_stay_unchanged(
        backend: str, tmp_path: Path, stage: Stager, request: pytest.FixtureRequest) -> None:
    """A v2 warehouse stored content-only hashes; after 0003 a reload of the same data changes nothing."""
    wh = _unmigrated(backend, tmp_path, request)
    assert wh.migrate("0002") == "0002"
    files, _, n = stage([result(i, comment="é" * i) for i in range(300)])
    wh.load_entity("district-a", "results", "1.2", files, run_id="v2", full_sync=True, extracted=n)
    current = _stored_hashes(wh)
    v2 = unfold_key(np.array(list(current.values()), dtype=np.int64), pa.array(list(current)))
    assert not set(v2.tolist()) & set(current.values())
    t = wh.tables.entity("results")
    with wh.engine.begin() as conn:  # what a v2 load stored
        conn.execute(sa.update(t).where(t.c.sourced_id == sa.bindparam("sid")).values(row_hash=sa.bindparam("h")),
                     [{"sid": sid, "h": int(h)} for sid, h in zip(current, v2, strict=True)])
    assert wh.migrate() == head_revision()
    assert _stored_hashes(wh) == current
    again = wh.load_entity("district-a", "results", "1.2", files, run_id="v3", full_sync=True, extracted=n)
    assert (again.unchanged, again.updated, again.inserted) == (300, 0, 0)


@pytest.mark.parametrize("prefix", ["", "gs_"])
def test_migrated_schema_matches_the_metadata(wh: Warehouse, prefix: str) -> None:
    if prefix:
        wh = Warehouse(wh.url, schema=wh.schema_name or "gradesync", table_prefix=prefix)
        wh.migrate()
    with wh.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={
            "include_schemas": bool(wh.schema_name),
            "include_name": lambda name, type_, parent: (
                type_ != "schema" or name == wh.schema_name) and (
                type_ != "table" or (name.startswith(prefix) and not name.endswith(VERSION_TABLE))),
            "version_table": prefix + VERSION_TABLE, "version_table_schema": wh.schema_name,
        })
        diffs = compare_metadata(ctx, wh.tables.metadata)
        assert current_revision(conn, wh.schema_name, prefix) == head_revision()
    assert diffs == []
    assert wh.migrate() == head_revision()  # a second call is a no-op


def test_concurrent_migrations_of_a_new_postgres_warehouse() -> None:
    with throwaway_schema() as (url, schema):
        errors: list[BaseException] = []
        revisions: list[str] = []

        def migrate() -> None:
            wh = Warehouse(url, schema=schema)
            try:
                revisions.append(wh.migrate())
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)
            finally:
                wh.dispose()

        threads = [threading.Thread(target=migrate) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and revisions == [head_revision()] * 4


@pytest.mark.parametrize("schema,prefix", [("gradesync; DROP TABLE x", ""), ("Gradesync", ""),
                                           ("gradesync", "p-"), ("gradesync", "x" * 17), ("1abc", ""),
                                           ("gradesync", 'a"b')])
def test_unsafe_identifiers_are_refused_before_any_sql(schema: str, prefix: str) -> None:
    with pytest.raises(ValueError):
        Warehouse("postgresql://nobody@127.0.0.1:1/none", schema=schema, table_prefix=prefix)


def test_a_role_without_database_privileges_migrates_its_own_schema() -> None:
    """Least privilege: a warehouse role that may only create tables in a schema made for it."""
    from gradesync.warehouse.testing import unique_name

    with throwaway_schema() as (url, schema):
        role = unique_name("gs_role")
        admin = sa.create_engine(url, poolclass=sa.NullPool)
        quote = admin.dialect.identifier_preparer.quote
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {quote(role)} LOGIN")
            conn.exec_driver_sql(f"CREATE SCHEMA {quote(schema)} AUTHORIZATION {quote(role)}")
            may_create = conn.execute(sa.select(sa.func.has_database_privilege(
                role, sa.func.current_database(), "CREATE"))).scalar_one()
        assert may_create is False  # so the test shows that migrate needs no database privilege
        try:
            wh = Warehouse(sa.make_url(url).set(username=role), schema=schema)
            assert wh.migrate() == head_revision()
            wh.dispose()
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {quote(schema)} CASCADE")
                conn.exec_driver_sql(f"DROP ROLE {quote(role)}")
            admin.dispose()
