"""Load the staged files of one entity into the warehouse: one transaction, set-based merge.

The algorithm is the same on both databases; only how rows reach the tables differs
(``backends``: COPY on Postgres, executemany on SQLite):

0. The first load of an integration (no rows of this entity yet) streams the files straight into
   the table; into an empty table the primary key is rebuilt afterwards. If the files repeat a
   key, that attempt is rolled back to a savepoint and step 2's deduplicating path runs instead.
1. Otherwise, where the backend supports it (Postgres), the files are streamed once to stage only
   *keys* (ordinal, sourced_id, row hash, tombstone flag) and one join against the table yields
   the rows that are new, changed, deleted or revived and, for a full sync, the records that
   vanished; only those full rows are staged afterwards. For a full sync with a watermark, only
   the keys of rows modified since the last watermark (less a margin), tombstones and undated rows
   are staged: the other rows go into a checksum, a count and an XOR of row hashes (which cover
   key and content) per bucket of hashes, compared with the same aggregate over the table's live
   rows without the staged keys. Equal checksums prove those rows unchanged and nothing vanished
   (up to a 64-bit hash collision); where buckets differ, their rows' keys (set aside in a local
   spill file by the first pass) are staged and joined like the others, and only live records in
   those buckets can have vanished.
   A reload where 1% changed, as IC stamps changes, stages about 1% of the keys. On SQLite every
   row is staged in one pass.
2. Duplicate keys in the files (normally removed upstream) are counted and the last version
   (latest ``date_last_modified``, then latest in file order) wins. On the keys-first path this
   is resolved among the keys that have any new or changed copy (all their copies are staged);
   identical copies of an unchanged row are counted as unchanged, which keeps the audit sum.
3. History rows, updates, inserts and (for a full sync) soft deletes of records that vanished run
   as a handful of ``INSERT ... SELECT`` / ``UPDATE ... FROM`` statements.

Rows are compared by ``row_hash`` only; unchanged rows are never written. The first version of a
record produces no history row: it is the row itself (``first_seen_at``), and each later change
records the old and the new values.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import sqlalchemy as sa

from gradesync.entities import Entity
from gradesync.warehouse.backends import Backend, DuplicateKey
from gradesync.warehouse.schema import (
    DELETED_STATUS,
    HISTORY_REFS,
    PROVENANCE_COLUMNS,
    REASON_TOMBSTONE,
    REASON_VANISHED,
    TRACKED_COLUMNS,
    WarehouseSchema,
    content_fields,
    sa_type,
)
from gradesync.warehouse.staging import KEY_COLUMN, StagedBatch, StagedFiles
from gradesync.warehouse.types import KeyText

log = logging.getLogger(__name__)

SPECULATION_CAP = 100_000  # rows kept in memory to skip the second pass (about 40 MB)
READ_THREADS = 2  # staged files read and hashed at once while the keys stream (the server waits)
BUCKET_BITS = 16  # checksum buckets: 65,536, about 15 rows each in a million
BUCKETS = 1 << BUCKET_BITS
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class LoadCounts:
    """What one load did. ``inserted + updated + unchanged + duplicates + rejected == extracted``
    when the caller's counts are consistent. ``deleted`` counts live records this load marked
    deleted: tombstones of known records (also counted in ``updated``) and records that vanished
    from a full sync (not in the files, so in no other count); a tombstone seen for the first time
    is ``inserted`` as a deleted record. ``revived`` counts deleted records that came back (also in
    ``updated``)."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    revived: int = 0
    rejected: int = 0
    extracted: int = 0
    duplicates: int = 0

    @property
    def balanced(self) -> bool:
        return self.extracted == self.inserted + self.updated + self.unchanged + self.duplicates + self.rejected


@dataclass(frozen=True)
class MergeResult:
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    revived: int
    duplicates: int  # found in the files on top of what the caller counted
    staged: int  # rows read from the files


