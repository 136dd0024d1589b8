"""Read staged Parquet files as record batches in the warehouse's column layout, with row hashes.

Memory is bounded by the batch size: files are opened one at a time and read batch by batch.
The row hash is a 64-bit hash of every content column and, last, of the key, computed
vectorised: fixed-width columns are hashed from their bit patterns, strings with pandas' SipHash
(fixed key; dictionary-encoded columns hash each distinct value once), and the column hashes are
combined in column order. It tells "same row" from "changed row" for one key, and because the key
is in it, an XOR of row hashes summarises a set of (key, content) pairs: the loader compares such
checksums instead of every key (see ``loader``). A hash function change between versions needs a
migration that rewrites the stored hashes (0003 folded the key in); without one, unchanged rows
would look changed once.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pandas.util import hash_array

from gradesync.entities import API_VERSIONS, Entity
from gradesync.records import arrow_schema
from gradesync.warehouse.keyhash import COLUMN_MIX, fold_key
from gradesync.warehouse.schema import DELETED_STATUS, PROVENANCE_COLUMNS, content_fields

KEY_COLUMN = "sourced_id"
DEFAULT_BATCH_ROWS = 65_536  # peak memory is a few batches; smaller ones re-hash the same dictionary values
_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)


def staging_schema(entity: Entity) -> pa.Schema:
    """Arrow schema of a staged row in the warehouse: all versions' fields plus provenance."""
    every_version = replace(entity, fields=tuple(replace(f, versions=API_VERSIONS) for f in entity.fields),
                            versions=API_VERSIONS)
    fields = [f.with_nullable(True) for f in arrow_schema(every_version, API_VERSIONS[-1])]
    fields += [pa.field(c, pa.string()) for c in PROVENANCE_COLUMNS]
    return pa.schema(fields)


def _hash_column(arr: pa.Array) -> np.ndarray:
    """uint64 hash per element; nulls get a fixed value distinct from typical hashes."""
    n = len(arr)
    t = arr.type
    if pa.types.is_dictionary(t):  # string columns are read dictionary-encoded: hash each value once
        dictionary = arr.dictionary.to_numpy(zero_copy_only=False).astype(object)
        dict_hash = hash_array(dictionary, categorize=False) if len(dictionary) else np.zeros(1, np.uint64)
        out = dict_hash[arr.indices.fill_null(0).to_numpy(zero_copy_only=False)]
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        enc = pc.dictionary_encode(arr)
        dictionary = enc.dictionary.to_numpy(zero_copy_only=False).astype(object)
        dict_hash = hash_array(dictionary, categorize=False) if len(dictionary) else np.zeros(0, np.uint64)
        idx = enc.indices
        out = dict_hash[idx.fill_null(0).to_numpy(zero_copy_only=False)] if len(dict_hash) else np.zeros(
            n, np.uint64)
    else:
        if pa.types.is_boolean(t):
            vals = arr.fill_null(False).cast(pa.uint8()).to_numpy(zero_copy_only=False).astype(np.uint64)
        elif pa.types.is_floating(t):
            vals = arr.fill_null(0.0).to_numpy(zero_copy_only=False).astype(np.float64).view(np.uint64)
        elif pa.types.is_timestamp(t):
            vals = arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).view(np.uint64)
        elif pa.types.is_date32(t):
            vals = arr.cast(pa.int32()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64).view(
                np.uint64)
        else:
            raise TypeError(f"cannot hash column of type {t}")
        out = hash_array(vals, categorize=False)
    if arr.null_count:
        mask = arr.is_null().to_numpy(zero_copy_only=False)
        out = np.where(mask, _NULL_HASH, out)
    return out


