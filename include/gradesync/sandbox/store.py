"""The sandbox's state: encoded records per collection, a forward-only clock, queries and changes.

Each collection keeps records as JSON bytes in stable *slots* plus an ``order`` list of slots (the
serving order). Unfiltered pages are slices of ``order``; filters, scopes and sorts read per-field
columns that are decoded lazily (only the needed key, via msgspec) and kept in step with changes.
Query results are cached per data version, so paging through a filtered set costs one evaluation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import numpy as np

from gradesync.sandbox.generator import (
    DATA_AS_OF,
    RUBRIC_LEVELS,
    CollectionData,
    Dataset,
    RecordFactory,
    encode_json,
    format_timestamp,
)
from gradesync.sandbox.query import comparable, predicate_test, sort_key

_DECODER = msgspec.json.Decoder()


class SandboxClock:
    """UTC "now" that never goes backwards and never precedes the generated data."""

    def __init__(self, floor: datetime = DATA_AS_OF) -> None:
        self._last = floor
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            wall = datetime.now(timezone.utc)
            self._last = max(wall, self._last + timedelta(milliseconds=1))
            return self._last

    def now_text(self) -> str:
        return format_timestamp(self.now())


class Collection:
    """One OneRoster collection's records and the machinery to query and change them."""

    def __init__(self, name: str, data: CollectionData) -> None:
        self.name = name
        self.ids: list[str] = data.ids
        self.blobs: list[bytes | None] = list(data.blobs)
        self.slot_of: dict[str, int] = {sid: n for n, sid in enumerate(self.ids)}
        self.order: list[int] = list(range(len(self.ids)))
        self._columns: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self.order)

    def get(self, sourced_id: str) -> bytes | None:
        slot = self.slot_of.get(sourced_id)
        return None if slot is None else self.blobs[slot]

    def column(self, field: str) -> list[Any]:
        """Comparable values of ``field`` (dotted for references/metadata) by slot, decoded once."""
        cached = self._columns.get(field)
        if cached is None:
            interned: dict[Any, Any] = {}  # references repeat: share one str per distinct value
            cached = [
                None if b is None else interned.setdefault(v, v) if isinstance(v := _extract(field, b), str) else v
                for b in self.blobs
            ]
            self._columns[field] = cached
        return cached

    def _refresh_columns(self, slot: int, blob: bytes | None) -> None:
        record = None if blob is None else _DECODER.decode(blob)
        for field, values in self._columns.items():
            value = None if record is None else comparable(field, _dig(record, field))
            if slot < len(values):
                values[slot] = value
            else:
                values.append(value)

    def put(self, sourced_id: str, blob: bytes, position: int | None = None) -> bool:
        """Insert or replace; returns True when the record is new. New records go to ``position``."""
        slot = self.slot_of.get(sourced_id)
        if slot is not None and self.blobs[slot] is not None:
            self.blobs[slot] = blob
            self._refresh_columns(slot, blob)
            return False
        if slot is None:
            slot = len(self.ids)
            self.ids.append(sourced_id)
            self.blobs.append(blob)
            self.slot_of[sourced_id] = slot
        else:
            self.blobs[slot] = blob
        self._refresh_columns(slot, blob)
        if position is None:
            self.order.append(slot)
        else:
            self.order.insert(position, slot)
        return True

    def vanish(self, sourced_id: str) -> bool:
        slot = self.slot_of.get(sourced_id)
        if slot is None or self.blobs[slot] is None:
            return False
        self.blobs[slot] = None
        self.order.remove(slot)
        self._refresh_columns(slot, None)
        return True


def _dig(record: dict[str, Any], field: str) -> Any:
    value: Any = record
    for part in field.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


_FIELD_DECODERS: dict[str, msgspec.json.Decoder] = {}