def _temp_tables(entity: Entity) -> tuple[sa.Table, sa.Table, sa.Table, sa.Table]:
    md = sa.MetaData()
    rows = sa.Table(
        "gs_stage_rows", md,
        sa.Column("ord", sa.BigInteger(), nullable=False),
        sa.Column("sourced_id", KeyText(), nullable=False),
        *[sa.Column(f.column, sa_type(f.kind)) for f in content_fields(entity)],
        *[sa.Column(c, sa_type("json" if c == "field_sources" else "str")) for c in PROVENANCE_COLUMNS],
        sa.Column("row_hash", sa.BigInteger(), nullable=False),
        sa.Column("tombstone", sa.Boolean(), nullable=False),
        prefixes=["TEMPORARY"],
    )
    keys = sa.Table(
        "gs_stage_keys", md,
        sa.Column("ord", sa.BigInteger(), nullable=False),
        sa.Column("sourced_id", KeyText(), nullable=False),
        sa.Column("row_hash", sa.BigInteger(), nullable=False),
        sa.Column("tombstone", sa.Boolean(), nullable=False),
        sa.Column("checked", sa.Boolean(), nullable=False),  # staged because a checksum bucket differed
        prefixes=["TEMPORARY"],
    )
    known = sa.Table(  # each staged key with the state of its record in the table (looked up once)
        "gs_stage_known", md,
        *[sa.Column(c.name, c.type, nullable=False) for c in keys.columns],
        sa.Column("cur_exists", sa.Boolean(), nullable=False),
        sa.Column("cur_hash", sa.BigInteger()),
        sa.Column("cur_deleted", sa.Boolean()),
        prefixes=["TEMPORARY"],
    )
    diff = sa.Table(  # staged rows to write, and keys that vanished
        "gs_stage_diff", md,
        sa.Column("ord", sa.BigInteger()),
        sa.Column("sourced_id", KeyText()),
        sa.Column("gone", KeyText()),
        prefixes=["TEMPORARY"],
    )
    return rows, keys, known, diff


def _staging_rows(ords: np.ndarray, batch: pa.RecordBatch, hashes: np.ndarray, tomb: np.ndarray) -> pa.RecordBatch:
    """Full rows in the layout of ``gs_stage_rows``."""
    return pa.RecordBatch.from_arrays([pa.array(ords), *batch.columns, pa.array(hashes), pa.array(tomb)],
                                      names=["ord", *batch.schema.names, "row_hash", "tombstone"])


def _row_batches(files: StagedFiles, wanted: np.ndarray | None) -> Iterator[pa.RecordBatch]:
    """Full staging rows (optionally only the wanted ordinals, sorted) in the temp table's layout."""
    for sb in files.batches(wanted):
        n = sb.batch.num_rows
        ords = sb.ords if sb.ords is not None else np.arange(sb.first_ord, sb.first_ord + n, dtype=np.int64)
        yield _staging_rows(ords, sb.batch, sb.hashes, sb.tombstone)


class _Speculation:
    """Full rows of the keys staged in the first pass, kept while the keys stream past.

    IC bumps ``dateLastModified`` when it changes a record, so the rows modified after the last
    watermark are nearly all of the rows a reload has to write. Keeping them (decoded, without the
    batch's dictionaries) lets the second pass over the files be skipped; past ``cap`` rows the
    speculation is dropped, so memory stays bounded. Correctness never depends on it: any row to
    write that is not here is read in the second pass.
    """

    def __init__(self, cap: int | None = None) -> None:
        self.cap = SPECULATION_CAP if cap is None else cap
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0
        self.active = True

    def offer(self, rows: pa.RecordBatch) -> None:
        if not self.active or rows.num_rows == 0:
            return
        self.rows += rows.num_rows
        if self.rows > self.cap:
            self.active = False
            self.batches.clear()
            return
        self.batches.append(pa.RecordBatch.from_arrays(
            [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in rows.columns],
            names=rows.schema.names))

    def ords(self) -> np.ndarray:
        if not self.batches:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([b.column("ord").to_numpy() for b in self.batches])

    def take(self, wanted: np.ndarray) -> Iterator[pa.RecordBatch]:
        """The kept rows among the ``wanted`` ordinals."""
        for batch in self.batches:
            mask = np.isin(batch.column("ord").to_numpy(), wanted, assume_unique=True)
            if mask.any():
                yield batch.filter(pa.array(mask))


