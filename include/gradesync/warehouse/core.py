"""The ``Warehouse`` facade: migrate, lock, load, and read back."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import sqlalchemy as sa

from gradesync.entities import get_entity
from gradesync.warehouse.backends import Backend, backend_for
from gradesync.warehouse.connection import normalize_url
from gradesync.warehouse.loader import LoadCounts, merge
from gradesync.warehouse.migrate import upgrade
from gradesync.warehouse.schema import DEFAULT_SCHEMA, WarehouseSchema, build_schema
from gradesync.warehouse.staging import DEFAULT_BATCH_ROWS, StagedFiles

log = logging.getLogger(__name__)

# rows modified up to this long before the last watermark are also kept in the first pass
SPECULATION_MARGIN = timedelta(days=1)
_COUNT_FIELDS = ("inserted", "updated", "unchanged", "deleted", "revived", "rejected", "extracted", "duplicates")


class IntegrationLocked(RuntimeError):
    """Another run of the same integration is loading; this run must not."""


class _RollBack(Exception):  # noqa: N818 - control flow, never escapes load_entity
    """Leaves a dry-run load's transaction by rolling it back, carrying its counts out."""

    def __init__(self, counts: LoadCounts) -> None:
        super().__init__("dry run")
        self.counts = counts


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Warehouse:
    """A gradesync warehouse at a SQLAlchemy URL (Postgres or SQLite).

    Construction is cheap and touches no database; the engine is created on first use.
    ``schema`` and ``table_prefix`` come from configuration and are validated as identifiers;
    SQLite has no schemas, so ``schema`` is ignored there.
    """

    def __init__(
        self,
        url: str | sa.URL,
        schema: str = DEFAULT_SCHEMA,
        *,
        table_prefix: str = "",
        batch_rows: int = DEFAULT_BATCH_ROWS,
        work_mem: str = "256MB",
        stale_lock_after: timedelta = timedelta(hours=12),
    ) -> None:
        self.url = normalize_url(url)
        self.backend: Backend = backend_for(self.url)
        self.schema_name = schema if self.backend.uses_schema else None
        self.tables: WarehouseSchema = build_schema(self.schema_name, table_prefix)
        self.prefix = table_prefix
        self.batch_rows = batch_rows
        if not (work_mem[:-2].isdigit() and work_mem[-2:] in ("kB", "MB", "GB")):
            raise ValueError(f"work_mem {work_mem!r} must look like 256MB")
        self.work_mem = work_mem
        self.stale_lock_after = stale_lock_after
        self._engine: sa.Engine | None = None
        self._held: dict[str, tuple[str, int]] = {}  # integration_id -> (run_id, depth) held by this object
        self._held_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Warehouse({self.url.render_as_string(hide_password=True)!r}, schema={self.schema_name!r})"

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = self.backend.engine(self.url)
        return self._engine

    def dispose(self) -> None:
        """Close pooled connections (e.g. before forking or at the end of a task)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # ---------------------------------------------------------------- schema
    def migrate(self, target: str = "head") -> str:
        """Create the warehouse or upgrade it to ``target``; cheap when already there."""
        return upgrade(self.engine, self.backend, self.schema_name, self.prefix, target)

    # ---------------------------------------------------------------- locking
    def _lock_names(self, integration_id: str) -> tuple[str, ...]:
        return (self.schema_name or "", self.prefix, integration_id)

    @contextmanager
    def integration_lock(self, integration_id: str, run_id: str) -> Iterator[None]:
        """Hold the integration for ``run_id``; raise ``IntegrationLocked`` if another run holds it.

        Processes of the *same* run share the lock (a retried or parallel task of the run may
        load). A lock left by a run that died is taken over: on Postgres the holder keeps a
        session advisory lock that ends with its connection, so a dead holder is detected at
        once; on SQLite a holder on this host whose process is gone, or any holder older than
        ``stale_lock_after``, counts as dead. The ``sync_locks`` table shows who holds what.
        """
        with self._held_lock:
            held = self._held.get(integration_id)
            if held is not None:
                if held[0] != run_id:
                    raise IntegrationLocked(f"this process already loads {integration_id!r} for run {held[0]!r}")
                self._held[integration_id] = (run_id, held[1] + 1)
        if held is not None:  # re-entered (nested, or another thread of the same run): share the hold
            try:
                yield
            finally:
                with self._held_lock:
                    run, depth = self._held[integration_id]
                    self._held[integration_id] = (run, depth - 1)
            return
        locks = self.tables.table("sync_locks")
        names = self._lock_names(integration_id)
        conn = self.engine.connect()
        acquired = False
        try:
            with conn.begin():
                self.backend.mutex(conn, names)
                row = conn.execute(sa.select(locks).where(locks.c.integration_id == integration_id)).first()
                if row is not None and row.run_id != run_id:
                    alive = self.backend.run_lock_others_alive(conn, names)
                    if alive is None:
                        dead_here = row.host == socket.gethostname() and not _pid_alive(row.pid)
                        alive = not dead_here and _utcnow() - row.acquired_at < self.stale_lock_after
                    if alive:
                        raise IntegrationLocked(
                            f"integration {integration_id!r} is being loaded by run {row.run_id!r} "
                            f"(host {row.host}, pid {row.pid}, since {row.acquired_at:%Y-%m-%d %H:%M:%S}Z); "
                            "wait for it to finish. If that run is dead, its lock is taken over automatically "
                            "(SQLite: after its process is gone or after the stale-lock timeout)."
                        )
                    log.warning("taking over the stale lock of run %s on integration %s", row.run_id,
                                integration_id)
                conn.execute(sa.delete(locks).where(locks.c.integration_id == integration_id))
                conn.execute(sa.insert(locks).values(
                    integration_id=integration_id, run_id=run_id, acquired_at=_utcnow(),
                    host=socket.gethostname(), pid=os.getpid()))
                self.backend.run_lock_acquire(conn, names)
            acquired = True
            with self._held_lock:
                self._held[integration_id] = (run_id, 0)
            yield
        finally:
            if acquired:
                with self._held_lock:
                    while self._held[integration_id][1] > 0:  # wait for sharers of this object to finish
                        self._held_lock.release()
                        time.sleep(0.05)
                        self._held_lock.acquire()
                    del self._held[integration_id]
            try:
                if acquired:
                    with conn.begin():
                        self.backend.mutex(conn, names)
                        if self.backend.run_lock_release(conn, names):
                            conn.execute(sa.delete(locks).where(locks.c.integration_id == integration_id,
                                                                locks.c.run_id == run_id))
            except Exception:  # the lock dies with the session anyway
                log.exception("could not release the lock of %s", integration_id)
                conn.invalidate()
            finally:
                conn.close()

    # ---------------------------------------------------------------- loading
    def load_entity(
        self,
        integration_id: str,
        entity_name: str,
        api_version: str,
        files: Iterable[Any],
        *,
        run_id: str,
        full_sync: bool,
        extracted: int,
        duplicates: int = 0,
        rejects: pd.DataFrame | None = None,
        watermark: datetime | None = None,
        started_at: datetime | None = None,
        dry_run: bool = False,
    ) -> LoadCounts:
        """Merge staged Parquet files of one entity in one transaction; see ``loader`` for how.

        Also in that transaction: result history rows, the run's rejects, its ``sync_runs`` row
        and the watermark (left alone when ``watermark`` is None). Rerunning a run that already
        loaded the same data changes nothing and returns the counts recorded the first time.
        ``dry_run`` performs the whole merge and rolls it back: the counts say exactly what a real
        load would change, and the warehouse is left as it was.
        """
        entity = get_entity(entity_name)
        if api_version not in entity.versions:
            raise ValueError(f"{entity_name} does not exist in OneRoster {api_version}")
        if not integration_id or not run_id:
            raise ValueError("integration_id and run_id are required")
        staged = StagedFiles(entity, files, self.batch_rows)
        reject_rows = _reject_rows(rejects)
        load_started = _utcnow()
        seen_at = started_at or load_started
        t0 = time.perf_counter()
        runs = self.tables.table("sync_runs")
        try:
            with self.integration_lock(integration_id, run_id), self.engine.begin() as conn:
                self.backend.prepare_load(conn, self.work_mem)
                self.backend.xact_lock(conn, "load", *self._lock_names(integration_id), entity_name)
                previous_watermark = self._watermark(conn, integration_id, entity_name)
                result = merge(conn, self.backend, self.tables, entity, integration_id, run_id, staged,
                               full_sync=full_sync, seen_at=seen_at,
                               speculate_after=None if previous_watermark is None
                               else previous_watermark - SPECULATION_MARGIN)
                counts = LoadCounts(
                    inserted=result.inserted, updated=result.updated, unchanged=result.unchanged,
                    deleted=result.deleted, revived=result.revived, rejected=len(reject_rows),
                    extracted=extracted, duplicates=duplicates + result.duplicates,
                )
                if dry_run:
                    raise _RollBack(counts)
                key = sa.and_(runs.c.integration_id == integration_id, runs.c.run_id == run_id,
                              runs.c.entity == entity_name)
                prev = conn.execute(sa.select(runs).where(key)).first()
                changed = result.inserted or result.updated or result.deleted
                if (prev is not None and prev.status == "success" and not changed
                        and (prev.extracted, prev.rejected, prev.duplicates) ==
                        (counts.extracted, counts.rejected, counts.duplicates)
                        and (watermark is None or prev.watermark == watermark)):
                    log.info("run %s already loaded %s with this data; nothing to write", run_id, entity_name)
                    return LoadCounts(**{f: getattr(prev, f) for f in _COUNT_FIELDS})
                if not counts.balanced:
                    log.warning("%s/%s: extracted %d != inserted+updated+unchanged+duplicates+rejected %d",
                                integration_id, entity_name, counts.extracted,
                                counts.inserted + counts.updated + counts.unchanged + counts.duplicates
                                + counts.rejected)
                self._write_rejects(conn, integration_id, run_id, entity_name, reject_rows, seen_at)
                if watermark is not None and (previous_watermark is None or watermark > previous_watermark):
                    # only forwards: a backfill of an old interval must not make the next delta re-read
                    self._set_watermark(conn, integration_id, entity_name, watermark, run_id)
                conn.execute(sa.delete(runs).where(key))
                conn.execute(sa.insert(runs).values(
                    integration_id=integration_id, run_id=run_id, entity=entity_name, api_version=api_version,
                    full_sync=full_sync, status="success", staged=result.staged,
                    **{f: getattr(counts, f) for f in _COUNT_FIELDS},
                    watermark=watermark, previous_watermark=previous_watermark, started_at=started_at,
                    load_started_at=load_started, finished_at=_utcnow(),
                    load_seconds=time.perf_counter() - t0, error=None,
                    attempts=(prev.attempts + 1) if prev is not None else 1,
                ))
            return counts
        except _RollBack as dry:
            return dry.counts
        except IntegrationLocked:
            raise
        except Exception as exc:
            self._record_failure(integration_id, run_id, entity_name, api_version, full_sync, extracted,
                                 started_at, load_started, time.perf_counter() - t0, exc)
            raise

    def _record_failure(self, integration_id: str, run_id: str, entity_name: str, api_version: str,
                        full_sync: bool, extracted: int, started_at: datetime | None, load_started: datetime,
                        seconds: float, exc: BaseException) -> None:
        """Best effort: leave a ``failed`` sync_runs row unless the run already loaded this entity."""
        runs = self.tables.table("sync_runs")
        try:
            with self.engine.begin() as conn:
                key = sa.and_(runs.c.integration_id == integration_id, runs.c.run_id == run_id,
                              runs.c.entity == entity_name)
                prev = conn.execute(sa.select(runs.c.status, runs.c.attempts).where(key)).first()
                if prev is not None and prev.status == "success":
                    return
                conn.execute(sa.delete(runs).where(key))
                conn.execute(sa.insert(runs).values(
                    integration_id=integration_id, run_id=run_id, entity=entity_name, api_version=api_version,
                    full_sync=full_sync, status="failed", extracted=extracted, started_at=started_at,
                    load_started_at=load_started, finished_at=_utcnow(), load_seconds=seconds,
                    error=f"{type(exc).__name__}: {exc}"[:2000],
                    attempts=(prev.attempts + 1) if prev is not None else 1,
                ))
        except Exception:
            log.exception("could not record the failed load of %s/%s", integration_id, entity_name)

    def _write_rejects(self, conn: sa.Connection, integration_id: str, run_id: str, entity_name: str,
                       rows: list[dict[str, Any]], at: datetime) -> None:
        rej = self.tables.table("rejects")
        conn.execute(sa.delete(rej).where(rej.c.integration_id == integration_id, rej.c.run_id == run_id,
                                          rej.c.entity == entity_name))
        if rows:
            conn.execute(sa.insert(rej), [
                {"integration_id": integration_id, "run_id": run_id, "entity": entity_name, "reject_no": i,
                 "rejected_at": at, **row}
                for i, row in enumerate(rows, start=1)
            ])

    def _watermark(self, conn: sa.Connection, integration_id: str, entity_name: str) -> datetime | None:
        wm = self.tables.table("sync_watermarks")
        return conn.execute(sa.select(wm.c.watermark).where(
            wm.c.integration_id == integration_id, wm.c.entity == entity_name)).scalar_one_or_none()

    def _set_watermark(self, conn: sa.Connection, integration_id: str, entity_name: str, value: datetime,
                       run_id: str) -> None:
        wm = self.tables.table("sync_watermarks")
        conn.execute(sa.delete(wm).where(wm.c.integration_id == integration_id, wm.c.entity == entity_name))
        conn.execute(sa.insert(wm).values(integration_id=integration_id, entity=entity_name, watermark=value,
                                          run_id=run_id, updated_at=_utcnow()))

    # ---------------------------------------------------------------- reading
    def _read(self) -> sa.Connection:
        return self.engine.connect().execution_options(gradesync_read_only=True)

    def get_watermark(self, integration_id: str, entity_name: str) -> datetime | None:
        """The committed watermark of an integration's entity (UTC), or None before the first load."""
        get_entity(entity_name)
        with self._read() as conn:
            return self._watermark(conn, integration_id, entity_name)

    def run_summary(self, integration_id: str, run_id: str) -> list[dict[str, Any]]:
        """The ``sync_runs`` rows of one run, in load order, as plain dicts."""
        runs = self.tables.table("sync_runs")
        with self._read() as conn:
            rows = conn.execute(sa.select(runs).where(runs.c.integration_id == integration_id,
                                                      runs.c.run_id == run_id)
                                .order_by(runs.c.load_started_at, runs.c.entity)).mappings().all()
        return [dict(r) for r in rows]

    def latest_run_id(self, integration_id: str) -> str | None:
        """The run that loaded most recently (for summaries after a run, e.g. the demo)."""
        runs = self.tables.table("sync_runs")
        with self._read() as conn:
            return conn.execute(sa.select(runs.c.run_id).where(runs.c.integration_id == integration_id)
                                .order_by(runs.c.finished_at.desc()).limit(1)).scalar()

    def known_sourced_ids(self, integration_id: str, entity_name: str, *, include_deleted: bool = False
                          ) -> pd.Index:
        """sourced_ids of the integration's (live, unless asked) records of an entity."""
        t = self.tables.entity(entity_name)
        stmt = sa.select(t.c.sourced_id).where(t.c.integration_id == integration_id)
        if not include_deleted:
            stmt = stmt.where(t.c.deleted_at.is_(None))
        with self._read() as conn:
            ids = conn.execute(stmt.order_by(t.c.sourced_id)).scalars().all()
        return pd.Index(ids, dtype=object, name="sourced_id")

    def read_table(self, entity_name: str, integration_id: str) -> pd.DataFrame:
        """All rows of an integration in an entity table (or in a history/sync table), sorted.

        Timestamps come back as UTC, JSON as canonical JSON text, like the staging format.
        """
        t = self.tables.table(entity_name)
        order = [t.c[c] for c in ("sourced_id", "history_id", "run_id", "entity", "reject_no") if c in t.c]
        with self._read() as conn:
            result = conn.execute(sa.select(t).where(t.c.integration_id == integration_id).order_by(*order))
            frame = pd.DataFrame(result.all(), columns=list(result.keys()))
        for col in t.columns:
            if col.name in frame and isinstance(col.type, sa.DateTime | sa.types.TypeDecorator) and \
                    isinstance(getattr(col.type, "impl", col.type), sa.DateTime):
                frame[col.name] = pd.to_datetime(frame[col.name], utc=True)
        return frame


def _reject_rows(rejects: pd.DataFrame | None) -> list[dict[str, Any]]:
    if rejects is None or len(rejects) == 0:
        return []
    if "reason" not in rejects.columns:
        raise ValueError("rejects need a 'reason' column (see gradesync.records.REJECT_SCHEMA)")
    def text(value: Any) -> str | None:
        return None if value is None or (isinstance(value, float) and value != value) else str(value)

    return [
        {"sourced_id": text(rec.get("sourced_id")), "reason": text(rec.get("reason")) or "",
         "raw": text(rec.get("raw")) or ""}
        for rec in rejects.to_dict("records")
    ]