def _extract(field: str, blob: bytes) -> Any:
    """Decode only the top-level key ``field`` needs; msgspec skips the rest of the record."""
    head, _, rest = field.partition(".")
    decoder = _FIELD_DECODERS.get(head)
    if decoder is None:
        struct = msgspec.defstruct("Only", [("value", Any, None)], rename={"value": head})
        decoder = _FIELD_DECODERS[head] = msgspec.json.Decoder(struct)
    value = decoder.decode(blob).value
    if rest:
        value = _dig(value, rest) if isinstance(value, dict) else None
    return comparable(field, value)


@dataclass(frozen=True)
class Scope:
    """Records whose ``field`` value is one of ``values`` (class-scoped and similar reads)."""

    field: str
    values: frozenset[str]


class Store:
    """All collections of one sandbox plus the clock; every change bumps ``version``."""

    def __init__(self, dataset: Dataset, clock: SandboxClock | None = None) -> None:
        self.dataset = dataset
        self.api = dataset.api
        self.factory = dataset.factory
        self.clock = clock or SandboxClock()
        self.collections: dict[str, Collection] = {
            name: Collection(name, data) for name, data in dataset.collections.items()
        }
        self.lock = threading.RLock()
        self.version = 0
        self._query_cache: OrderedDict[tuple[Any, ...], list[int]] = OrderedDict()
        self.rng = np.random.default_rng([dataset.seed, 99])

    def collection(self, name: str) -> Collection:
        return self.collections[name]

    def changed(self) -> None:
        self.version += 1
        self._query_cache.clear()

    def select(
        self,
        name: str,
        scopes: tuple[Scope, ...] = (),
        predicates: tuple[Any, ...] = (),
        joiner: str = "AND",
        sort: str | None = None,
        descending: bool = False,
    ) -> list[int]:
        """Slots matching scopes and filter, in serving (or sorted) order; cached per version.

        Callers that page through the answer hold ``self.lock`` so no change lands in between.
        """
        with self.lock:
            return self._select(name, scopes, predicates, joiner, sort, descending)

    def _select(
        self,
        name: str,
        scopes: tuple[Scope, ...],
        predicates: tuple[Any, ...],
        joiner: str,
        sort: str | None,
        descending: bool,
    ) -> list[int]:
        collection = self.collections[name]
        if not scopes and not predicates and not sort:
            return collection.order
        key = (name, self.version, scopes, predicates, joiner, sort, descending)
        cached = self._query_cache.get(key)
        if cached is not None:
            self._query_cache.move_to_end(key)
            return cached
        slots: list[int] = collection.order
        for scope in scopes:
            values = collection.column(scope.field)
            wanted = scope.values
            slots = [s for s in slots if values[s] in wanted]
        if predicates:
            tests = [(collection.column(p.field), predicate_test(p)) for p in predicates]
            if len(tests) == 1:
                (values, test), = tests
                slots = [s for s in slots if test(values[s])]
            elif joiner == "OR":
                slots = [s for s in slots if any(t(v[s]) for v, t in tests)]
            else:
                slots = [s for s in slots if all(t(v[s]) for v, t in tests)]
        if sort:
            values = collection.column(sort)
            slots = sorted(slots, key=lambda s: sort_key(values[s]), reverse=descending)
        self._query_cache[key] = slots
        while len(self._query_cache) > 64:
            self._query_cache.popitem(last=False)
        return slots

    def records(self, name: str) -> list[dict[str, Any]]:
        """Every served record of ``name`` (tombstones included), decoded, in serving order."""
        collection = self.collections[name]
        with self.lock:
            return [_DECODER.decode(collection.blobs[s]) for s in collection.order]  # type: ignore[arg-type]

    # -- changes ---------------------------------------------------------------------------------------
    def upsert(self, name: str, record: dict[str, Any], position: int | None = None) -> bool:
        """Store ``record`` (its dateLastModified set by the caller); True when it was new."""
        with self.lock:
            created = self.collections[name].put(record["sourcedId"], encode_json(record), position)
            self.changed()
            return created

    def delete(self, name: str, sourced_id: str, mode: str) -> bool:
        """Tombstone (status tobedeleted, new dateLastModified) or vanish a record."""
        with self.lock:
            collection = self.collections[name]
            blob = collection.get(sourced_id)
            if blob is None:
                return False
            if mode == "vanish":
                collection.vanish(sourced_id)
            elif mode == "tombstone":
                record = _DECODER.decode(blob)
                record["status"] = "tobedeleted"
                record["dateLastModified"] = self.clock.now_text()
                collection.put(sourced_id, encode_json(record))
            else:
                raise ValueError(f"delete mode must be 'tombstone' or 'vanish', got {mode!r}")
            self.changed()
            return True

    def pick(self, name: str, count: int, active_only: bool = True) -> list[str]:
        """Deterministically choose ``count`` served records (seeded; same calls → same picks)."""
        with self.lock:
            collection = self.collections[name]
            candidates = collection.order
            if active_only:
                statuses = collection.column("status")
                candidates = [s for s in candidates if statuses[s] == "active"]
            if not candidates:
                return []
            chosen = self.rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
            return [collection.ids[candidates[int(i)]] for i in sorted(chosen.tolist())]

    def modify(self, name: str, count: int = 1, ids: list[str] | None = None) -> list[str]:
        """Change a field of each chosen record the way a teacher would, with a new dateLastModified."""
        with self.lock:
            targets = ids if ids is not None else self.pick(name, count)
            collection = self.collections[name]
            done = []
            for sid in targets:
                blob = collection.get(sid)
                if blob is None:
                    continue
                record = _DECODER.decode(blob)
                _MUTATORS.get(name, _mutate_title)(record, self.rng, self.factory)
                record["dateLastModified"] = self.clock.now_text()
                collection.put(sid, encode_json(record))
                done.append(sid)
            self.changed()
            return done

    def add(self, name: str, count: int = 1, position: int | None = None) -> list[str]:
        """Create ``count`` new records (results fill ungraded (line item, student) pairs)."""
        with self.lock:
            # results grade pending (line item, student) pairs; when they run out, a teacher adds
            # an assignment (or a benchmark), which brings a class's worth of new pairs
            while name == "results" and len(self.factory.pending_results) < count:
                self.add("lineItems", 1)
            while name == "assessmentResults" and len(self.factory.pending_assessment_results) < count:
                self.add("assessmentLineItems", 1)
            rows = _new_rows(self, name, count, [self.clock.now() for _ in range(count)])
            collection = self.collections[name]
            added = []
            for offset, (sid, blob) in enumerate(rows):
                collection.put(sid, blob, None if position is None else position + offset)
                added.append(sid)
            self.changed()
            return added


