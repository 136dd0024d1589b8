"""Dedupe and merge of one entity's IC and vendor records, vectorised end to end.

How a run flows through ``merge_entity`` (each side separately, then together):

1. mappings that apply to the side (rename, map_values), then coercion to canonical dtypes; values that
   cannot be typed become reject reasons, never exceptions;
2. vendor references rewritten through ``parent_id_maps`` (a vendor line item merged into an IC line
   item by natural key keeps the IC id, so the vendor's results must point there too);
3. scale, score_scale and default mappings, then the required-field check;
4. within-source dedupe: per sourced_id the newest dateLastModified wins; a tie goes to the smaller
   content hash of the record as received, so the survivor does not depend on page order. Dedupe
   comes before the validity verdict: the newest copy decides, even when it is the invalid one;
5. invalid survivors are rejected, and so is a valid record whose same-id record on the other side
   was rejected (alone it would overwrite every field the other side masters);
6. match by sourced_id, then by each natural key in order; a key value shared by more than one record
   on either side, with records on both sides, is ambiguous and all those records are rejected;
7. per column, the master source's value (``ic``, ``vendor`` or ``newest`` by dateLastModified, ties to
   IC); with ``fill_nulls`` a missing master value is taken from the other side;
8. references checked against ``known_parents``; a merged record pointing at an unknown parent is
   rejected (with each raw record that formed it).

No step loops over rows in Python: rows are addressed by integer positions, keys by factorized codes,
and each output column is gathered once from the two inputs, so memory stays near the output size.
(Two exceptions touch only odd rows: joining the reasons of a record with several problems, and
JSON-encoding dict values found in an object-typed metadata column.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from gradesync.entities import Entity, Field
from gradesync.merge.frames import STR_DTYPE, coerce, empty_column, json_lines, normalise_text
from gradesync.merge.rules import (
    DefaultMapping,
    EntityMergeRules,
    RenameMapping,
    ScaleMapping,
    ScoreScaleMapping,
    ValueMapping,
)

REJECT_COLUMNS = ["entity", "sourced_id", "reason", "raw", "run_id", "source"]
RECORD_SOURCES = ["ic", "vendor", "both"]
COUNT_KEYS = (
    "ic_in",
    "vendor_in",
    "duplicates_ic",
    "duplicates_vendor",
    "matched_by_sourced_id",
    "matched_by_natural_key",
    "merged_out",
    "rejected",
    "rejected_ic",
    "rejected_vendor",
)
_I64_MAX = np.iinfo(np.int64).max
_GATHER_THREADS = max(1, min(4, os.cpu_count() or 1))


@dataclass
class MergeOutcome:
    """Result of merging one entity.

    - ``merged``: entity columns (layout of the API version) sorted by sourced_id, plus
      ``field_sources`` (JSON text per row: column → ``"ic"``/``"vendor"``, the side whose value is in
      the record; ``_match`` says how the sides were paired, ``_vendor_sourced_id`` the vendor id merged
      away by a natural-key match, ``_rules`` the rules fingerprint) and ``record_source``
      (``ic``/``vendor``/``both``). Both are pandas Categoricals: lineage repeats a handful of patterns
      across millions of rows, and a categorical stores it at one code per row (Parquet keeps it
      dictionary-encoded; ``.astype(str)`` gives plain text).
    - ``rejects``: one row per rejected input record, columns ``REJECT_COLUMNS``; ``reason`` starts with
      a kind (``missing required field``, ``invalid value``, ``unmapped value``, ``ambiguous natural
      key``, ``unknown reference``, ``counterpart rejected``) followed by ``:`` and the detail.
    - ``counts``: ``COUNT_KEYS``; for each side, in = duplicates + rejected + records in ``merged``.
    - ``id_map``: vendor sourced_id → IC sourced_id for natural-key matches; pass it as
      ``parent_id_maps`` when merging the child entity.
    """

    merged: pd.DataFrame
    rejects: pd.DataFrame
    counts: dict[str, int]
    id_map: pd.Series = field(default_factory=lambda: pd.Series([], dtype=STR_DTYPE, name="ic_sourced_id"))

    @property
    def reject_rate(self) -> float:
        """Rejected input records over all input records (0 when there was no input)."""
        total = self.counts["ic_in"] + self.counts["vendor_in"]
        return self.counts["rejected"] / total if total else 0.0

    def rejects_by_kind(self) -> dict[str, int]:
        """Reject counts per reason kind, for the run report."""
        kinds = self.rejects["reason"].str.split(":", n=1).str[0]
        return {str(k): int(v) for k, v in kinds.value_counts().sort_index().items()}


class RejectRateExceeded(RuntimeError):
    """The run rejected a larger share of records than the integration allows."""


def check_reject_rate(
    outcomes: Mapping[str, MergeOutcome] | Iterable[MergeOutcome],
    threshold: float,
    *,
    staging_in: int = 0,
    staging_rejected: int = 0,
) -> float:
    """Fail the run when rejected / input across all entities exceeds ``threshold``; return the rate.

    ``staging_in``/``staging_rejected`` add records rejected before the merge (flattening), so the
    threshold covers everything the run received.
    """
    named = dict(outcomes) if isinstance(outcomes, Mapping) else {str(i): o for i, o in enumerate(outcomes)}
    total = staging_in + sum(o.counts["ic_in"] + o.counts["vendor_in"] for o in named.values())
    rejected = staging_rejected + sum(o.counts["rejected"] for o in named.values())
    rate = rejected / total if total else 0.0
    if rate > threshold:
        detail = ", ".join(
            f"{name} {o.counts['rejected']}/{o.counts['ic_in'] + o.counts['vendor_in']}"
            for name, o in named.items()
        )
        raise RejectRateExceeded(
            f"reject rate {rate:.2%} exceeds the threshold {threshold:.2%} ({rejected} of {total} records; {detail}); "
            "see the rejects table for reasons, or raise merge_rules.reject_rate_threshold"
        )
    return rate


# --- dedupe -------------------------------------------------------------------------------------


def _newest_first_key(dlm: pd.Series) -> np.ndarray:
    """Ascending sort key that puts the newest dateLastModified first and missing ones last."""
    values = dlm.to_numpy(dtype="datetime64[us]", na_value=np.datetime64("NaT")).view("int64")
    missing = dlm.isna().to_numpy()
    return np.where(missing, _I64_MAX, -np.where(missing, 0, values))


def _keep_newest(
    codes: np.ndarray, dlm_key: np.ndarray, eligible: np.ndarray, raw: pd.DataFrame
) -> np.ndarray:
    """Mask of rows to keep: per code among ``eligible`` rows, the newest; ties by content hash of ``raw``."""
    keep = eligible.copy()
    if not eligible.any():
        return keep
    counts = np.bincount(codes[eligible])
    dup = eligible & (counts[np.where(eligible, codes, 0)] > 1)
    pos = np.flatnonzero(dup)
    if pos.size == 0:
        return keep
    content = pd.util.hash_pandas_object(raw.iloc[pos], index=False).to_numpy()
    order = np.lexsort((content, dlm_key[pos], codes[pos]))
    ranked = pos[order]
    ranked_codes = codes[ranked]
    first = np.ones(ranked.size, dtype=bool)
    first[1:] = ranked_codes[1:] != ranked_codes[:-1]
    keep[ranked[~first]] = False
    return keep


def dedupe_within_source(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep one record per sourced_id: the newest dateLastModified (overlapping pages, retries).

    Ties on dateLastModified go to the record with the smaller content hash, so which copy survives
    does not depend on page order. Rows without a sourced_id are kept (nothing to dedupe them on).
    Survivors keep their index and input order. Returns ``(deduped, duplicates_removed)``.
    """
    if len(df) == 0:
        return df, 0
    positional = df.reset_index(drop=True)
    codes = pd.factorize(positional["sourced_id"])[0]
    dlm, _, _ = coerce(positional["date_last_modified"], "datetime", "date_last_modified")
    eligible = codes >= 0
    keep = _keep_newest(codes, _newest_first_key(dlm), eligible, positional) | ~eligible
    removed = int(len(df) - keep.sum())
    return (df if removed == 0 else df[keep]), removed