class _Checksum:
    """Count and XOR of the row hashes of the rows whose keys were not staged, per bucket.

    Row hashes cover key and content (``staging``), so equal counts and XORs on both sides mean,
    up to a 64-bit hash collision, equal sets of (key, content) pairs: those rows are unchanged,
    and no record of the table outside the staged keys vanished. A bucket is the top
    ``BUCKET_BITS`` of the hash, so a mismatch narrows the keys to stage to a few buckets' worth.
    """

    def __init__(self) -> None:
        self.count = np.zeros(BUCKETS, dtype=np.int64)
        self.xor = np.zeros(BUCKETS, dtype=np.uint64)

    def add(self, hashes: np.ndarray, sign: int = 1) -> None:
        """Count ``hashes`` in (``sign`` -1: out of) their buckets; XOR is its own inverse."""
        buckets = _bucket(hashes)
        self.count += sign * np.bincount(buckets, minlength=BUCKETS)
        np.bitwise_xor.at(self.xor, buckets, hashes.view(np.uint64))

    @property
    def total(self) -> tuple[int, int]:
        """(count, XOR) over all buckets, the XOR as an unsigned 64-bit integer."""
        return int(self.count.sum()), int(np.bitwise_xor.reduce(self.xor))

    def mismatched(self, other: _Checksum) -> np.ndarray:
        """Buckets where ``other`` differs from this checksum."""
        return np.flatnonzero((other.count != self.count) | (other.xor != self.xor))


def _bucket(hashes: np.ndarray) -> np.ndarray:
    """Bucket 0..BUCKETS-1 of signed row hashes (``_bucket_sql`` in SQL)."""
    return (hashes.view(np.int64) >> (64 - BUCKET_BITS)) + BUCKETS // 2