# -- teacher-like edits, one per entity ---------------------------------------------------------------
# Each takes (record, rng, factory) and edits the decoded record in place, staying within the rules
# the sandbox itself enforces on writes (scores in range, rubric text on the scale).


def _mutate_title(record: dict[str, Any], rng: np.random.Generator, factory: RecordFactory) -> None:
    title = str(record.get("title", ""))
    base = title.split(" (rev ")[0]
    record["title"] = f"{base} (rev {int(rng.integers(2, 99))})"
    if record.get("status") == "tobedeleted":
        record["status"] = "active"


def _mutate_result(record: dict[str, Any], rng: np.random.Generator, factory: RecordFactory) -> None:
    facts = factory.line_items.get((record.get("lineItem") or {}).get("sourcedId", "")) or {}
    item = factory.assessment_items.get((record.get("assessmentLineItem") or {}).get("sourcedId", "")) or {}
    low = facts.get("min", item.get("min", 0.0)) or 0.0
    high = facts.get("max", item.get("max", 100.0))
    high = 100.0 if high is None else high
    current = record.get("score")
    base = float(current) if isinstance(current, (int, float)) else (low + high) / 2
    record["score"] = float(min(high, max(low, round(base + float(rng.choice([-2.0, -1.0, 1.0, 2.0]))))))
    record["scoreStatus"] = "fully graded"
    record["comment"] = "Regraded after review — «révisé»"
    record.pop("textScore", None)
    if facts.get("kind") == "rubric":
        record["textScore"] = RUBRIC_LEVELS[int(record["score"]) - 1]
    if factory.v12:
        for flag in ("inProgress", "incomplete", "missing"):
            record[flag] = "false"