# --- preparing one side ---------------------------------------------------------------------------


class _Reasons:
    """Reject reasons collected per row position; several reasons for one row are joined with '; '."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.positions: list[np.ndarray] = []
        self.messages: list[np.ndarray] = []

    def add(self, mask: np.ndarray, message: str | pd.Series) -> None:
        pos = np.flatnonzero(mask)
        if pos.size == 0:
            return
        if isinstance(message, str):
            msgs = np.full(pos.size, message, dtype=object)
        else:
            msgs = message.to_numpy(dtype=object)[pos]
        self.positions.append(pos)
        self.messages.append(msgs)

    def joined(self) -> pd.Series:
        """Reason text indexed by position (only rows that have one), in position order."""
        if not self.positions:
            return pd.Series([], dtype=object, index=pd.Index([], dtype="int64"))
        pos = np.concatenate(self.positions)
        msgs = np.concatenate(self.messages)
        frame = pd.DataFrame({"pos": pos, "msg": msgs})
        if not frame["pos"].duplicated().any():
            return frame.set_index("pos")["msg"].sort_index()
        return frame.groupby("pos", sort=True)["msg"].agg("; ".join)


@dataclass
class _Side:
    name: str
    raw: pd.DataFrame  # as received, positional index
    frame: pd.DataFrame  # canonical layout columns, positional index
    reasons: _Reasons

    def __len__(self) -> int:
        return len(self.raw)


def _quoted(text: pd.Series) -> pd.Series:
    return "'" + text.astype(STR_DTYPE).str.slice(0, 80) + "'"


def _map_values(series: pd.Series, m: ValueMapping, reasons: _Reasons) -> pd.Series:
    text = series.astype(STR_DTYPE)
    present = text.notna().to_numpy()
    hit = text.isin(list(m.values)).to_numpy()
    mapped = text.map(m.values).to_numpy(dtype=object)
    original = series.to_numpy(dtype=object)
    if m.unmapped == "null":
        out = np.where(hit, mapped, None)
    else:
        out = np.where(hit, mapped, original)
        if m.unmapped == "reject":
            reasons.add(present & ~hit, f"unmapped value: {m.column} " + _quoted(text) + " has no mapping")
    return pd.Series(out, dtype=object)


def _prepare(
    name: str,
    df: pd.DataFrame | None,
    layout: list[Field],
    rules: EntityMergeRules,
    parent_id_maps: Mapping[str, pd.Series] | None,
) -> _Side:
    """One side as canonical columns of ``layout``, with its mappings applied and its reject reasons."""
    raw = pd.DataFrame() if df is None else df.reset_index(drop=True)
    n = len(raw)
    reasons = _Reasons(n)
    mappings = [m for m in rules.mappings if m.applies_to(name)]
    work = raw
    for m in mappings:
        if isinstance(m, RenameMapping) and m.column in work.columns:
            work = work.drop(columns=[m.to], errors="ignore").rename(columns={m.column: m.to})
    if n == 0:
        work = pd.DataFrame(index=pd.RangeIndex(0))
    replaced: dict[str, pd.Series] = {}
    for m in mappings:
        if isinstance(m, ValueMapping) and m.column in work.columns:
            replaced[m.column] = _map_values(replaced.get(m.column, work[m.column]), m, reasons)
    by_column = {f.column: f for f in layout}
    defaulted = {m.column for m in mappings if isinstance(m, DefaultMapping)}
    missing = [
        f.column for f in layout if f.required and f.column not in work.columns and f.column not in defaulted
    ]
    if n and missing:
        raise ValueError(
            f"{name} frame lacks required column(s) {', '.join(missing)}; pass the staging layout, "
            "or add a rename mapping from the column the source uses"
        )
    columns: dict[str, pd.Series] = {}
    invalid_in: dict[str, np.ndarray] = {}  # values present but untypeable: already a reason, not "missing"
    for f in layout:
        if f.column in work.columns:
            typed, invalid, messages = coerce(replaced.get(f.column, work[f.column]), f.kind, f.column)
            if messages is not None:
                reasons.add(invalid, messages)
                invalid_in[f.column] = invalid
            columns[f.column] = typed
        else:
            columns[f.column] = empty_column(f.kind, n)
    if name == "vendor" and parent_id_maps:
        for column, id_map in parent_id_maps.items():
            if column not in columns or len(id_map) == 0:
                continue
            index = pd.Index(id_map.index.astype(STR_DTYPE))
            at = index.get_indexer(columns[column])
            if (at >= 0).any():
                targets = id_map.astype(STR_DTYPE).to_numpy(dtype=object)
                values = columns[column].to_numpy(dtype=object)
                columns[column] = pd.Series(np.where(at >= 0, targets[at], values), dtype=STR_DTYPE)
    for m in mappings:
        if isinstance(m, ScaleMapping) and m.column in columns:
            scaled = columns[m.column] * m.factor + m.offset
            columns[m.column] = scaled.round(m.round) if m.round is not None else scaled
    for m in mappings:
        if isinstance(m, ScoreScaleMapping) and m.column in columns and m.to in columns:
            table = {" ".join(k.split()).casefold(): v for k, v in m.scale.items()}
            text = columns[m.column]
            key = normalise_text(text)
            hit = key.isin(list(table)).to_numpy()
            target = columns[m.to]
            fill = hit if m.overwrite else hit & target.isna().to_numpy()
            if fill.any():
                looked_up = key.map(table).astype("float64").to_numpy()
                columns[m.to] = pd.Series(np.where(fill, looked_up, target.to_numpy()))
            if m.unmapped == "reject":
                reasons.add(
                    text.notna().to_numpy() & ~hit,
                    f"unmapped value: {m.column} " + _quoted(text) + " is not in the score scale",
                )
    for m in mappings:
        if isinstance(m, DefaultMapping) and m.column in columns:
            kind = by_column[m.column].kind
            value = (
                json.dumps(m.value, sort_keys=True)
                if kind == "json" and not isinstance(m.value, str)
                else m.value
            )
            constant = coerce(pd.Series([value], dtype=object), kind, m.column)[0]
            columns[m.column] = columns[m.column].fillna(constant.iloc[0])
    for f in layout:
        if f.required:
            missing_value = columns[f.column].isna().to_numpy()
            if f.column in invalid_in:
                missing_value = missing_value & ~invalid_in[f.column]
            reasons.add(missing_value, f"missing required field: {f.column}")
    frame = pd.DataFrame(columns, index=pd.RangeIndex(n), copy=False)
    return _Side(name, raw if n else pd.DataFrame(index=pd.RangeIndex(0)), frame, reasons)


# --- matching -----------------------------------------------------------------------------------


def _key_codes(factorized: tuple[np.ndarray, pd.Index], kind: str) -> np.ndarray:
    """Natural-key codes from a factorized column (-1 = missing); text compares normalised."""
    codes, uniques = factorized
    if kind in ("str", "ref") and len(uniques):
        norm = normalise_text(pd.Series(uniques))
        norm = norm.mask(norm == "")
        norm_codes, _ = pd.factorize(norm)
        codes = np.where(codes >= 0, norm_codes[np.maximum(codes, 0)], -1)
    return codes


def _natural_pass(
    key: list[str],
    kinds: Mapping[str, str],
    combined: _Combined,
    n_ic: int,
    ic_pool: np.ndarray,
    v_pool: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One natural key over the unmatched pools.

    Returns ``(ic_pos, v_pos, ic_ambiguous_pos, v_ambiguous_pos, ic_ambiguous_counts, v_ambiguous_counts)``
    where counts are ``(n_ic, n_vendor)`` rows per ambiguous record, for its reason.
    """
    total: np.ndarray | None = None
    for column in key:
        codes = _key_codes(combined.codes(column), kinds[column])
        codes = np.concatenate([codes[:n_ic][ic_pool], codes[n_ic:][v_pool]])
        if total is None:
            total = codes
        else:
            width = int(codes.max()) + 2
            joined = np.where((total >= 0) & (codes >= 0), total.astype(np.int64) * width + codes, -1)
            total = pd.factorize(joined, use_na_sentinel=False)[0]
            total = np.where(joined >= 0, total, -1)
    assert total is not None
    k_ic, k_v = total[: ic_pool.size], total[ic_pool.size :]
    size = int(total.max()) + 1 if total.size else 0
    count_ic = np.bincount(k_ic[k_ic >= 0], minlength=size)
    count_v = np.bincount(k_v[k_v >= 0], minlength=size)

    def classify(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        safe = np.maximum(k, 0)
        ni, nv = count_ic[safe], count_v[safe]
        both = (k >= 0) & (ni >= 1) & (nv >= 1)
        unique = both & (ni == 1) & (nv == 1)
        return unique, both & ~unique

    ic_unique, ic_amb = classify(k_ic)
    v_unique, v_amb = classify(k_v)
    owner = np.full(size, -1, dtype=np.int64)
    owner[k_ic[ic_unique]] = ic_pool[ic_unique]
    v_pos = v_pool[v_unique]
    ic_pos = owner[k_v[v_unique]]
    counts_ic = np.stack([count_ic[k_ic[ic_amb]], count_v[k_ic[ic_amb]]], axis=1)
    counts_v = np.stack([count_ic[k_v[v_amb]], count_v[k_v[v_amb]]], axis=1)
    return ic_pos, v_pos, ic_pool[ic_amb], v_pool[v_amb], counts_ic, counts_v


def _ambiguous_reason(key: list[str], counts: np.ndarray) -> pd.Series:
    ni = pd.Series(counts[:, 0]).astype(STR_DTYPE)
    nv = pd.Series(counts[:, 1]).astype(STR_DTYPE)
    return f"ambiguous natural key: ({', '.join(key)}) matches " + ni + " ic and " + nv + " vendor records"


# --- lineage ------------------------------------------------------------------------------------


def _lineage(
    columns: list[str],
    record_source: np.ndarray,
    match_kind: np.ndarray,
    paired_bits: np.ndarray,
    vendor_ids: np.ndarray,
    match_labels: list[str | None],
    fingerprint: str,
) -> pd.Categorical:
    """field_sources as a Categorical: one JSON text per distinct lineage pattern.

    A pattern is (how matched, which columns came from the vendor); single-source rows share two fixed
    patterns, paired rows have few. Rows matched by a natural key also carry the vendor's sourced_id,
    so each of them is its own category.
    """
    ncols = len(columns)
    all_vendor = (1 << ncols) - 1
    paired = np.flatnonzero(record_source == 2)
    paired_patterns = (match_kind[paired].astype(np.int64) << ncols) | paired_bits.astype(np.int64)
    found, inverse = np.unique(paired_patterns, return_inverse=True)
    patterns = [0, all_vendor, *(int(p) for p in found)]  # ic-only, vendor-only, then paired
    codes = np.where(record_source == 1, 1, 0).astype(np.int32)
    codes[paired] = 2 + inverse.reshape(-1)

    def head_body(p: int) -> tuple[str, str]:
        kind, mask = p >> ncols, p & all_vendor
        head = json.dumps({"_match": match_labels[kind], "_rules": fingerprint}, separators=(",", ":"))[:-1]
        sources = {c: ("vendor" if mask >> j & 1 else "ic") for j, c in enumerate(columns)}
        body = json.dumps(sources, sort_keys=True, separators=(",", ":"))[1:]
        return head, body

    parts = [head_body(p) for p in patterns]
    categories = pd.Series([f"{h},{b}" for h, b in parts], dtype=STR_DTYPE)
    natural = np.flatnonzero(match_kind >= 2)
    if natural.size:
        heads = pd.Series(np.array([h for h, _ in parts], dtype=object)[codes[natural]], dtype=STR_DTYPE)
        bodies = pd.Series(np.array([b for _, b in parts], dtype=object)[codes[natural]], dtype=STR_DTYPE)
        # {"_vendor_sourced_id":"..."} encoded by to_json, braces cut off
        encoded = pd.Series(
            json_lines(pd.DataFrame({"_vendor_sourced_id": vendor_ids[natural]})), dtype=STR_DTYPE
        )
        texts = heads + "," + encoded.str.slice(1, -1) + "," + bodies
        codes[natural] = len(categories) + np.arange(natural.size, dtype=np.int32)
        categories = pd.concat([categories, texts], ignore_index=True)
    used = np.zeros(len(categories), dtype=bool)
    used[codes] = True
    remap = (np.cumsum(used) - 1).astype(np.int32)
    return pd.Categorical.from_codes(remap[codes], categories=pd.Index(categories[used], dtype=STR_DTYPE))


# --- the merge ----------------------------------------------------------------------------------


def _layout(entity: Entity, api_version: str | None, present: set[str]) -> tuple[str, list[Field]]:
    if api_version is not None:
        if api_version not in entity.versions:
            raise ValueError(
                f"{entity.name} does not exist in OneRoster {api_version}; it is served by {entity.versions}"
            )
        return api_version, list(entity.fields_for(api_version))
    for version in entity.versions:
        fields = entity.fields_for(version)
        if present <= {f.column for f in fields}:
            return version, list(fields)
    version = entity.versions[-1]
    return version, list(entity.fields_for(version))


class _Combined:
    """Column ``c`` of the ic frame followed by the vendor frame (vendor rows at ``len(ic) + i``).

    Built on first use and kept for the call: Arrow columns concatenate without copying; numpy ones
    (floats, timestamps, flags) are small next to the text columns."""

    def __init__(self, ic: pd.DataFrame, vendor: pd.DataFrame) -> None:
        self.ic, self.vendor = ic, vendor
        self._cache: dict[str, pd.Series] = {}
        self._codes: dict[str, tuple[np.ndarray, pd.Index]] = {}

    def codes(self, column: str) -> tuple[np.ndarray, pd.Index]:
        """``pd.factorize`` of the column, computed once (natural keys and reference checks share it)."""
        if column not in self._codes:
            self._codes[column] = pd.factorize(self[column])
        return self._codes[column]

    def __getitem__(self, column: str) -> pd.Series:
        if column not in self._cache:
            if len(self.vendor) == 0:
                self._cache[column] = self.ic[column]
            elif len(self.ic) == 0:
                self._cache[column] = self.vendor[column]
            else:
                self._cache[column] = pd.concat([self.ic[column], self.vendor[column]], ignore_index=True)
        return self._cache[column]


def _rank_codes(values: pd.Series) -> np.ndarray:
    """Codes that are dense ranks of the value in sorted (code point) order; -1 for missing.

    Arrow ranks the text in one sort, without turning millions of ids into Python objects."""
    arr = pa.array(values.astype(STR_DTYPE).array)
    if len(arr) == 0:
        return np.array([], dtype=np.int64)
    ranks = pc.rank(arr, sort_keys="ascending", tiebreaker="dense").to_numpy().astype(np.int64) - 1
    missing = arr.is_null().to_numpy(zero_copy_only=False)
    return np.where(missing, -1, ranks)


def _is_in(values: pd.Index, known: pd.Index) -> np.ndarray:
    """Membership of text ``values`` in ``known``, in Arrow (no Python string objects)."""
    known = pd.Index(known)
    value_set = pa.array((known if known.dtype == STR_DTYPE else known.astype(STR_DTYPE)).array)
    if isinstance(value_set, pa.ChunkedArray):
        value_set = value_set.combine_chunks()
    found = pc.is_in(pa.array(pd.array(values, dtype=STR_DTYPE)), value_set=value_set.cast(pa.large_string()))
    return found.to_numpy(zero_copy_only=False).astype(bool)


def _take(column: pd.Series, index: np.ndarray) -> pd.Series:
    """Rows ``index`` of a combined (ic then vendor) column, as a new positional Series."""
    return pd.Series(column.array.take(index), copy=False)


class _RejectLog:
    """Rejected row positions and their reasons, per side (0 = ic, 1 = vendor)."""

    def __init__(self) -> None:
        self._pos: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        self._msgs: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])

    def add(self, side: int, pos: np.ndarray, msgs: np.ndarray | str) -> None:
        if pos.size == 0:
            return
        self._pos[side].append(pos)
        self._msgs[side].append(np.full(pos.size, msgs, dtype=object) if isinstance(msgs, str) else msgs)

    def positions(self, side: int) -> np.ndarray:
        return np.concatenate(self._pos[side]) if self._pos[side] else np.array([], dtype=np.int64)

    def messages(self, side: int) -> np.ndarray:
        return np.concatenate(self._msgs[side]) if self._msgs[side] else np.array([], dtype=object)


