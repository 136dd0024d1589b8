"""The one place that knows Postgres from SQLite.

Everything else builds dialect-neutral SQLAlchemy Core statements. What differs lives here:
engine and session setup, how staged rows reach a temporary table (COPY on Postgres,
executemany on SQLite), and the locks that keep loads, migrations and runs apart (advisory locks
on Postgres; SQLite serialises writers itself with ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import itertools
import queue
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from gradesync.warehouse import pgcopy
from gradesync.warehouse.types import JsonText, UTCDateTime

# classids of the two-key advisory locks, one per purpose
_LOCK_RUN = 0x67730001  # held (shared) by every process of the run that owns an integration
_LOCK_MUTEX = 0x67730002  # serialises changes of the sync_locks row of one integration
_LOCK_LOAD = 0x67730003  # one load per integration and entity at a time
_LOCK_MIGRATE = 0x67730004  # one migration per warehouse at a time


def lock_key(*parts: str) -> int:
    """A signed 32-bit key for an advisory lock, derived from names (collisions only over-serialise)."""
    value = zlib.crc32("\x1f".join(parts).encode())
    return value - (1 << 32) if value >= (1 << 31) else value


MIN_POSTGRES = 140000  # bit_xor (reload checksums), client_connection_check_interval


def require_server_version(version: int) -> None:
    """Refuse a Postgres server older than MIN_POSTGRES, with a message that says so."""
    if version < MIN_POSTGRES:
        found = f"{version // 10000}.{version % 10000}" if version >= 100000 else str(version)
        raise RuntimeError(f"the gradesync warehouse needs PostgreSQL {MIN_POSTGRES // 10000} or newer; "
                           f"this server is {found}: upgrade it, or use another database")


class DuplicateKey(Exception):
    """Staged rows repeat a key that must be unique (the loader then takes the deduplicating path)."""


class Backend:
    """Behaviour that differs between warehouse databases."""

    name = "base"
    two_pass = False  # stage keys first and only then the rows that need writing
    rebuild_key_after_bulk_insert = False  # drop and re-add the primary key around a load into an empty table
    uses_schema = True

    def engine(self, url: sa.URL) -> sa.Engine:
        raise NotImplementedError

    def prepare_load(self, conn: sa.Connection, work_mem: str) -> None:
        """Session settings for a load transaction."""

    def ensure_schema(self, conn: sa.Connection, schema: str | None) -> None:
        """Create the warehouse schema if the database has schemas."""

    def xact_lock(self, conn: sa.Connection, purpose: str, *names: str) -> None:
        """Block until this transaction is the only one doing ``purpose`` for ``names``."""

    def stage(self, conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch], *,
              freeze: bool = False) -> int:
        """Append batches to ``table``; ``freeze`` only after ``bulk_into_empty`` in this subtransaction."""
        raise NotImplementedError

    def bulk_into_empty(self, conn: sa.Connection, table: sa.Table) -> None:
        """Prepare an empty table for a bulk load: drop its primary key (rebuilt by the caller)."""
        conn.execute(sa.schema.DropConstraint(table.primary_key))

    def analyze(self, conn: sa.Connection, table: sa.Table, columns: Sequence[str] = ()) -> None:
        """Give the planner statistics of a freshly filled table (of ``columns`` only, when given)."""

    def int8_values(self, conn: sa.Connection, query: sa.Select) -> Iterator[np.ndarray]:
        """The values of a query's one non-null BIGINT column, in chunks, without holding them all
        (for the reload checksums of ``two_pass`` backends)."""
        raise NotImplementedError

    # integration locks: see Warehouse.integration_lock
    def run_lock_acquire(self, conn: sa.Connection, names: tuple[str, ...]) -> None:
        pass

    def run_lock_release(self, conn: sa.Connection, names: tuple[str, ...]) -> bool:
        """Release this process's hold; True if no other live holder remains."""
        return True

    def run_lock_others_alive(self, conn: sa.Connection, names: tuple[str, ...]) -> bool | None:
        """Whether another live session holds the run lock; None if this database cannot tell."""
        return None

    def mutex(self, conn: sa.Connection, names: tuple[str, ...]) -> None:
        """Serialise lock-table changes for ``names`` until the transaction ends."""