def _bucket_sql(row_hash: Any) -> Any:
    shift = sa.literal_column(str(64 - BUCKET_BITS), sa.Integer)  # a constant: bigint >> integer
    return row_hash.op(">>")(shift) + sa.literal_column(str(BUCKETS // 2), sa.Integer)


class _FirstPass:
    """What streaming the files once yields besides the staged keys.

    With a checksum (full syncs that have a watermark), only the keys of rows modified after
    ``after`` (and of tombstones and undated rows) are staged; the other rows go into the
    checksum, which is compared with the table's, and their keys into a local spill file (about
    50 bytes a row, on disk, not in memory), from which later passes stage the keys of the
    buckets that differ without reading and hashing the staged files again. Without a checksum,
    every key is staged.
    """

    def __init__(self, after: datetime | None, full_sync: bool) -> None:
        self.after = after
        self.checksum = _Checksum() if full_sync and after is not None else None
        self.speculation = _Speculation()
        self.rows = 0
        self._spill = tempfile.TemporaryFile(prefix="gradesync-keys-") if self.checksum is not None else None
        self._spill_writer: pa.ipc.RecordBatchStreamWriter | None = None

    def close(self) -> None:
        if self._spill_writer is not None:
            self._spill_writer.close()
        if self._spill is not None:
            self._spill.close()

    def _staged_mask(self, sb: StagedBatch) -> np.ndarray:
        """Which rows of a batch have their key staged in the first pass."""
        dlm = sb.batch.column("date_last_modified")
        recent = pa.compute.fill_null(pa.compute.greater(dlm, pa.scalar(self.after, dlm.type)), True)
        return recent.to_numpy(zero_copy_only=False) | sb.tombstone

    def _set_aside(self, keys: pa.RecordBatch) -> None:
        assert self._spill is not None
        if self._spill_writer is None:
            self._spill_writer = pa.ipc.new_stream(pa.PythonFile(self._spill, mode="w"), keys.schema)
        self._spill_writer.write_batch(keys)

    def key_batches(self, files: StagedFiles) -> Iterator[pa.RecordBatch]:
        for sb in files.batches(threads=READ_THREADS):
            n = sb.batch.num_rows
            self.rows += n
            ords = np.arange(sb.first_ord, sb.first_ord + n, dtype=np.int64)
            hashes, tomb, batch = sb.hashes, sb.tombstone, sb.batch
            if self.checksum is not None:
                staged = self._staged_mask(sb)
                rest = ~staged
                if rest.any():
                    self.checksum.add(hashes[rest])
                    self._set_aside(_keys(pa.array(ords[rest]), batch.column(KEY_COLUMN).filter(pa.array(rest)),
                                          pa.array(hashes[rest]), pa.array(tomb[rest]), checked=True))
                    batch = batch.filter(pa.array(staged))
                    ords, hashes, tomb = ords[staged], hashes[staged], tomb[staged]
            if not len(ords):
                continue
            rows = _staging_rows(ords, batch, hashes, tomb)
            self.speculation.offer(rows)
            yield _keys(rows.column("ord"), rows.column(KEY_COLUMN), rows.column("row_hash"),
                        rows.column("tombstone"), checked=False)

    def bucket_key_batches(self, buckets: np.ndarray | None) -> Iterator[pa.RecordBatch]:
        """A later pass: the keys the first pass set aside, of rows in ``buckets`` (None: all)."""
        if self._spill_writer is None:  # every row was staged in the first pass
            return
        assert self._spill is not None
        self._spill_writer.close()
        self._spill.seek(0)
        for keys in pa.ipc.open_stream(pa.PythonFile(self._spill, mode="r")):
            if buckets is not None:
                keys = keys.filter(pa.array(np.isin(_bucket(keys.column("row_hash").to_numpy()), buckets)))
            if keys.num_rows:
                yield keys


def _keys(ords: pa.Array, keys: pa.Array, hashes: pa.Array, tomb: pa.Array, *, checked: bool) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([ords, keys, hashes, tomb, pa.array(np.full(len(ords), checked))],
                                      names=["ord", "sourced_id", "row_hash", "tombstone", "checked"])


def _look_up(conn: sa.Connection, backend: Backend, keys: sa.Table, known: sa.Table, target: sa.Table,
             iid: Any) -> None:
    """Add the staged keys not yet in ``known``, with the current state of their records."""
    cur = target
    match = sa.and_(cur.c.integration_id == iid, cur.c.sourced_id == keys.c.sourced_id)
    conn.execute(sa.insert(known).from_select(
        [c.name for c in known.columns],
        sa.select(*keys.columns, cur.c.sourced_id.is_not(None), cur.c.row_hash, cur.c.deleted_at.is_not(None))
        .select_from(keys.outerjoin(cur, match))
        .where(~sa.exists().where(known.c.ord == keys.c.ord))))
    backend.analyze(conn, known, ("sourced_id", "ord"))


def _buckets_of_hidden_copies(conn: sa.Connection, known: sa.Table, covered: np.ndarray) -> np.ndarray:
    """Buckets that may hide an unstaged copy of a key staged because its bucket differed.

    A key can come twice in the files: one copy changed (its bucket differs, so it was staged)
    and one identical to the stored row, whose bucket balances and so was not. The stored row's
    bucket points at that copy; the dedupe needs every copy of a staged key.
    """
    found = conn.execute(
        sa.select(_bucket_sql(known.c.cur_hash)).distinct()
        .where(known.c.checked, known.c.cur_exists, sa.not_(known.c.cur_deleted))).scalars().all()
    return np.setdiff1d(np.array(found, dtype=np.int64), covered)


def _changed_buckets(conn: sa.Connection, backend: Backend, target: sa.Table, iid: Any, known: sa.Table,
                     checksum: _Checksum) -> np.ndarray:
    """Buckets where the table's live rows, less those with staged keys, differ from the checksum.

    One aggregate over the table (parallel on Postgres) settles the usual case: no bucket differs.
    Otherwise the live rows' hashes are streamed (packed, never all held) into a checksum of the
    same layout. Either way the live records of the staged keys, looked up in ``known``, are
    taken out of the table's side.
    """
    live = sa.and_(target.c.integration_id == iid, target.c.deleted_at.is_(None))
    table = _Checksum()  # starts as minus the staged keys' live records
    for staged in backend.int8_values(conn, sa.select(known.c.cur_hash).where(
            known.c.cur_exists, sa.not_(known.c.cur_deleted)).group_by(known.c.sourced_id, known.c.cur_hash)):
        table.add(staged, sign=-1)
    count, xor = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.bit_xor(target.c.row_hash), 0))
                              .where(live)).one()
    staged_count, staged_xor = table.total  # the count is negative
    if (count + staged_count, (xor & _MASK64) ^ staged_xor) == checksum.total:
        return np.zeros(0, dtype=np.int64)
    for hashes in backend.int8_values(conn, sa.select(target.c.row_hash).where(live)):
        table.add(hashes)
    return checksum.mismatched(table)


