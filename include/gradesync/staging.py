"""Staging: OneRoster pages → typed Arrow tables → Parquet parts on an ``ObjectStoragePath``.

Staging lives on any fsspec location (``file://`` by default, ``s3://`` etc. by config) so extract,
dedupe and load can run on different workers. Files follow ``records.arrow_schema``; rejects follow
``records.REJECT_SCHEMA``.

``PageDecoder`` is the hot path of extraction. ``records.flatten_records`` (one Python call per
field per record) costs ~70 µs per result, which alone would exceed the benchmark's budget for a
million results. The decoder first tries a columnar route: msgspec decodes the page straight into
typed structs, columns are converted by Arrow, and values are checked against the canonical formats
(RFC 3339 UTC date-times, ISO dates, ``"true"``/``"false"`` flags). A page that is not entirely
canonical and valid goes through ``flatten_records`` instead, so both routes give identical tables
and rejects (a property test compares them on generated pages).
"""

from __future__ import annotations

import json
import json.encoder
import logging
import operator
import os
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

from gradesync.entities import Entity, Field
from gradesync.oneroster.client import envelope_records
from gradesync.oneroster.errors import RetryableError
from gradesync.records import REJECT_SCHEMA, Reject, arrow_schema, flatten_records, rejects_table

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"

# Canonical forms the columnar route accepts; everything else takes the exact per-record route.
_YEAR = r"(000[1-9]|00[1-9]\d|0[1-9]\d\d|[1-9]\d{3})"
_DATE = _YEAR + r"-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
_DATETIME_RE = "^" + _DATE + r"T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
_DATE_RE = "^" + _DATE
_FLAGS: dict[Any, bool | None] = {"true": True, "false": False, True: True, False: False, None: None, "": None}
# Same output as json.dumps(value, ensure_ascii=False, sort_keys=True) in records.py, without its
# per-call setup: one C encoder, reused (no circular-reference check: decoded JSON has no cycles).
_C_ENCODER = (
    json.encoder.c_make_encoder(None, None, json.encoder.encode_basestring, None, ": ", ", ", True, False, True)
    if json.encoder.c_make_encoder is not None else None
)


_JSON_DECODER = msgspec.json.Decoder()  # untyped: envelopes of odd pages, raw JSON fields


def _JSON_ENCODE(value: Any) -> str:  # noqa: N802 - a drop-in for the encoder function it replaces
    if _C_ENCODER is None or isinstance(value, str):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "".join(_C_ENCODER(value, 0))