class PostgresBackend(Backend):
    name = "postgresql"
    two_pass = True
    rebuild_key_after_bulk_insert = True

    def engine(self, url: sa.URL) -> sa.Engine:
        engine = sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=8)

        @sa.event.listens_for(engine, "connect")
        def _setup(dbapi_conn: Any, _record: Any) -> None:
            require_server_version(dbapi_conn.info.server_version)
            # UTC so timestamps in COPY text and in reads mean UTC; temp_buffers before any temp table
            with dbapi_conn.cursor() as cur:
                cur.execute("SET TimeZone = 'UTC'")
                cur.execute("SET temp_buffers = '256MB'")
                # a backend whose client was killed stops mid-query instead of finishing it
                cur.execute("SET client_connection_check_interval = '2s'")
            dbapi_conn.commit()

        return engine

    def prepare_load(self, conn: sa.Connection, work_mem: str) -> None:
        # memory for the hash joins of a million keys, and for sorting them when the primary key is
        # rebuilt after a first load (else an external sort on disk); index probes priced as the
        # cached reads they are, so a 1% change is merged by key instead of by scanning the table
        for name, value in (("work_mem", work_mem), ("maintenance_work_mem", work_mem),
                            ("random_page_cost", "1.1")):
            conn.execute(sa.select(sa.func.set_config(name, sa.literal(value, sa.Text), sa.true())))

    def ensure_schema(self, conn: sa.Connection, schema: str | None) -> None:
        # look first: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when it exists
        if schema and not sa.inspect(conn).has_schema(schema):
            conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))

    def _key(self, classid: int, names: tuple[str, ...]) -> tuple[Any, Any]:
        return (sa.cast(sa.literal(classid - (1 << 32) if classid >= (1 << 31) else classid), sa.Integer),
                sa.cast(sa.literal(lock_key(*names)), sa.Integer))

    def xact_lock(self, conn: sa.Connection, purpose: str, *names: str) -> None:
        classid = {"load": _LOCK_LOAD, "migrate": _LOCK_MIGRATE, "mutex": _LOCK_MUTEX}[purpose]
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(*self._key(classid, names))))

    def mutex(self, conn: sa.Connection, names: tuple[str, ...]) -> None:
        self.xact_lock(conn, "mutex", *names)

    def run_lock_acquire(self, conn: sa.Connection, names: tuple[str, ...]) -> None:
        conn.execute(sa.select(sa.func.pg_advisory_lock_shared(*self._key(_LOCK_RUN, names))))

    def run_lock_release(self, conn: sa.Connection, names: tuple[str, ...]) -> bool:
        conn.execute(sa.select(sa.func.pg_advisory_unlock_shared(*self._key(_LOCK_RUN, names))))
        return not self.run_lock_others_alive(conn, names)

    def run_lock_others_alive(self, conn: sa.Connection, names: tuple[str, ...]) -> bool | None:
        key = self._key(_LOCK_RUN, names)
        got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(*key))).scalar_one()
        if got:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(*key)))
        return not got

    def analyze(self, conn: sa.Connection, table: sa.Table, columns: Sequence[str] = ()) -> None:
        # temp tables have no statistics otherwise, and a nested loop over a million rows never ends
        preparer = conn.dialect.identifier_preparer
        column_list = f" ({', '.join(preparer.quote(table.c[c].name) for c in columns)})" if columns else ""
        conn.exec_driver_sql(f"ANALYZE {preparer.format_table(table)}{column_list}")

    def int8_values(self, conn: sa.Connection, query: sa.Select) -> Iterator[np.ndarray]:
        # the server packs the values into 256 byte strings (by their top bits): no per-row work
        # in Python, and at most the packed values in memory
        values = query.subquery().c[0]
        packed = sa.select(sa.func.string_agg(sa.func.int8send(values), sa.literal(b"", sa.LargeBinary))
                           ).group_by(values.op(">>")(sa.literal_column("56", sa.Integer)))
        for (data,) in conn.execute(packed):
            yield np.frombuffer(data, dtype=">i8").astype(np.int64)

    def bulk_into_empty(self, conn: sa.Connection, table: sa.Table) -> None:
        # TRUNCATE (of a table with no rows) lets COPY write the rows frozen: later scans need not
        # rewrite every page to set hint bits, and vacuum need not freeze them
        conn.exec_driver_sql(f"TRUNCATE {conn.dialect.identifier_preparer.format_table(table)}")
        super().bulk_into_empty(conn, table)

    def stage(self, conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch], *,
              freeze: bool = False) -> int:
        """COPY batches into ``table`` in binary format (values never pass through SQL text)."""
        import psycopg

        batch_iter = iter(batches)
        first = next(batch_iter, None)
        if first is None:
            return 0
        preparer = conn.dialect.identifier_preparer
        columns = [table.c[name] for name in first.schema.names]
        pg_types = [_binary_type(c) for c in columns]
        options = "FORMAT binary, FREEZE true" if freeze else "FORMAT binary"
        copy_sql = (f"COPY {preparer.format_table(table)} ({', '.join(preparer.quote(c.name) for c in columns)}) "
                    f"FROM STDIN ({options})")
        cursor = conn.connection.driver_connection.cursor()
        rows = 0
        try:
            with cursor.copy(copy_sql) as copy:
                copy.write(pgcopy.HEADER)
                for chunk, n in _in_thread(_binary_chunks(itertools.chain([first], batch_iter), pg_types)):
                    copy.write(chunk)
                    rows += n
                copy.write(pgcopy.TRAILER)
        except psycopg.errors.UniqueViolation as dup:
            raise DuplicateKey(str(dup).splitlines()[0]) from dup
        return rows