def _stage_and_compare_keys(conn: sa.Connection, backend: Backend, files: StagedFiles, target: sa.Table, iid: Any,
                            keys: sa.Table, known: sa.Table, *, full_sync: bool, speculate_after: datetime | None,
                            label: str) -> tuple[_FirstPass, np.ndarray | None]:
    """Stage keys and look their records up (step 1 of the module docstring).

    Returns the first pass (rows read, rows kept) and the buckets whose live records may have
    vanished: None for all of them, empty for none.
    """
    first = _FirstPass(speculate_after, full_sync)
    try:
        compared = backend.stage(conn, keys, first.key_batches(files))
        backend.analyze(conn, keys, ("sourced_id", "ord"))  # what the joins and filters below use
        _look_up(conn, backend, keys, known, target, iid)
        buckets: np.ndarray | None = None
        if first.checksum is None:
            verdict = "every key staged (delta sync, or no watermark yet)"
        else:
            # Rows whose keys were set aside are settled by the checksum: all of them unchanged
            # and nothing vanished (no bucket differs), or their keys are staged now, by bucket.
            buckets = _changed_buckets(conn, backend, target, iid, known, first.checksum)
            verdict = f"checksums differ in {len(buckets):,} of {BUCKETS:,} buckets"
            if len(buckets) > BUCKETS // 2:
                buckets = None
            covered, more = np.zeros(0, dtype=np.int64), buckets
            while more is None or len(more):  # at most twice: see _buckets_of_hidden_copies
                compared += backend.stage(conn, keys, first.bucket_key_batches(more))
                backend.analyze(conn, keys, ("sourced_id", "ord"))
                _look_up(conn, backend, keys, known, target, iid)
                if more is None:
                    break
                covered = np.union1d(covered, more)
                more = _buckets_of_hidden_copies(conn, known, covered)
    finally:
        first.close()
    log.info("%s: compared %s of %s staged rows by key; %s", label, f"{compared:,}", f"{first.rows:,}", verdict)
    return first, buckets


def _rows_to_write(conn: sa.Connection, target: sa.Table, iid: Any, keys: sa.Table, known: sa.Table,
                   diff: sa.Table, *, full_sync: bool, buckets: np.ndarray | None) -> np.ndarray:
    """Fill ``diff`` with the keys to write and, for a full sync, the records that vanished.

    Returns the sorted ordinals of every staged copy of a key to write, so that duplicates
    resolve to the latest copy.
    """
    kn = known
    conn.execute(sa.insert(diff).from_select(["ord", "sourced_id"], sa.select(kn.c.ord, kn.c.sourced_id).where(
        sa.or_(sa.not_(kn.c.cur_exists), kn.c.cur_hash != kn.c.row_hash, kn.c.cur_deleted != kn.c.tombstone))))
    if full_sync and (buckets is None or len(buckets)):
        # live records without a staged key vanished: only in the buckets that differ
        t = target
        gone = [t.c.integration_id == iid, t.c.deleted_at.is_(None),
                ~sa.exists().where(keys.c.sourced_id == t.c.sourced_id)]
        if buckets is not None:
            gone.append(_bucket_sql(t.c.row_hash).in_([int(b) for b in buckets]))
        conn.execute(sa.insert(diff).from_select(["gone"], sa.select(t.c.sourced_id).where(*gone)))
    changed_keys = sa.select(diff.c.sourced_id).where(diff.c.ord.is_not(None)).distinct().subquery()
    return np.fromiter(conn.execute(  # streamed: 8 bytes per row to write, nothing more
        sa.select(kn.c.ord).join(changed_keys, changed_keys.c.sourced_id == kn.c.sourced_id).order_by(kn.c.ord),
        execution_options={"stream_results": True, "yield_per": 50_000},
    ).scalars(), dtype=np.int64)