def _mutate_category(record: dict[str, Any], rng: np.random.Generator, factory: RecordFactory) -> None:
    _mutate_title(record, rng, factory)
    if factory.v12:
        record["weight"] = round(float(rng.random()), 2)


_MUTATORS: dict[str, Callable[[dict[str, Any], np.random.Generator, RecordFactory], None]] = {
    "results": _mutate_result,
    "assessmentResults": _mutate_result,
    "categories": _mutate_category,
}


def _new_rows(store: Store, name: str, count: int, instants: list[datetime]) -> list[tuple[str, bytes]]:
    """Render ``count`` new records of ``name``; each gets its own clock instant."""
    f = store.factory
    rng = store.rng
    now_ms = np.array([int(t.timestamp() * 1000) for t in instants], dtype=np.int64)
    as_of = int(now_ms[-1]) + 1 if count else 0
    if name == "results":
        pairs = f.pending_results[:count]
        del f.pending_results[:count]
        if not pairs:
            return []
        ids, blobs = f.results(
            rng, np.array([p[0] for p in pairs]), [p[1] for p in pairs], now_ms[: len(pairs)], as_of
        )
        return list(zip(ids, blobs, strict=True))
    if name == "assessmentResults":
        pairs = f.pending_assessment_results[:count]
        del f.pending_assessment_results[:count]
        if not pairs:
            return []
        ids, blobs = f.assessment_results(rng, [p[0] for p in pairs], [p[1] for p in pairs], now_ms[: len(pairs)], as_of)
        return list(zip(ids, blobs, strict=True))
    classes = sorted(f.class_categories)
    picked = [classes[int(i)] for i in rng.integers(0, len(classes), count)]
    if name == "categories":
        titles = [f"Added category {f.legacy_counter.get('category', 0) + n + 1}" for n in range(count)]
        ids, blobs = f.categories(rng, titles, [0.1] * count, now_ms)
        for cid, sid in zip(picked, ids, strict=True):
            f.class_categories[cid].append(sid)
        return list(zip(ids, blobs, strict=True))
    if name == "lineItems":
        assign = now_ms - 86_400_000
        kinds = ["points"] * count
        ids, blobs = f.line_item_records(
            rng,
            picked,
            [f.class_categories[c][0] for c in picked],
            kinds,
            [20.0] * count,
            [f"Added assignment: “Pop quiz” #{n + 1}" for n in range(count)],
            [None] * count,
            assign,
            now_ms + 7 * 86_400_000,
            now_ms,
        )
        for sid, cid in zip(ids, picked, strict=True):
            number = f.line_items.index[sid]
            f.pending_results.extend((number, s) for s in sorted(f.class_students[cid]))
        return list(zip(ids, blobs, strict=True))
    if name == "scoreScales":
        from gradesync.sandbox.generator import score_scale_record

        ids, legacy = f.new_ids(rng, "scoreScale", count)
        return [
            (sid, encode_json(score_scale_record(f, sid, old, cid, "percent", format_timestamp(when))))
            for sid, old, cid, when in zip(ids, legacy, picked, instants, strict=True)
        ]
    if name == "assessmentLineItems":
        from gradesync.sandbox.generator import assessment_line_item_record

        ids, legacy = f.new_ids(rng, "assessmentLineItem", count)
        out = []
        for sid, old, cid, when in zip(ids, legacy, picked, instants, strict=True):
            school = f.class_info[cid]["school"]
            record = assessment_line_item_record(
                f, sid, old, format_timestamp(when), title="Added benchmark", school=school, class_id=None, parent=None,
                scale=f.class_scales[cid]["percent"],
            )
            f.pending_assessment_results.extend((sid, s) for s in sorted(f.school_students[school]))
            out.append((sid, encode_json(record)))
        return out
    raise KeyError(f"cannot add records to {name!r}")