@dataclass
class _Rows:
    """Output rows as positions into the two sides (-1 = none) and how they were formed."""

    ic: np.ndarray
    vendor: np.ndarray
    source: np.ndarray  # 0 ic only, 1 vendor only, 2 both
    match: np.ndarray  # 0 unmatched, 1 sourced_id, 2 + k natural key k

    def select(self, which: np.ndarray) -> _Rows:
        return _Rows(self.ic[which], self.vendor[which], self.source[which], self.match[which])

    def primary(self, n_ic: int) -> np.ndarray:
        """Row in the combined columns that holds the record's sourced_id (IC's when there is one)."""
        return np.where(self.ic >= 0, self.ic, n_ic + self.vendor)


def _validate_and_dedupe(
    side: _Side, codes: np.ndarray, dlm_key: np.ndarray, log: _RejectLog, index: int
) -> tuple[np.ndarray, int]:
    """Dedupe one side, log its invalid survivors; returns (alive mask, duplicates removed).

    Dedupe runs before validity: the newest copy of a record decides, even when it is the invalid one.
    Rows without sourced_id or dateLastModified cannot be deduped and are rejected as they are.
    """
    identified = (codes >= 0) & side.frame["date_last_modified"].notna().to_numpy()
    keep = _keep_newest(codes, dlm_key, identified, side.raw)
    joined = side.reasons.joined()
    bad = np.zeros(len(side), dtype=bool)
    bad[joined.index.to_numpy()] = True
    rejected = bad & (keep | ~identified)
    log.add(index, np.flatnonzero(rejected), joined[rejected[joined.index.to_numpy()]].to_numpy(dtype=object))
    return keep & ~bad, int(identified.sum() - keep.sum())