def _binary_type(column: sa.Column) -> str:
    """The binary COPY encoding of a warehouse column."""
    kind = column.type
    if isinstance(kind, JsonText):
        return "jsonb"
    if isinstance(kind, UTCDateTime):
        return "timestamptz"
    if isinstance(kind, sa.BigInteger):
        return "int8"
    if isinstance(kind, sa.Float):
        return "float8"
    if isinstance(kind, sa.Boolean):
        return "bool"
    if isinstance(kind, sa.Date):
        return "date"
    if isinstance(kind, sa.Text):
        return "text"
    raise TypeError(f"no binary COPY encoding for column {column.name} of type {kind}")


def _binary_chunks(batches: Iterable[pa.RecordBatch], pg_types: list[str]) -> Iterator[tuple[memoryview, int]]:
    for batch in batches:
        yield pgcopy.encode_batch(batch, pg_types), batch.num_rows


_DONE = object()


def _in_thread(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run a producer in a thread so reading/hashing/CSV overlaps with the server parsing COPY.

    At most ``depth`` items wait in the queue, so memory stays bounded by the batch size.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    worker = threading.Thread(target=produce, name="gradesync-copy-producer", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


class SqliteBackend(Backend):
    name = "sqlite"
    uses_schema = False

    def engine(self, url: sa.URL) -> sa.Engine:
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _setup(dbapi_conn: Any, _record: Any) -> None:
            # let SQLAlchemy's BEGIN below be the only transaction control (pysqlite's is implicit)
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if url.database not in (None, "", ":memory:"):
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            # writers take the write lock up front, so a load never fails half-way on "database is
            # locked"; readers (marked read_only) do not queue behind a running load
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("gradesync_read_only") else "BEGIN IMMEDIATE")

        return engine

    def analyze(self, conn: sa.Connection, table: sa.Table, columns: Sequence[str] = ()) -> None:
        # Without an index on the staged keys SQLite may loop over the staged rows once per target
        # row (a reload of 20,000 results took 90 s); with it every join is a lookup.
        if "sourced_id" in table.c:
            quote = conn.dialect.identifier_preparer.quote
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {quote(table.name + '_sid')} "
                                 f"ON {quote(table.name)} (sourced_id)")
        conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.quote(table.name)}")

    def stage(self, conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch], *,
              freeze: bool = False) -> int:
        rows = 0
        insert = table.insert()
        for batch in batches:
            try:
                conn.execute(insert, batch.to_pylist())
            except sa.exc.IntegrityError as dup:
                raise DuplicateKey(str(dup.orig)) from dup
            rows += batch.num_rows
        return rows


def backend_for(url: sa.URL) -> Backend:
    """The backend of a SQLAlchemy URL; only Postgres and SQLite are supported."""
    name = url.get_backend_name()
    if name == "postgresql":
        return PostgresBackend()
    if name == "sqlite":
        return SqliteBackend()
    raise ValueError(f"unsupported warehouse database {name!r}: use postgresql or sqlite")
