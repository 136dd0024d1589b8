"""Binary COPY encoding, checked byte by byte against the PostgreSQL send formats."""

from __future__ import annotations

import struct
from datetime import date, datetime, timezone

import pyarrow as pa
import pytest

from gradesync.warehouse.pgcopy import HEADER, TRAILER, encode_batch


def _field(payload: bytes | None) -> bytes:
    return b"\xff\xff\xff\xff" if payload is None else struct.pack(">i", len(payload)) + payload


def test_every_type_and_null() -> None:
    ts = datetime(2000, 1, 2, 0, 0, 1, 5, tzinfo=timezone.utc)
    batch = pa.RecordBatch.from_arrays([
        pa.array(["é\n\"x\"", None, ""]),
        pa.array(['{"a": 1}', None, "[]"]).dictionary_encode(),
        pa.array([1, None, -2], pa.int64()),
        pa.array([1.5, None, -0.0]),
        pa.array([True, None, False]),
        pa.array([date(2000, 1, 1), None, date(1999, 12, 31)]),
        pa.array([ts, None, datetime(1970, 1, 1, tzinfo=timezone.utc)], pa.timestamp("us", tz="UTC")),
    ], names=list("abcdefg"))
    got = bytes(encode_batch(batch, ["text", "jsonb", "int8", "float8", "bool", "date", "timestamptz"]))
    micros = (24 * 3600 + 1) * 10**6 + 5
    expected = (
        b"\x00\x07" + _field("é\n\"x\"".encode()) + _field(b'\x01{"a": 1}') + _field(struct.pack(">q", 1))
        + _field(struct.pack(">d", 1.5)) + _field(b"\x01") + _field(struct.pack(">i", 0))
        + _field(struct.pack(">q", micros))
        + b"\x00\x07" + _field(None) * 7
        + b"\x00\x07" + _field(b"") + _field(b"\x01[]") + _field(struct.pack(">q", -2))
        + _field(struct.pack(">d", -0.0)) + _field(b"\x00") + _field(struct.pack(">i", -1))
        + _field(struct.pack(">q", -946_684_800 * 10**6))
    )
    assert got == expected
    assert HEADER.startswith(b"PGCOPY\n\xff\r\n\x00") and TRAILER == b"\xff\xff"


def test_sliced_batches_and_mismatched_types() -> None:
    batch = pa.RecordBatch.from_arrays([pa.array(["a", "bb", "ccc"])], names=["s"]).slice(1)
    assert bytes(encode_batch(batch, ["text"])) == b"\x00\x01" + _field(b"bb") + b"\x00\x01" + _field(b"ccc")
    assert bytes(encode_batch(batch.slice(0, 0), ["text"])) == b""
    with pytest.raises(ValueError):
        encode_batch(batch, ["text", "int8"])
    with pytest.raises(TypeError):
        encode_batch(pa.RecordBatch.from_arrays([pa.array([1])], names=["x"]), ["timestamptz"])


def test_dictionary_encoded_columns_encode_like_plain_ones() -> None:
    ts = pa.array([datetime(2026, 9, 1, tzinfo=timezone.utc)], pa.timestamp("us", tz="UTC"))
    const = pa.DictionaryArray.from_arrays(pa.array([0, 0, None], pa.int32()), ts)
    plain = pa.array([ts[0].as_py(), ts[0].as_py(), None], ts.type)
    enc = [bytes(encode_batch(pa.RecordBatch.from_arrays([a], names=["t"]), ["timestamptz"])) for a in (const, plain)]
    assert enc[0] == enc[1]