def _reject_counterparts(
    alive: list[np.ndarray], codes: list[np.ndarray], size: int, log: _RejectLog
) -> None:
    """Reject a record whose same-id record on the other side was rejected: merging it alone would let
    one side overwrite every field the other side masters."""
    first = [log.positions(0), log.positions(1)]
    for this, other, other_name in ((0, 1, "vendor"), (1, 0, "ic")):
        other_codes = codes[other][first[other]]
        gone = np.zeros(size, dtype=bool)
        gone[other_codes[other_codes >= 0]] = True
        hit = alive[this] & (codes[this] >= 0) & gone[np.maximum(codes[this], 0)]
        if hit.any():
            log.add(
                this,
                np.flatnonzero(hit),
                f"counterpart rejected: the {other_name} record with this sourced_id was rejected",
            )
            alive[this] = alive[this] & ~hit


def _pair(
    alive: list[np.ndarray],
    codes: list[np.ndarray],
    size: int,
    rules: EntityMergeRules,
    kinds: Mapping[str, str],
    combined: _Combined,
    log: _RejectLog,
    counts: dict[str, int],
) -> tuple[_Rows, list[str | None]]:
    """Pair records by sourced_id, then by each natural key; everything left is single-source."""
    n_ic = alive[0].size
    ic_at = np.full(size, -1, dtype=np.int64)
    v_at = np.full(size, -1, dtype=np.int64)
    ic_alive, v_alive = np.flatnonzero(alive[0]), np.flatnonzero(alive[1])
    ic_at[codes[0][ic_alive]] = ic_alive
    v_at[codes[1][v_alive]] = v_alive
    both = np.flatnonzero((ic_at >= 0) & (v_at >= 0))
    pair_ic, pair_v = [ic_at[both]], [v_at[both]]
    pair_kind = [np.ones(both.size, dtype=np.int64)]
    counts["matched_by_sourced_id"] = int(both.size)
    pools = [alive[0].copy(), alive[1].copy()]
    pools[0][pair_ic[0]] = False
    pools[1][pair_v[0]] = False
    labels: list[str | None] = [None, "sourced_id"]
    for k, key in enumerate(rules.match_keys):
        labels.append(f"natural_key:{'+'.join(key)}")
        ic_cand, v_cand = np.flatnonzero(pools[0]), np.flatnonzero(pools[1])
        if ic_cand.size == 0 or v_cand.size == 0:
            continue
        i_pos, v_pos, i_amb, v_amb, i_cnt, v_cnt = _natural_pass(key, kinds, combined, n_ic, ic_cand, v_cand)
        pair_ic.append(i_pos)
        pair_v.append(v_pos)
        pair_kind.append(np.full(i_pos.size, 2 + k, dtype=np.int64))
        counts["matched_by_natural_key"] += int(i_pos.size)
        log.add(0, i_amb, _ambiguous_reason(key, i_cnt).to_numpy(dtype=object))
        log.add(1, v_amb, _ambiguous_reason(key, v_cnt).to_numpy(dtype=object))
        for pool, pos in ((pools[0], i_pos), (pools[0], i_amb), (pools[1], v_pos), (pools[1], v_amb)):
            pool[pos] = False
    only_ic, only_v = np.flatnonzero(pools[0]), np.flatnonzero(pools[1])
    pairs = np.concatenate(pair_ic)
    rows = _Rows(
        ic=np.concatenate([only_ic, np.full(only_v.size, -1), pairs]).astype(np.int64),
        vendor=np.concatenate([np.full(only_ic.size, -1), only_v, np.concatenate(pair_v)]).astype(np.int64),
        source=np.concatenate([np.zeros(only_ic.size), np.ones(only_v.size), np.full(pairs.size, 2)]).astype(
            np.int8
        ),
        match=np.concatenate([np.zeros(only_ic.size + only_v.size, dtype=np.int64), *pair_kind]),
    )
    return rows, labels