def staging_path(location: str | os.PathLike[str] | ObjectStoragePath) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` for a URL (``file://``, ``s3://``, ...) or a local folder."""
    if isinstance(location, ObjectStoragePath):
        return location
    text = os.fspath(location)
    if "://" not in text:
        text = "file://" + os.path.abspath(text)
    return ObjectStoragePath(text)


# ---------------------------------------------------------------------------------------------
# Page decoding
# ---------------------------------------------------------------------------------------------


@dataclass
class DecodedPage:
    """One page as a typed table (valid records) plus rejects; ``received`` counts both."""

    table: pa.Table
    rejects: list[Reject]
    received: int
    fast: bool


@dataclass
class ParsedPage:
    """A body that decoded cleanly: typed rows (columnar candidate) or plain records, and their ids."""

    body: bytes
    rows: list[Any] | None
    records: list[Any] | None
    ids: list[str | None]  # for continuity checks; ``finish`` decides what is staged or rejected
    received: int


def _record_id(record: Any) -> str | None:
    if isinstance(record, dict):
        value = record.get("sourcedId")
        if value not in (None, ""):
            return str(value)
    return None


class _Ref(msgspec.Struct, gc=False):
    sourcedId: str | None = None


_STRUCT_TYPES: dict[str, Any] = {
    "str": str | None,
    "ref": _Ref | None,
    "float": float | None,
    "datetime": str | None,
    "date": str | None,
    "flag": str | bool | None,
    # kept as raw bytes until ``finish``: decoded objects would be garbage-collector-tracked dicts
    # living as long as a page waits in the queue, which made full collections frequent and slow
    "json": msgspec.Raw,
}


class PageDecoder:
    """Callable ``bytes → DecodedPage`` for one entity and version; raises ``RetryableError`` on a bad body."""

    def __init__(self, entity: Entity, api_version: str):
        self.entity = entity
        self.api_version = api_version
        self.fields = entity.fields_for(api_version)
        self.schema = arrow_schema(entity, api_version)
        columns = [f.column for f in self.fields]
        row = msgspec.defstruct(
            f"{entity.collection}Row",
            [(f.column, _STRUCT_TYPES[f.kind], msgspec.Raw() if f.kind == "json" else None) for f in self.fields],
            rename={f.column: f.source for f in self.fields},
            gc=False,
        )
        envelope = msgspec.defstruct(f"{entity.collection}Page", [(entity.collection, list[row])])
        self._typed = msgspec.json.Decoder(envelope)
        self._getters = [operator.attrgetter(c) for c in columns]
        self.fast_pages = 0
        self.slow_pages = 0

    def parse(self, body: bytes) -> ParsedPage:
        """Check and decode a body; ``RetryableError`` when it must be fetched again (cheap part).

        Runs in the fetching thread, inside the retry loop, so a truncated or non-JSON page is
        fetched again and never half-parsed; the heavier ``finish`` runs where pages are consumed.
        """
        collection = self.entity.collection
        try:
            page = self._typed.decode(body)
        except msgspec.ValidationError:
            page = None
        except msgspec.DecodeError:
            raise RetryableError("truncated or invalid JSON body", kind="bad_body") from None
        if page is not None:
            rows = getattr(page, collection)
            ids = [r.sourced_id for r in rows]
            return ParsedPage(body, rows, None, ids, len(rows))
        records = envelope_records(body, collection, _JSON_DECODER)
        ids = [_record_id(r) for r in records]
        return ParsedPage(body, None, records, ids, len(records))

    def finish(self, parsed: ParsedPage) -> DecodedPage:
        """The typed table and rejects of a parsed page (columnar route, else the exact one)."""
        if parsed.rows is not None:
            table = self._columnar(parsed.rows)
            if table is not None:
                self.fast_pages += 1
                return DecodedPage(table, [], parsed.received, True)
            records = _JSON_DECODER.decode(parsed.body)[self.entity.collection]
        else:
            records = parsed.records
        self.slow_pages += 1
        table, rejects = flatten_records(self.entity, self.api_version, records)
        return DecodedPage(table, rejects, parsed.received, False)

    def __call__(self, body: bytes) -> DecodedPage:
        return self.finish(self.parse(body))

    def _columnar(self, rows: list[Any]) -> pa.Table | None:
        """The typed table, or ``None`` when any value needs the exact per-record route."""
        if not rows:
            return self.schema.empty_table()
        columns = [list(map(get, rows)) for get in self._getters]  # no per-row tuples to allocate
        arrays = []
        try:
            for f, column in zip(self.fields, columns, strict=True):
                array = _convert_column(f, column)
                if array is None:
                    return None
                if f.required and array.null_count:
                    return None
                arrays.append(array)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError, TypeError):
            return None
        return pa.Table.from_arrays(arrays, schema=self.schema)


def _blank_to_null(array: pa.Array) -> pa.Array:
    empty = pc.equal(array, "")
    if pc.any(empty).as_py():
        return pc.if_else(empty, pa.scalar(None, pa.string()), array)
    return array


def _convert_column(f: Field, column: Iterable[Any]) -> pa.Array | None:
    kind = f.kind
    if kind == "str":
        return _blank_to_null(pa.array(column, pa.string()))
    if kind == "ref":
        return _blank_to_null(pa.array([None if r is None else r.sourcedId for r in column], pa.string()))
    if kind == "float":
        return pa.array(column, pa.float64())
    if kind == "flag":
        try:
            return pa.array([_FLAGS[v] for v in column], pa.bool_())
        except (KeyError, TypeError):
            return None
    if kind == "json":
        values = [_JSON_DECODER.decode(raw) if raw else None for raw in column]
        return pa.array([None if v is None or v == "" else _JSON_ENCODE(v) for v in values], pa.string())
    text = _blank_to_null(pa.array(column, pa.string()))
    if kind == "datetime":
        if text.null_count < len(text) and not pc.all(pc.match_substring_regex(text, _DATETIME_RE)).as_py():
            return None
        return text.cast(pa.timestamp("us", tz="UTC"))
    if kind == "date":
        if text.null_count < len(text) and not pc.all(pc.match_substring_regex(text, _DATE_RE)).as_py():
            return None
        return pc.utf8_slice_codeunits(text, 0, 10).cast(pa.date32())
    raise AssertionError(kind)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


# zstd level 1 without dictionaries: the smallest files here at about snappy's speed (dictionary
# encoding of high-cardinality ids was the slowest part of writing a results part).
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 1, "use_dictionary": False}


def write_parquet(table: pa.Table, target: ObjectStoragePath) -> None:
    """Encode in memory, then one write: Parquet's many small writes are slow through fsspec files."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    with target.open("wb") as handle:
        handle.write(memoryview(sink.getvalue()))  # no copy into a bytes object


def _write_part(tables: list[pa.Table], target: ObjectStoragePath) -> None:
    write_parquet(pa.concat_tables(tables).combine_chunks(), target)


class PartWriter:
    """Buffers typed rows and writes a Parquet part every ``chunk_rows`` rows; rejects to one file.

    A full chunk is encoded and written by a background thread while the next one fills, so the
    pages arriving meanwhile are not held up (a 100,000-row part takes a good part of a second).
    Memory is bounded by two chunks (plus one row group of rejects), not by the entity's size.
    ``close`` (or ``abort``) waits for that thread; a failed write is raised when the next part is
    handed over, or by ``close``.
    """

    def __init__(self, directory: ObjectStoragePath, schema: pa.Schema, chunk_rows: int, *, prefix: str = "part"):
        self.directory = directory
        self.schema = schema
        self.chunk_rows = max(1, chunk_rows)
        self.prefix = prefix
        self.files: list[str] = []
        self.rows_written = 0
        self.rejects_written = 0
        self.rejects_file: str | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._rejects: list[Reject] = []
        self._rejects_writer: pq.ParquetWriter | None = None
        self._rejects_handle: Any = None
        self._next_part = 0
        self._pending: Future[None] | None = None
        self._background: ThreadPoolExecutor | None = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._buffer.append(table)
        self._buffered += table.num_rows
        if self._buffered >= self.chunk_rows:
            self._flush()

    def write_rejects(self, rejects: list[Reject]) -> None:
        self._rejects.extend(rejects)
        if len(self._rejects) >= 10_000:
            self._flush_rejects()

    def _flush(self) -> None:
        if not self._buffer:
            return
        tables, rows = self._buffer, self._buffered
        self._buffer, self._buffered = [], 0
        target = self.directory / f"{self.prefix}-{self._next_part:05d}.parquet"
        self._next_part += 1
        self._wait()  # one part in the writer at a time: memory stays at two chunks
        if self._background is None:
            self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="staging-writer")
        self._pending = self._background.submit(_write_part, tables, target)
        self.files.append(str(target))
        self.rows_written += rows

    def _wait(self) -> None:
        """Let the part being written finish; raises what its write raised."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _stop_background(self) -> None:
        if self._background is not None:
            self._background.shutdown(wait=True)
            self._background = None

    def _flush_rejects(self) -> None:
        if not self._rejects:
            return
        if self._rejects_writer is None:
            target = self.directory / "rejects.parquet"
            self._rejects_handle = target.open("wb")
            self._rejects_writer = pq.ParquetWriter(self._rejects_handle, REJECT_SCHEMA)
            self.rejects_file = str(target)
        self._rejects_writer.write_table(rejects_table(self._rejects))
        self.rejects_written += len(self._rejects)
        self._rejects = []

    def close(self) -> None:
        """Write what is buffered; after this ``files`` and ``rejects_file`` are complete."""
        self._flush()
        self._wait()
        self._stop_background()
        self._flush_rejects()
        if self._rejects_writer is not None:
            self._rejects_writer.close()
            self._rejects_handle.close()
            self._rejects_writer = None

    def replace(self, ids: set[str], table: pa.Table, rejects: list[Reject]) -> int:
        """After ``close``: drop rows and rejects whose sourcedId is in ``ids``, then add ``table``/``rejects``.

        Used to apply newer copies of records that changed while the entity was being read. Reads
        only the ``sourced_id`` column of parts that need no change; returns the rows dropped.
        """
        dropped = 0
        if ids:
            wanted = pa.array(sorted(ids), pa.string())
            for name in list(self.files):
                path = staging_path(name)
                with path.open("rb") as handle:
                    hit = pc.is_in(pq.read_table(handle, columns=["sourced_id"]).column("sourced_id"), wanted)
                n_hit = pc.sum(hit).as_py() or 0
                if not n_hit:
                    continue
                with path.open("rb") as handle:
                    full = pq.read_table(handle, schema=self.schema)
                kept = full.filter(pc.invert(pc.is_in(full.column("sourced_id"), wanted)))
                dropped += full.num_rows - kept.num_rows
                self.rows_written -= full.num_rows - kept.num_rows
                if kept.num_rows:
                    write_parquet(kept, path)
                else:
                    path.unlink()
                    self.files.remove(name)
        self.write(table)  # written by close() below, with the merged rejects
        old_rejects: list[Reject] = []
        if self.rejects_file is not None:
            path = staging_path(self.rejects_file)
            with path.open("rb") as handle:
                rows = pq.read_table(handle).to_pylist()
            old_rejects = [Reject(**row) for row in rows if row["sourced_id"] is None or row["sourced_id"] not in ids]
            path.unlink()
            self.rejects_file, self.rejects_written = None, 0
        merged = old_rejects + list(rejects)
        if merged:
            self._rejects = merged
        self.close()
        return dropped

    def abort(self) -> None:
        """Drop buffers and close handles without writing (the directory is cleared by the caller)."""
        self._buffer, self._rejects = [], []
        try:
            self._wait()
        except Exception:  # noqa: BLE001 - best effort while already failing
            pass
        self._stop_background()
        if self._rejects_writer is not None:
            try:
                self._rejects_writer.close()
                self._rejects_handle.close()
            except Exception:  # noqa: BLE001 - best effort while already failing
                pass
            self._rejects_writer = None


def clear_directory(directory: ObjectStoragePath) -> None:
    """Empty (or create) a staging directory so a rerun never mixes files of two attempts."""
    if directory.exists():
        for child in list(directory.iterdir()):
            if child.is_dir():
                child.rmdir(recursive=True)
            else:
                child.unlink()
    directory.mkdir(parents=True, exist_ok=True)


def write_json(target: ObjectStoragePath, data: dict[str, Any]) -> str:
    with target.open("wb") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True, default=str).encode())
    return str(target)


# ---------------------------------------------------------------------------------------------
# Retention
# ---------------------------------------------------------------------------------------------


def _modified(info: dict[str, Any]) -> datetime | None:
    """Last-modified time from an fsspec ``info`` dict (keys differ per filesystem)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created", "creation_time"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(float(value), timezone.utc)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def cleanup_staging(
    root: str | os.PathLike[str] | ObjectStoragePath,
    retention: timedelta,
    now: datetime | None = None,
    *,
    run_depth: int = 1,
) -> list[str]:
    """Delete run folders whose files are all older than ``retention``; returns what was removed.

    Run folders sit ``run_depth`` levels below ``root``: 1 for ``<staging>/<dag_id>`` (the pipeline's
    ``<staging>/<dag_id>/<run>/...`` layout), 2 for the staging root itself. A run folder is removed
    whole or not at all, and only when *every* file in it was last modified before
    ``now - retention``: a run that is still writing, or finished recently, keeps all its files.
    Files without a known modification time keep their run. Works on any fsspec store.
    """
    if run_depth < 1:
        raise ValueError("run_depth must be at least 1")
    base = staging_path(root)
    now = now or datetime.now(timezone.utc)
    cutoff = now - retention
    if not base.exists():
        return []
    fs = base.fs
    root_key = base.path.rstrip("/")
    newest: dict[str, datetime | None] = {}
    for path, info in fs.find(root_key, withdirs=False, detail=True).items():
        parts = path[len(root_key):].strip("/").split("/")
        if len(parts) <= run_depth:
            continue  # a file above the run level is not part of any run
        run = "/".join(parts[:run_depth])
        stamp = _modified(info)
        current = newest.get(run, datetime.min.replace(tzinfo=timezone.utc))
        newest[run] = None if stamp is None or current is None else max(current, stamp)
    removed = []
    for run, stamp in sorted(newest.items()):
        if stamp is not None and stamp < cutoff:
            fs.rm(f"{root_key}/{run}", recursive=True)
            removed.append(str(base / run))
    if removed:
        log.info("Removed %d staging run folder(s) older than %s under %s", len(removed), retention, base)
    return removed
