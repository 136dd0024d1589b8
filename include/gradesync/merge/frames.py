"""Canonical pandas dtypes for staging frames, and vectorised coercion into them.

The merge receives frames from Parquet staging (``Table.to_pandas()``), from vendor tables and from
tests; the same column can arrive as ``object`` dates, numpy ``bool`` or text. Coercing every input
to one dtype per entity kind keeps the merged output stable in dtype whatever the input looked like,
and turns values that cannot be typed into reject reasons instead of exceptions.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from gradesync.entities import Entity

STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas 3's default "str"
DATETIME_DTYPE = pd.DatetimeTZDtype("us", "UTC")
DATE_DTYPE = pd.ArrowDtype(pa.date32())  # matches the staging schema's date32 exactly
FLAG_DTYPE = pd.BooleanDtype()
FLOAT_DTYPE = np.dtype("float64")

KIND_DTYPES: dict[str, Any] = {
    "str": STR_DTYPE,
    "ref": STR_DTYPE,
    "json": STR_DTYPE,
    "float": FLOAT_DTYPE,
    "datetime": DATETIME_DTYPE,
    "date": DATE_DTYPE,
    "flag": FLAG_DTYPE,
}


def canonical_dtypes(entity: Entity, api_version: str) -> dict[str, Any]:
    """Column → dtype of merged output for ``entity`` in ``api_version`` layout."""
    return {f.column: KIND_DTYPES[f.kind] for f in entity.fields_for(api_version)}


def empty_column(kind: str, n: int) -> pd.Series:
    """``n`` missing values of the canonical dtype for ``kind``."""
    dtype = KIND_DTYPES[kind]
    if kind == "float":
        return pd.Series(np.full(n, np.nan))
    return pd.Series(pd.array([None] * n, dtype=dtype)) if n else pd.Series([], dtype=dtype)


def _quote(text: pd.Series) -> pd.Series:
    return "'" + text.astype(STR_DTYPE).str.slice(0, 80) + "'"


def coerce(series: pd.Series, kind: str, label: str) -> tuple[pd.Series, np.ndarray, pd.Series | None]:
    """Coerce ``series`` to the canonical dtype of ``kind``.

    Returns ``(typed, invalid, reasons)``: ``invalid`` marks values present but not typeable (they
    become missing in ``typed``), ``reasons`` holds a message per invalid row (None when none are).
    Empty strings count as missing, as in ``records.flatten_record``.
    """
    series = series.reset_index(drop=True)
    n = len(series)
    no_invalid = np.zeros(n, dtype=bool)
    if kind in ("str", "ref", "json"):
        if kind == "json" and series.dtype == object:
            series = series.map(
                lambda v: (
                    json.dumps(v, ensure_ascii=False, sort_keys=True) if isinstance(v, dict | list) else v
                )
            )
        typed = series if series.dtype == STR_DTYPE else series.astype(STR_DTYPE)
        empty = pc.equal(pa.array(typed.array), "")
        if pc.any(empty).as_py():
            typed = typed.mask(empty.to_numpy(zero_copy_only=False).astype(bool))
        return typed, no_invalid, None
    if kind == "float":
        if pd.api.types.is_float_dtype(series.dtype) and not isinstance(series.dtype, pd.ArrowDtype):
            return series.astype(FLOAT_DTYPE), no_invalid, None
        if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
            return series.astype("Float64").astype(FLOAT_DTYPE), no_invalid, None
        text = series.astype(STR_DTYPE).str.strip()
        text = text.mask(text == "")
        # str() of a Python float is its shortest round-trip form, so numbers in object columns stay exact
        typed = pd.to_numeric(text, errors="coerce").astype(FLOAT_DTYPE)
        invalid = (text.notna() & typed.isna()).to_numpy()
        reasons = None
        if invalid.any():
            reasons = f"invalid value: {label} must be a number, got " + _quote(text)
        return typed, invalid, reasons
    if kind == "datetime":
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            return series.dt.tz_convert("UTC").astype(DATETIME_DTYPE), no_invalid, None
        if pd.api.types.is_datetime64_dtype(series.dtype):
            return series.dt.tz_localize("UTC").astype(DATETIME_DTYPE), no_invalid, None
        if isinstance(series.dtype, pd.ArrowDtype) and pa.types.is_timestamp(series.dtype.pyarrow_dtype):
            as_pandas = series.astype(f"datetime64[us{', UTC' if series.dtype.pyarrow_dtype.tz else ''}]")
            return coerce(as_pandas, kind, label)
        text = series.astype(STR_DTYPE).str.strip()
        text = text.mask(text == "")
        typed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601").astype(DATETIME_DTYPE)
        invalid = (text.notna() & typed.isna()).to_numpy()
        reasons = None
        if invalid.any():
            reasons = f"invalid value: {label} must be an ISO 8601 date-time, got " + _quote(text)
        return typed, invalid, reasons
    if kind == "date":
        if series.dtype == DATE_DTYPE:
            return series, no_invalid, None
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            days = series.dt.tz_localize(None) if isinstance(series.dtype, pd.DatetimeTZDtype) else series
            arr = pa.array(days.to_numpy(dtype="datetime64[D]"), type=pa.date32(), from_pandas=True)
            return pd.Series(pd.arrays.ArrowExtensionArray(arr)), no_invalid, None
        if series.dtype == object:
            try:  # datetime.date objects (what to_pandas() gives for date32): converted in C
                arr = pa.array(series.to_numpy(), type=pa.date32(), from_pandas=True)
                return pd.Series(pd.arrays.ArrowExtensionArray(arr)), no_invalid, None
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
                pass
        text = series.astype(STR_DTYPE).str.strip()
        text = text.mask(text == "")
        parsed = pd.to_datetime(text.str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
        arr = pa.array(parsed.to_numpy(dtype="datetime64[D]"), type=pa.date32(), from_pandas=True)
        typed = pd.Series(pd.arrays.ArrowExtensionArray(arr))
        invalid = (text.notna() & parsed.isna()).to_numpy()
        reasons = None
        if invalid.any():
            reasons = f"invalid value: {label} must be an ISO 8601 date, got " + _quote(text)
        return typed, invalid, reasons
    if kind == "flag":
        if series.dtype == FLAG_DTYPE:
            return series, no_invalid, None
        if pd.api.types.is_bool_dtype(series.dtype):
            return series.astype(FLAG_DTYPE), no_invalid, None
        if series.dtype == object:
            try:  # True/False/None objects (what to_pandas() gives for a bool column with nulls)
                return pd.Series(pd.array(series.to_numpy(), dtype=FLAG_DTYPE)), no_invalid, None
            except (TypeError, ValueError):
                pass
        text = series.astype(STR_DTYPE).str.strip().str.lower()
        text = text.mask(text == "")
        typed = text.map({"true": True, "false": False}).astype(FLAG_DTYPE)
        invalid = (text.notna() & typed.isna()).to_numpy()
        reasons = None
        if invalid.any():
            reasons = f'invalid value: {label} must be "true" or "false", got ' + _quote(text)
        return typed, invalid, reasons
    raise AssertionError(kind)  # pragma: no cover


def normalise_text(values: pd.Series) -> pd.Series:
    """Natural-key form of text: case-folded, trimmed, inner whitespace collapsed to one space."""
    text = values.astype(STR_DTYPE)
    arr = pa.chunked_array(text.array._pa_array) if hasattr(text.array, "_pa_array") else pa.array(text)
    arr = pc.utf8_trim_whitespace(pc.replace_substring_regex(arr, r"\s+", " "))
    return pd.Series(pd.array(arr, dtype=STR_DTYPE), index=values.index).str.casefold()


def json_lines(frame: pd.DataFrame) -> np.ndarray:
    """One JSON object per row (object array of str), serialised in C by ``to_json``."""
    if len(frame) == 0:
        return np.array([], dtype=object)
    text = frame.to_json(
        orient="records",
        lines=True,
        date_format="iso",
        date_unit="us",
        double_precision=15,
        default_handler=str,
    )
    # to_json escapes newlines inside values, so a line is exactly one record
    return np.array(text.rstrip("\n").split("\n"), dtype=object)