def row_hashes(batch: pa.RecordBatch, columns: Iterable[str]) -> np.ndarray:
    """Signed 64-bit hash of the given columns of each row (signed so it fits a BIGINT column)."""
    acc = np.full(batch.num_rows, np.uint64(0xCBF29CE484222325), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in columns:
            acc = (acc ^ _hash_column(batch.column(name))) * COLUMN_MIX
    return acc.view(np.int64)


def _open(path: Any) -> Any:
    """A binary file object for a local path, a URL, an ObjectStoragePath or any fsspec-like path."""
    if hasattr(path, "open") and not isinstance(path, str):
        return path.open("rb")
    if isinstance(path, str) and "://" in path and not path.startswith("file://"):
        import fsspec

        return fsspec.open(path, "rb").open()
    if isinstance(path, str) and path.startswith("file://"):
        path = path[len("file://"):]
    return open(path, "rb")  # noqa: SIM115 - closed by the caller


@dataclass
class StagedBatch:
    batch: pa.RecordBatch  # in staging_schema(entity) layout
    hashes: np.ndarray  # int64 row hashes
    tombstone: np.ndarray  # bool: status == tobedeleted
    first_ord: int  # ordinal of the first row of the file batch across all files
    ords: np.ndarray | None = None  # ordinals of the rows when only some were asked for


class StagedFiles:
    """The staged Parquet files of one entity, readable any number of times in the same order."""

    def __init__(self, entity: Entity, files: Iterable[Any], batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        self.entity = entity
        self.files = list(files)
        self.batch_rows = batch_rows
        self.schema = staging_schema(entity)
        self.hash_columns = [f.column for f in content_fields(entity)] + list(PROVENANCE_COLUMNS)
        self._dictionary_columns = {f.name for f in self.schema if pa.types.is_string(f.type)} - {KEY_COLUMN}

    def _conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        arrays = []
        for field in self.schema:
            idx = batch.schema.get_field_index(field.name)
            if idx < 0:
                arrays.append(pa.nulls(batch.num_rows, field.type))
                continue
            col = batch.column(idx)
            if pa.types.is_dictionary(col.type) and col.type.value_type == field.type:
                arrays.append(col)  # kept encoded: hashing and CSV handle it, values are the same
                continue
            if pa.types.is_timestamp(field.type) and pa.types.is_timestamp(col.type) and col.type.tz is None:
                col = col.cast(pa.timestamp(col.type.unit, tz="UTC"))  # naive staging values are UTC
            if field.name == "field_sources" and not pa.types.is_string(col.type) \
                    and not pa.types.is_dictionary(col.type):
                col = pa.array([None if v is None else json.dumps(v, sort_keys=True) for v in col.to_pylist()],
                               pa.string())
            if col.type != field.type:
                # e.g. pandas-written files: ns timestamps, large strings, all-null columns
                col = pc.cast(col, field.type, safe=not pa.types.is_timestamp(field.type))
            arrays.append(col)
        return pa.RecordBatch.from_arrays(arrays, names=self.schema.names)

    def batches(self, wanted: np.ndarray | None = None, *, threads: int = 1) -> Iterator[StagedBatch]:
        """Stream conformed batches with their row hashes; rows are numbered across files.

        With ``wanted`` (sorted ordinals) only those rows are returned, and files and batches
        without any of them are skipped before anything is decoded or hashed. With ``threads``
        above 1 (and no ``wanted``), that many files are read and hashed at once (Parquet decoding
        and the vectorised hashing release the GIL); batches still come in file order, and memory
        holds at most ``threads + 1`` files' batches.
        """
        if threads > 1 and wanted is None:
            yield from self._batches_in_threads(threads)
            return
        ordinal = 0
        for path in self.files:
            ordinal += yield from self._file_batches(path, ordinal, wanted)

    def _batches_in_threads(self, threads: int) -> Iterator[StagedBatch]:
        def read(path: Any) -> tuple[list[StagedBatch], int]:
            out: list[StagedBatch] = []
            batches = self._file_batches(path, 0, None)
            while True:
                try:
                    out.append(next(batches))
                except StopIteration as done:
                    return out, done.value

        paths = iter(self.files)
        with ThreadPoolExecutor(threads, thread_name_prefix="gradesync-read") as pool:
            pending = deque(pool.submit(read, path) for path in itertools.islice(paths, threads))
            ordinal = 0
            while pending:
                batches, total = pending.popleft().result()
                pending.extend(pool.submit(read, path) for path in itertools.islice(paths, 1))
                for sb in batches:
                    sb.first_ord += ordinal
                    yield sb
                ordinal += total

    def _file_batches(self, path: Any, ordinal: int, wanted: np.ndarray | None) -> Generator[StagedBatch, None, int]:
        """The batches of one file whose first row has number ``ordinal``; returns its row count."""
        wanted_names = set(self.schema.names)
        with _open(path) as fh:
            pf = pq.ParquetFile(fh)
            # strings other than the key repeat a lot: decode them as dictionaries (cheaper to
            # read, and each distinct value is hashed once)
            encoded = [n for n in pf.schema_arrow.names
                       if n in self._dictionary_columns and pa.types.is_string(pf.schema_arrow.field(n).type)]
            if encoded:
                pf = pq.ParquetFile(fh, read_dictionary=encoded)
            total = pf.metadata.num_rows
            if wanted is not None and _count_between(wanted, ordinal, ordinal + total) == 0:
                return total
            columns = [n for n in pf.schema_arrow.names if n in wanted_names]
            for raw in pf.iter_batches(batch_size=self.batch_rows, columns=columns):
                n = raw.num_rows
                if n == 0:
                    continue
                first = ordinal
                ordinal += n
                if wanted is not None:
                    lo, hi = np.searchsorted(wanted, [first, first + n])
                    if lo == hi:
                        continue
                    picked = wanted[lo:hi]
                    raw = raw.take(pa.array(picked - first))
                else:
                    picked = None
                batch = self._conform(raw)
                hashes = fold_key(row_hashes(batch, self.hash_columns), batch.column(KEY_COLUMN))
                tomb = pc.fill_null(pc.equal(batch.column("status"), DELETED_STATUS), False).to_numpy(
                    zero_copy_only=False)
                yield StagedBatch(batch, hashes, tomb, first, picked)
        return total


def _count_between(sorted_values: np.ndarray, lo: int, hi: int) -> int:
    a, b = np.searchsorted(sorted_values, [lo, hi])
    return int(b - a)
