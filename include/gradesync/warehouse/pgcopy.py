"""Arrow record batches → PostgreSQL binary COPY data, vectorised.

The server parses binary COPY about twice as fast as CSV (no text-to-number/timestamp parsing,
no quoting), and the COPY is what bounds a bulk load. Each column becomes an Arrow binary array
of complete field encodings (4-byte big-endian length, then the value in the type's binary
send format, or length -1 for NULL); ``binary_join_element_wise`` then concatenates them into
tuples in C++, and the joined array's data buffer is the COPY payload. Nothing loops per row.

Supported column types (what the staging format produces): text and jsonb (from strings),
bigint, double precision, boolean, date, timestamptz; any of them also dictionary-encoded, in
which case each distinct value is encoded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
_NULL = pa.scalar(b"\xff\xff\xff\xff", pa.binary())
_EPOCH_US = 946_684_800_000_000  # 2000-01-01, the PostgreSQL epoch, in Unix microseconds
_EPOCH_DAYS = 10_957

PG_TYPES = ("text", "jsonb", "int8", "float8", "bool", "date", "timestamptz")


def _prefixed_fixed(values: np.ndarray, width: int) -> pa.Array:
    """Big-endian fixed-width values (``values`` already of the right '>' dtype) with length prefix."""
    n = len(values)
    out = np.empty((n, 4 + width), dtype=np.uint8)
    out[:, :4] = np.frombuffer(np.array([width], dtype=">i4").tobytes(), dtype=np.uint8)
    out[:, 4:] = np.ascontiguousarray(values).view(np.uint8).reshape(n, width)
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 + width), n, [None, pa.py_buffer(out)])
    return fixed.cast(pa.binary())


def _with_nulls(field: pa.Array, source: pa.Array) -> pa.Array:
    if source.null_count == 0:
        return field
    return pc.if_else(source.is_null(), _NULL, field)


def _text_fields(arr: pa.Array, jsonb: bool) -> pa.Array:
    values = arr.cast(pa.binary())
    lengths = pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False).astype(">i4")
    if jsonb:  # jsonb's binary format: a version byte, then the JSON text
        lengths = (lengths + 1).astype(">i4")
    prefix = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(4), len(arr), [None, pa.py_buffer(np.ascontiguousarray(lengths).view(np.uint8))]).cast(pa.binary())
    parts = [prefix, pa.scalar(b"\x01", pa.binary()), values] if jsonb else [prefix, values]
    return _with_nulls(pc.binary_join_element_wise(*parts, b""), arr)


def _field(arr: pa.Array, pg_type: str) -> pa.Array:
    t = arr.type
    if pa.types.is_dictionary(t):  # encode each distinct value once (constants are 1-value dictionaries)
        fields = _field(arr.dictionary, pg_type)
        taken = fields.take(arr.indices.fill_null(0)) if len(fields) else pa.array([b""] * len(arr), pa.binary())
        return _with_nulls(taken, arr)
    if pg_type in ("text", "jsonb"):
        return _text_fields(arr, pg_type == "jsonb")
    if pg_type == "int8":
        values = arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).astype(">i8")
        return _with_nulls(_prefixed_fixed(values, 8), arr)
    if pg_type == "float8":
        values = arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False).astype(">f8")
        return _with_nulls(_prefixed_fixed(values, 8), arr)
    if pg_type == "bool":
        values = arr.fill_null(False).cast(pa.uint8()).to_numpy(zero_copy_only=False).astype(np.uint8)
        return _with_nulls(_prefixed_fixed(values, 1), arr)
    if pg_type == "date":
        days = arr.cast(pa.int32()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) - _EPOCH_DAYS
        return _with_nulls(_prefixed_fixed(days.astype(">i4"), 4), arr)
    if pg_type == "timestamptz":
        if not pa.types.is_timestamp(t):
            raise TypeError(f"timestamptz needs an Arrow timestamp, got {t}")
        micros = arr.cast(pa.timestamp("us", tz=t.tz)).cast(pa.int64()).fill_null(0).to_numpy(
            zero_copy_only=False) - _EPOCH_US  # Arrow timestamps with a zone are stored as UTC
        return _with_nulls(_prefixed_fixed(micros.astype(">i8"), 8), arr)
    raise TypeError(f"no binary COPY encoding for {pg_type}")


def encode_batch(batch: pa.RecordBatch, pg_types: Sequence[str]) -> memoryview:
    """The tuples of ``batch`` in binary COPY format (without header and trailer)."""
    if len(pg_types) != batch.num_columns:
        raise ValueError("one PostgreSQL type per column is needed")
    n = batch.num_rows
    if n == 0:
        return memoryview(b"")
    count = pa.scalar(np.array([batch.num_columns], dtype=">i2").tobytes(), pa.binary())
    fields = [_field(batch.column(i), pg_types[i]) for i in range(batch.num_columns)]
    rows = pc.binary_join_element_wise(count, *fields, b"")
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=len(rows) + 1, offset=rows.offset * 4)
    data = rows.buffers()[2]
    return memoryview(data)[offsets[0]:offsets[-1]]