def _constant(value: pa.Array, n: int) -> pa.DictionaryArray:
    """``n`` times the one value of ``value``, as a dictionary (encoded once, not per row)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), value)


def _target_batches(files: StagedFiles, target: sa.Table, integration_id: str, run_id: str,
                    seen_at: datetime) -> Iterator[pa.RecordBatch]:
    """Staged rows as complete rows of the entity table (new records, first seen now)."""
    seen = pa.array([seen_at], pa.timestamp("us", tz="UTC"))
    iid, run = pa.array([integration_id], pa.string()), pa.array([run_id], pa.string())
    reason = pa.scalar(REASON_TOMBSTONE, pa.string())
    names = [c.name for c in target.columns]
    for sb in files.batches():  # one thread: the server's COPY of every row sets the pace here
        n = sb.batch.num_rows
        tomb = pa.array(sb.tombstone)
        seen_n, run_n = _constant(seen, n), _constant(run, n)
        extra = {
            "integration_id": _constant(iid, n),
            "row_hash": pa.array(sb.hashes),
            "first_seen_at": seen_n, "first_run_id": run_n, "changed_at": seen_n, "changed_run_id": run_n,
            "deleted_at": pa.compute.if_else(tomb, seen[0], pa.scalar(None, seen.type)),
            "deleted_reason": pa.compute.if_else(tomb, reason, pa.scalar(None, pa.string())),
        }
        yield pa.RecordBatch.from_arrays([extra[c] if c in extra else sb.batch.column(c) for c in names],
                                         names=names)


def _load_into_empty(conn: sa.Connection, backend: Backend, target: sa.Table, files: StagedFiles,
                     integration_id: str, run_id: str, seen_at: datetime) -> MergeResult | None:
    """First load of an integration: write straight into the table, no staging copy, no merge.

    Into a completely empty table (the usual first load of a warehouse) the primary key is
    dropped and rebuilt afterwards, which is several times faster than maintaining it row by row.
    Returns None, with nothing written, if the files repeat a key (then the merge dedupes).
    """
    empty = backend.rebuild_key_after_bulk_insert and conn.execute(
        sa.select(sa.literal(1)).select_from(target).limit(1)).first() is None
    savepoint = conn.begin_nested()
    try:
        if empty:
            backend.bulk_into_empty(conn, target)
        n = backend.stage(conn, target, _target_batches(files, target, integration_id, run_id, seen_at),
                          freeze=empty)
        if empty:
            conn.execute(sa.schema.AddConstraint(target.primary_key))
        # the next load plans its joins from these columns' statistics; the rest is left to
        # autovacuum's analyze, which a million new rows trigger soon after the commit
        backend.analyze(conn, target, ("integration_id", "sourced_id", "row_hash", "deleted_at"))
    except (DuplicateKey, sa.exc.IntegrityError):
        savepoint.rollback()
        log.info("%s: staged files repeat keys; loading through the deduplicating merge", target.name)
        return None
    savepoint.commit()
    return MergeResult(inserted=n, updated=0, unchanged=0, deleted=0, revived=0, duplicates=0, staged=n)


def _dedupe(conn: sa.Connection, keys: sa.Table) -> int:
    """Drop all but the last version of each duplicated key; return how many rows were dropped."""
    dup_groups = (
        sa.select(keys.c.sourced_id).group_by(keys.c.sourced_id).having(sa.func.count() > 1).limit(1)
    )
    if conn.execute(dup_groups).first() is None:
        return 0
    newer = keys.alias("newer")
    stmt = sa.delete(keys).where(
        sa.exists().where(
            newer.c.sourced_id == keys.c.sourced_id,
            sa.or_(
                newer.c.date_last_modified > keys.c.date_last_modified,
                sa.and_(newer.c.date_last_modified == keys.c.date_last_modified, newer.c.ord > keys.c.ord),
                sa.and_(newer.c.date_last_modified.is_not(None), keys.c.date_last_modified.is_(None)),
            ),
        )
    )
    return conn.execute(stmt).rowcount


def merge(
    conn: sa.Connection,
    backend: Backend,
    ws: WarehouseSchema,
    entity: Entity,
    integration_id: str,
    run_id: str,
    files: StagedFiles,
    *,
    full_sync: bool,
    seen_at: datetime,
    speculate_after: datetime | None = None,
) -> MergeResult:
    """Merge the staged files into the entity table inside the caller's transaction.

    ``speculate_after`` (the last watermark, with a margin) lets the keys-first path keep rows
    modified since then while it streams the keys, and skip the second pass when they are all
    the rows it has to write.
    """
    target = ws.entity(entity.name)
    history = ws.history(entity.name)
    rows_t, keys_t, known_t, diff_t = _temp_tables(entity)
    iid = sa.literal(integration_id, sa.Text)
    run = sa.literal(run_id, sa.Text)
    seen = sa.literal(seen_at, sa_type("datetime"))

    clock = [time.perf_counter()]

    def lap(what: str) -> None:
        now = time.perf_counter()
        log.debug("%s/%s: %s %.3fs", integration_id, entity.name, what, now - clock[0])
        clock[0] = now

    has_rows = conn.execute(
        sa.select(sa.literal(1)).select_from(target).where(target.c.integration_id == iid).limit(1)
    ).first() is not None
    two_pass = has_rows and backend.two_pass

    if not has_rows:
        direct = _load_into_empty(conn, backend, target, files, integration_id, run_id, seen_at)
        lap("copy into table")
        if direct is not None:
            return direct

    rows_t.create(conn)
    diff = None
    if two_pass:
        for table in (keys_t, known_t, diff_t):
            table.create(conn)
        first, buckets = _stage_and_compare_keys(conn, backend, files, target, iid, keys_t, known_t,
                                                 full_sync=full_sync, speculate_after=speculate_after,
                                                 label=f"{integration_id}/{entity.name}")
        staged = first.rows
        lap("stage keys")
        wanted = _rows_to_write(conn, target, iid, keys_t, known_t, diff_t, full_sync=full_sync, buckets=buckets)
        speculation = first.speculation
        missing = np.setdiff1d(wanted, speculation.ords(), assume_unique=True)
        lap(f"find changed ({len(wanted)} rows to write, {len(wanted) - len(missing)} kept from the first pass)")
        backend.stage(conn, rows_t, speculation.take(wanted))
        speculation.batches.clear()
        if len(missing):
            backend.stage(conn, rows_t, _row_batches(files, missing))
        backend.analyze(conn, rows_t)
        backend.analyze(conn, diff_t)
        diff = diff_t
        dropped = _dedupe(conn, rows_t)  # among keys with a row to write: see the module docstring
        lap("stage changed rows")
    else:
        staged = backend.stage(conn, rows_t, _row_batches(files, None))
        backend.analyze(conn, rows_t)
        lap("stage rows")
        dropped = _dedupe(conn, rows_t)
        lap("dedupe")
    r = rows_t
    t = target
    live_rows = staged - dropped

    content = [f.column for f in content_fields(entity)] + list(PROVENANCE_COLUMNS)
    match = sa.and_(t.c.integration_id == iid, t.c.sourced_id == r.c.sourced_id)
    was_deleted = t.c.deleted_at.is_not(None)
    needs_update = sa.or_(t.c.row_hash != r.c.row_hash, was_deleted != r.c.tombstone)
    revive = sa.and_(was_deleted, sa.not_(r.c.tombstone))
    tomb_delete = sa.and_(sa.not_(was_deleted), r.c.tombstone)

    updated = revived = tomb_deleted = 0
    if has_rows:
        counts = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(sa.case((revive, 1), else_=0)), 0),
                sa.func.coalesce(sa.func.sum(sa.case((tomb_delete, 1), else_=0)), 0),
            ).select_from(r.join(t, match)).where(needs_update)
        ).one()
        updated, revived, tomb_deleted = (int(v) for v in counts)
        lap("classify")

    if history is not None:
        refs = HISTORY_REFS[entity.name]
        hist_cols = (["integration_id", "sourced_id", "run_id", "seen_at", "change", *refs]
                     + [f"{p}_{c}" for c in TRACKED_COLUMNS for p in ("old", "new")])
        if has_rows:
            tracked_changed = sa.or_(
                *[t.c[c].is_distinct_from(r.c[c]) for c in TRACKED_COLUMNS if c != "date_last_modified"],
                was_deleted != r.c.tombstone,
            )
            change = sa.case((revive, "revive"), (tomb_delete, "delete"), else_="update")
            sel = sa.select(
                iid, r.c.sourced_id, run, seen, change, *[r.c[c] for c in refs],
                *[x for c in TRACKED_COLUMNS for x in (t.c[c], r.c[c])],
            ).select_from(r.join(t, match)).where(needs_update, tracked_changed)
            conn.execute(sa.insert(history).from_select(hist_cols, sel))
        lap("history")

    if has_rows and updated:
        conn.execute(
            sa.update(t).where(match, needs_update).values(
                {**{c: r.c[c] for c in content},
                 "row_hash": r.c.row_hash, "changed_at": seen, "changed_run_id": run,
                 "deleted_at": sa.case((r.c.tombstone, sa.func.coalesce(t.c.deleted_at, seen)), else_=sa.null()),
                 "deleted_reason": sa.case((r.c.tombstone, REASON_TOMBSTONE), else_=sa.null())}
            )
        )

    insert_cols = ["integration_id", "sourced_id", *content, "row_hash", "first_seen_at", "first_run_id",
                   "changed_at", "changed_run_id", "deleted_at", "deleted_reason"]
    sel = sa.select(
        iid, r.c.sourced_id, *[r.c[c] for c in content], r.c.row_hash, seen, run, seen, run,
        sa.case((r.c.tombstone, seen), else_=sa.null()),
        sa.case((r.c.tombstone, REASON_TOMBSTONE), else_=sa.null()),
    )
    if has_rows:
        sel = sel.where(~sa.exists().where(match))
    inserted = conn.execute(sa.insert(t).from_select(insert_cols, sel),
                            execution_options={"preserve_rowcount": True}).rowcount
    lap("update+insert")

    vanished = 0
    if full_sync and has_rows:
        if diff is not None:
            gone = sa.and_(t.c.integration_id == iid, t.c.deleted_at.is_(None), t.c.sourced_id == diff.c.gone)
        else:
            gone = sa.and_(t.c.integration_id == iid, t.c.deleted_at.is_(None),
                           ~sa.exists().where(r.c.sourced_id == t.c.sourced_id))
        if history is not None:
            refs = HISTORY_REFS[entity.name]
            new_vals = {"status": sa.literal(DELETED_STATUS, sa.Text)}
            sel = sa.select(
                iid, t.c.sourced_id, run, seen, sa.literal("delete", sa.Text), *[t.c[c] for c in refs],
                *[x for c in TRACKED_COLUMNS for x in (t.c[c], new_vals.get(c, t.c[c]))],
            ).where(gone)
            conn.execute(sa.insert(history).from_select(hist_cols, sel))
        vanished = conn.execute(
            sa.update(t).where(gone).values(
                status=DELETED_STATUS, deleted_at=seen, deleted_reason=REASON_VANISHED,
                changed_at=seen, changed_run_id=run,
            )
        ).rowcount
    lap("vanished")
    r.drop(conn)
    if two_pass:
        for table in (keys_t, known_t, diff_t):
            table.drop(conn)
    return MergeResult(
        inserted=inserted,
        updated=updated,
        unchanged=live_rows - inserted - updated,
        deleted=tomb_deleted + vanished,
        revived=revived,
        duplicates=dropped,
        staged=staged,
    )