def _pick_vendor(
    rules: EntityMergeRules,
    columns: list[str],
    combined: _Combined,
    dlm_key: np.ndarray,
    p_ic: np.ndarray,
    p_v: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per column, for each pair (rows ``p_ic``/``p_v`` of the combined columns): does the vendor value win?"""
    newer_vendor = dlm_key[p_v] < dlm_key[p_ic]  # the key is -dlm: smaller is newer; ties stay with IC
    picks: dict[str, np.ndarray] = {}
    for column in columns:
        master = rules.master_for(column)
        if master == "newest":
            pick = newer_vendor
        else:
            pick = np.full(p_ic.size, master == "vendor")
        if rules.fill_nulls and column != "sourced_id" and p_ic.size:
            missing = combined[column].isna().to_numpy()
            ic_missing, v_missing = missing[p_ic], missing[p_v]
            pick = np.where(pick, ~v_missing | ic_missing, ic_missing & ~v_missing)
        picks[column] = pick
    return picks


def merge_entity(
    entity: Entity,
    ic: pd.DataFrame,
    vendor: pd.DataFrame | None,
    rules: EntityMergeRules,
    *,
    run_id: str,
    known_parents: dict[str, pd.Index] | None = None,
    parent_id_maps: Mapping[str, pd.Series] | None = None,
    api_version: str | None = None,
) -> MergeOutcome:
    """Merge one entity's IC and vendor records into one record per key, with lineage and rejects.

    Records are paired by sourced_id, then by ``rules.match_keys``. A pair matched by natural key keeps
    the IC sourced_id (IC is the system of record and its id is the one OneRoster exposes); its lineage
    says ``"_match": "natural_key:<columns>"`` and names the vendor id, and ``id_map`` lists it.
    ``vendor=None`` still dedupes, maps, checks and writes lineage (all ``ic``).

    ``known_parents`` maps a reference column to the ids known in the warehouse and this run; a merged
    record whose (non-null) reference is not among them is rejected. ``parent_id_maps`` rewrites vendor
    references (e.g. ``{"line_item_sourced_id": line_items_outcome.id_map}``) before matching.
    ``api_version`` pins the output layout; by default it is the smallest layout holding every input
    column. Output is sorted by sourced_id with canonical dtypes (``frames.canonical_dtypes``).
    """
    rules.check_for(entity)
    present = {c for df in (ic, vendor) if df is not None for c in df.columns}
    present |= {m.to for m in rules.mappings if isinstance(m, RenameMapping)}
    version, layout = _layout(entity, api_version, present & set(entity.columns()))
    columns = [f.column for f in layout]
    kinds = {f.column: f.kind for f in layout}
    for i, key in enumerate(rules.match_keys):
        absent = [c for c in key if c not in kinds]
        if absent:
            raise ValueError(
                f"match_keys[{i}] uses {absent}, which OneRoster {version} {entity.name} does not have"
            )
    for column in known_parents or {}:
        if column not in kinds:
            raise ValueError(
                f"known_parents names {column!r}, which is not a {entity.name} column in OneRoster {version}"
            )

    sides = [
        _prepare("ic", ic, layout, rules, None),
        _prepare("vendor", vendor, layout, rules, parent_id_maps),
    ]
    n_ic = len(sides[0])
    counts = dict.fromkeys(COUNT_KEYS, 0)
    counts["ic_in"], counts["vendor_in"] = n_ic, len(sides[1])
    combined = _Combined(sides[0].frame, sides[1].frame)
    id_codes = _rank_codes(combined["sourced_id"])  # ranks: the final sort is an integer argsort
    dlm_key = _newest_first_key(combined["date_last_modified"])
    codes = [id_codes[:n_ic], id_codes[n_ic:]]
    size = max(int(id_codes.max()) + 1 if len(id_codes) else 0, 1)  # at least 1: code -1 rows index slot 0

    log = _RejectLog()
    alive = []
    for index, (side, side_codes, side_dlm) in enumerate(
        zip(sides, codes, (dlm_key[:n_ic], dlm_key[n_ic:]), strict=True)
    ):
        side_alive, duplicates = _validate_and_dedupe(side, side_codes, side_dlm, log, index)
        alive.append(side_alive)
        counts[f"duplicates_{side.name}"] = duplicates
    _reject_counterparts(alive, codes, size, log)
    rows, match_labels = _pair(alive, codes, size, rules, kinds, combined, log, counts)
    rows = rows.select(np.argsort(id_codes[rows.primary(n_ic)], kind="stable"))

    paired = np.flatnonzero(rows.source == 2)
    picks = _pick_vendor(rules, columns, combined, dlm_key, rows.ic[paired], n_ic + rows.vendor[paired])

    def column_index(column: str) -> np.ndarray:
        index = rows.primary(n_ic)
        index[paired] = np.where(picks[column], n_ic + rows.vendor[paired], rows.ic[paired])
        return index

    # references: a merged record pointing at an unknown parent is rejected with each of its raw records
    if known_parents:
        unknown = np.zeros(rows.source.size, dtype=bool)
        reason = np.full(rows.source.size, None, dtype=object)
        for column, known in known_parents.items():
            all_codes, uniques = combined.codes(column)
            index = column_index(column)
            ref_codes = all_codes[index]
            ok = _is_in(uniques, known) if len(uniques) else np.zeros(1, dtype=bool)
            bad = (ref_codes >= 0) & ~ok[np.maximum(ref_codes, 0)] & ~unknown
            if bad.any():
                values = _take(combined[column], index[bad])
                parent = entity.parents.get(column, column)
                text = f"unknown reference: {column} " + _quoted(values) + f" is not a known {parent} record"
                reason[bad] = text.to_numpy(dtype=object)
                unknown |= bad
        if unknown.any():
            for side_index, positions in ((0, rows.ic[unknown]), (1, rows.vendor[unknown])):
                log.add(side_index, positions[positions >= 0], reason[unknown][positions >= 0])
            kept_pairs = ~unknown[paired]
            rows = rows.select(~unknown)
            paired = np.flatnonzero(rows.source == 2)
            picks = {column: pick[kept_pairs] for column, pick in picks.items()}

    # build the output once, column by column; Arrow and numpy release the GIL while gathering
    sources = {column: combined[column] for column in columns}
    with ThreadPoolExecutor(max_workers=_GATHER_THREADS) as pool:
        out: dict[str, pd.Series] = dict(
            zip(columns, pool.map(lambda c: _take(sources[c], column_index(c)), columns), strict=True)
        )
    bits = np.zeros(paired.size, dtype=np.int64)
    for j, column in enumerate(columns):
        bits |= picks[column].astype(np.int64) << j
    natural = rows.match >= 2
    vendor_ids = np.full(rows.source.size, None, dtype=object)
    vendor_ids[natural] = _take(combined["sourced_id"], n_ic + rows.vendor[natural]).to_numpy(dtype=object)
    lineage = _lineage(columns, rows.source, rows.match, bits, vendor_ids, match_labels, rules.fingerprint())
    out["field_sources"] = pd.Series(lineage, copy=False)
    out["record_source"] = pd.Series(
        pd.Categorical.from_codes(rows.source, categories=pd.Index(RECORD_SOURCES, dtype=STR_DTYPE)),
        copy=False,
    )
    merged = pd.DataFrame(out, copy=False)
    merged.index = pd.RangeIndex(len(merged))
    id_map = pd.Series(
        out["sourced_id"][natural].to_numpy(dtype=object),
        index=pd.Index(vendor_ids[natural], dtype=STR_DTYPE, name="vendor_sourced_id"),
        dtype=STR_DTYPE,
        name="ic_sourced_id",
    ).sort_index()

    rejects, reject_dups = _rejects_frame(entity.name, run_id, sides, log)
    counts["duplicates_ic"] += reject_dups["ic"]
    counts["duplicates_vendor"] += reject_dups["vendor"]
    counts["rejected_ic"] = int((rejects["source"] == "ic").sum())
    counts["rejected_vendor"] = int((rejects["source"] == "vendor").sum())
    counts["rejected"] = len(rejects)
    counts["merged_out"] = len(merged)
    return MergeOutcome(merged=merged, rejects=rejects, counts=counts, id_map=id_map)


def _rejects_frame(
    entity_name: str, run_id: str, sides: list[_Side], log: _RejectLog
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rejects with the raw records; exact repeats of one raw record collapse into one (a duplicate)."""
    parts = []
    for index, side in enumerate(sides):
        pos, msgs, name = log.positions(index), log.messages(index), side.name
        if pos.size == 0:
            continue
        parts.append(
            pd.DataFrame(
                {
                    "entity": entity_name,
                    "sourced_id": side.frame["sourced_id"].take(pos).to_numpy(dtype=object),
                    "reason": msgs,
                    "raw": json_lines(side.raw.iloc[pos]),
                    "run_id": run_id,
                    "source": name,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in REJECT_COLUMNS})
    frame = frame[REJECT_COLUMNS].astype(STR_DTYPE)
    before = frame["source"].value_counts()
    frame = frame.drop_duplicates(["source", "sourced_id", "reason", "raw"])
    after = frame["source"].value_counts()
    dups = {s: int(before.get(s, 0) - after.get(s, 0)) for s in ("ic", "vendor")}
    frame = frame.sort_values(["source", "sourced_id", "reason", "raw"], na_position="last", kind="stable")
    return frame.reset_index(drop=True), dups
