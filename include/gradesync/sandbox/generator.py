"""Deterministic gradebook data for the sandbox: same preset + seed + base URL → same bytes.

Records are rendered straight to JSON bytes, column by column: every field is a list of
pre-encoded ``"key":value`` fragments (or ``None`` to leave the key out) built with numpy draws, and
a row is the fragments joined. That keeps the ``district`` preset (about a million results) at a few
seconds and well under a gigabyte, where building a million dicts would take several times longer.

The same builders render records added later (``RecordFactory``), so generated and added records
have one shape. API 1.1 records carry only 1.1 fields; 1.2 records satisfy the 1.2 OpenAPI schemas.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import msgspec
import numpy as np

_ENCODER = msgspec.json.Encoder()

SCHOOL_YEAR_START = datetime(2026, 8, 17, tzinfo=timezone.utc)
SCHOOL_YEAR_END = datetime(2027, 6, 4, tzinfo=timezone.utc)
# Generated records were last modified before this instant; the sandbox clock starts here or later.
DATA_AS_OF = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)

SCORE_STATUSES = ("fully graded", "submitted", "not submitted", "partially graded", "exempt", "ext:dropped")
_SCORE_STATUS_WEIGHTS = (0.70, 0.08, 0.08, 0.05, 0.05, 0.04)
_SCORED_STATUSES = frozenset({"fully graded", "partially graded", "ext:dropped"})

# (title, start, end, closed): Q1's grading window is closed, so writes into it are refused.
GRADING_PERIODS = (
    ("Q1", date(2026, 8, 17), date(2026, 10, 23), True),
    ("Q2", date(2026, 10, 26), date(2027, 1, 15), False),
    ("Q3", date(2027, 1, 19), date(2027, 3, 26), False),
    ("Q4", date(2027, 3, 29), date(2027, 6, 4), False),
)
TERMS = (("S1", date(2026, 8, 17), date(2027, 1, 15)), ("S2", date(2027, 1, 19), date(2027, 6, 4)))

CATEGORY_TITLES = (
    "Homework",
    "Quizzes",
    "Tests",
    'Teacher\'s "Choice"',
    "Évaluations «finales»",
    "Labs",
)
LINE_ITEM_TOPICS = (
    "Fractions",
    "Photosynthesis",
    'Reading log "Week 3"',
    "L'Étranger — essay",
    "Newton's laws",
    "Ecuaciones cuadráticas",
    "日本の歴史",
    "Data & statistics",
    "Poem: \"O Captain!\"",
    "Map skills 🌍",
)
COMMENTS = (
    "Great work!",
    'Needs to show work on "part b"',
    "Très bien — continue comme ça",
    "Didn't submit the draft",
    "素晴らしい",
    "Late: see note\nresubmitted Friday",
    "Back\\slash and 'single' quotes",
    "👍 improved a lot",
)
GIVEN_NAMES = ("Ana", "José", "Zoë", "Liam", "Mei", "Oluwaseun", "Søren", "Fatima", "Noah", "Ảnh")
FAMILY_NAMES = ("O'Brien", "García", "Nguyễn", "Smith", "Müller", "李", "Johnson", "D'Angelo", "Kowalski")
SUBJECTS = ("Math", "English", "Science", "History", "Spanish", "Art", "Music", "PE")
ASSESSMENT_TITLES = ("District Benchmark — Fall", "Reading", "Math", "Science", "Writing «Essay»", "Spelling")
PERFORMANCE_LEVELS = ("Below Basic", "Basic", "Proficient", "Advanced")
LETTER_GRADES = ((90, "A"), (80, "B"), (70, "C"), (60, "D"), (0, "F"))
RUBRIC_LEVELS = ("Beginning", "Developing", "Meets", "Exceeds")

SCALE_KINDS = ("points", "percent", "rubric")
_SCALE_VALUES: dict[str, list[dict[str, str]]] = {
    "points": [{"itemValueLHS": "0-1000", "itemValueRHS": "points"}],
    "percent": [
        {"itemValueLHS": "90-100", "itemValueRHS": "A"},
        {"itemValueLHS": "80-89.99", "itemValueRHS": "B"},
        {"itemValueLHS": "70-79.99", "itemValueRHS": "C"},
        {"itemValueLHS": "60-69.99", "itemValueRHS": "D"},
        {"itemValueLHS": "0-59.99", "itemValueRHS": "F"},
    ],
    "rubric": [{"itemValueLHS": str(i + 1), "itemValueRHS": level} for i, level in enumerate(RUBRIC_LEVELS)],
}


@dataclass(frozen=True)
class Preset:
    """Sizes of one generated district; results = classes × line items per class × students per class."""

    schools: int
    classes_per_school: int
    students_per_class: int
    line_items_per_class: int
    categories_per_class: int
    assessments_per_school: int
    pending_share: float = 0.03  # (line item, student) pairs left ungraded, for later ``add``


PRESETS: dict[str, Preset] = {
    "tiny": Preset(1, 3, 8, 8, 3, 3),
    "school": Preset(1, 40, 25, 20, 4, 5),
    "district": Preset(20, 50, 25, 40, 5, 8),
}


def encode_json(value: Any) -> bytes:
    """The one JSON encoder of the sandbox (compact, UTF-8, key order kept)."""
    return _ENCODER.encode(value)


def _js(value: Any) -> str:
    return _ENCODER.encode(value).decode()


def _frag(key: str, value: Any) -> str:
    """A ``,"key":value`` fragment; columns of these are joined into records."""
    return f',"{key}":{_js(value)}'


def render_rows(columns: Sequence[Iterable[str]]) -> list[bytes]:
    """Join per-field fragments row by row into JSON objects.

    The first column opens the object (``{"sourcedId":...``); every other fragment starts with a
    comma, and an empty string leaves that key out. Plain ``"".join`` per row is the fastest way
    CPython offers to do this for a million rows.
    """
    return [("".join(row) + "}").encode() for row in zip(*columns, strict=False)]


def _id_column(ids: list[str]) -> list[str]:
    return [f'{{"sourcedId":"{x}"' for x in ids]


def _const(fragment: str) -> Iterable[str]:
    return itertools.repeat(fragment)


def _pool(key: str, values: Sequence[Any]) -> np.ndarray:
    """Fragments for a small set of values, indexed by position (numpy fancy indexing picks rows)."""
    return np.array([_frag(key, v) for v in values], dtype=object)


def iso_ms(epoch_ms: np.ndarray) -> list[str]:
    """Epoch milliseconds → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` strings, vectorised."""
    text = np.datetime_as_string(np.asarray(epoch_ms).astype("datetime64[ms]"), unit="ms")
    return [t + "Z" for t in text.tolist()]


def format_timestamp(moment: datetime) -> str:
    """The one date-time format the sandbox serves (UTC, milliseconds, ``Z``)."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def guid_ids(rng: np.random.Generator, count: int) -> list[str]:
    """Random GUID-shaped sourcedIds (IC's 1.2 ids look like GUIDs), built as one byte array."""
    if count == 0:
        return []
    raw = rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
    digits = np.empty((count, 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX[raw >> 4]
    digits[:, 1::2] = _HEX[raw & 15]
    text = np.full((count, 36), ord("-"), dtype=np.uint8)
    for dst, src, width in ((0, 0, 8), (9, 8, 4), (14, 12, 4), (19, 16, 4), (24, 20, 12)):
        text[:, dst : dst + width] = digits[:, src : src + width]
    return [b.decode() for b in text.view("S36").ravel().tolist()]


@dataclass
class CollectionData:
    """One OneRoster collection: sourcedIds and their encoded records, in serving order."""

    ids: list[str]
    blobs: list[bytes]


@dataclass
class Dataset:
    """Everything the server serves, plus the roster facts its write rules need."""

    api: str
    preset: str
    seed: int
    base_url: str
    collections: dict[str, CollectionData]
    factory: RecordFactory

    def digest(self) -> str:
        """A content hash over every collection, for reproducibility checks."""
        h = hashlib.sha256()
        for name in sorted(self.collections):
            h.update(name.encode())
            for blob in self.collections[name].blobs:
                h.update(blob)
                h.update(b"\n")
        return h.hexdigest()


_REF_TARGETS: dict[str, tuple[str, str, str]] = {
    "class": ("classes", "class", "rostering"),
    "school": ("schools", "org", "rostering"),
    "org": ("orgs", "org", "rostering"),
    "user": ("users", "user", "rostering"),
    "course": ("courses", "course", "rostering"),
    "academicSession": ("academicSessions", "academicSession", "rostering"),
    "category": ("categories", "category", "gradebook"),
    "lineItem": ("lineItems", "lineItem", "gradebook"),
    "scoreScale": ("scoreScales", "scoreScale", "gradebook"),
    "assessmentLineItem": ("assessmentLineItems", "assessmentLineItem", "gradebook"),
}

_LEGACY_BASE = {
    "org": 100,
    "academicSession": 500,
    "course": 1_000,
    "class": 10_000,
    "user": 100_000,
    "category": 200_000,
    "scoreScale": 300_000,
    "lineItem": 400_000,
    "assessmentLineItem": 900_000,
    "result": 10_000_000,
    "assessmentResult": 50_000_000,
}


@dataclass
class LineItemFacts:
    """Per line item, what results and write rules need; numpy arrays indexed by line item number."""

    ids: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    class_id: list[str] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    value_min: list[float] = field(default_factory=list)
    value_max: list[float] = field(default_factory=list)
    assign_ms: list[int] = field(default_factory=list)
    grading_period: list[str] = field(default_factory=list)
    closed: list[bool] = field(default_factory=list)
    scale: list[str | None] = field(default_factory=list)
    # pre-encoded ",lineItem,class,scoreScale" fragment (1.2) or ",lineItem" (1.1)
    refs: list[str] = field(default_factory=list)

    def append(self, **values: Any) -> None:
        self.index[values["id"]] = len(self.ids)
        self.ids.append(values["id"])
        for name in ("class_id", "kind", "value_min", "value_max", "assign_ms", "grading_period", "closed",
                     "scale", "refs"):
            getattr(self, name).append(values[name])

    def get(self, sourced_id: str) -> dict[str, Any] | None:
        n = self.index.get(sourced_id)
        if n is None:
            return None
        return {
            "class": self.class_id[n],
            "kind": self.kind[n],
            "min": self.value_min[n],
            "max": self.value_max[n],
            "gradingPeriod": self.grading_period[n],
            "closed": self.closed[n],
            "scale": self.scale[n],
        }


@dataclass
class RecordFactory:
    """Renders records for one API version; used for generation and for records added later.

    It also keeps the roster facts (class rosters, line item ranges, closed grading periods) that the
    server's write rules check, because the generator is where those facts are decided.
    """

    api: str
    base_url: str
    seed: int
    rostering_base: str = ""
    gradebook_base: str = ""
    legacy_counter: dict[str, int] = field(default_factory=dict)
    line_items: LineItemFacts = field(default_factory=LineItemFacts)
    pending_results: list[tuple[int, str]] = field(default_factory=list)  # (line item number, student)
    pending_assessment_results: list[tuple[str, str]] = field(default_factory=list)
    assessment_items: dict[str, dict[str, Any]] = field(default_factory=dict)
    class_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    class_students: dict[str, set[str]] = field(default_factory=dict)
    school_classes: dict[str, set[str]] = field(default_factory=dict)
    school_students: dict[str, set[str]] = field(default_factory=dict)
    class_categories: dict[str, list[str]] = field(default_factory=dict)
    class_scales: dict[str, dict[str, str]] = field(default_factory=dict)
    session_ids: dict[str, str] = field(default_factory=dict)
    closed_grading_periods: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        root = f"{self.base_url}/campus/api/ims/oneroster"
        if self.api == "1.2":
            self.rostering_base = f"{root}/rostering/v1p2"
            self.gradebook_base = f"{root}/gradebook/v1p2"
        else:
            self.rostering_base = self.gradebook_base = f"{root}/rostering/v1p1"

    @property
    def v12(self) -> bool:
        return self.api == "1.2"

    def ref(self, kind: str, sourced_id: str) -> dict[str, str]:
        """A OneRoster reference object with an absolute href."""
        path, ref_type, base = _REF_TARGETS[kind]
        base_url = self.gradebook_base if base == "gradebook" else self.rostering_base
        return {"href": f"{base_url}/{path}/{sourced_id}", "sourcedId": sourced_id, "type": ref_type}

    def ref_fragment(self, key: str, kind: str, sourced_id: str) -> str:
        return _frag(key, self.ref(kind, sourced_id))

    def new_ids(self, rng: np.random.Generator, kind: str, count: int) -> tuple[list[str], list[str]]:
        """(served sourcedIds, legacy 1.1 ids) for ``count`` new records of ``kind``."""
        start = self.legacy_counter.get(kind, _LEGACY_BASE[kind])
        legacy = [str(start + i) for i in range(count)]
        self.legacy_counter[kind] = start + count
        served = guid_ids(rng, count) if self.v12 else legacy
        return served, legacy

    def meta_column(self, legacy: list[str]) -> list[str]:
        """IC keeps the 1.1 id of a 1.2 record in ``metadata.ic.legacysourceId``."""
        if not self.v12:
            return [""] * len(legacy)
        return [f',"metadata":{{"ic":{{"legacysourceId":"{x}"}}}}' for x in legacy]

    def head_columns(
        self, rng: np.random.Generator, kind: str, count: int, modified_ms: np.ndarray, deleted_share: float
    ) -> tuple[list[str], list[Iterable[str]]]:
        """sourcedId, status, dateLastModified and metadata columns shared by every entity."""
        ids, legacy = self.new_ids(rng, kind, count)
        deleted = (rng.random(count) < deleted_share).tolist()
        stamps = iso_ms(modified_ms)
        status_dlm = [
            f',"status":"{"tobedeleted" if d else "active"}","dateLastModified":"{s}"'
            for d, s in zip(deleted, stamps, strict=True)
        ]
        return ids, [_id_column(ids), status_dlm, self.meta_column(legacy)]

    # -- records -----------------------------------------------------------------------------------
    def categories(
        self, rng: np.random.Generator, titles: list[str], weights: list[float], modified_ms: np.ndarray,
        deleted_share: float = 0.0,
    ) -> tuple[list[str], list[bytes]]:
        ids, columns = self.head_columns(rng, "category", len(titles), modified_ms, deleted_share)
        columns.append([_frag("title", t) for t in titles])
        if self.v12:
            columns.append([_frag("weight", w) for w in weights])
        return ids, render_rows(columns)

    def line_item_records(
        self,
        rng: np.random.Generator,
        class_ids: list[str],
        categories: list[str],
        kinds: list[str],
        value_max: list[float],
        titles: list[str],
        descriptions: list[str | None],
        assign_ms: np.ndarray,
        due_ms: np.ndarray,
        modified_ms: np.ndarray,
        deleted_share: float = 0.0,
    ) -> tuple[list[str], list[bytes]]:
        """Render line items and register their facts (for results and write rules)."""
        count = len(class_ids)
        ids, columns = self.head_columns(rng, "lineItem", count, modified_ms, deleted_share)
        due_days = np.datetime_as_string(due_ms.astype("datetime64[ms]"), unit="D").tolist()
        periods = [_grading_period_for(d) for d in due_days]
        value_min = [1.0 if k == "rubric" else 0.0 for k in kinds]
        class_refs = {c: self.ref_fragment("class", "class", c) for c in set(class_ids)}
        category_refs = {c: self.ref_fragment("category", "category", c) for c in set(categories)}
        period_refs = {p: self.ref_fragment("gradingPeriod", "academicSession", self.session_ids[p]) for p in set(periods)}
        columns += [
            [_frag("title", t) for t in titles],
            [_frag("description", d) if d else "" for d in descriptions],
            [f',"assignDate":"{x}Z"' for x in np.datetime_as_string(assign_ms.astype("datetime64[ms]").astype("datetime64[s]"))],
            [f',"dueDate":"{x}Z"' for x in np.datetime_as_string(due_ms.astype("datetime64[ms]").astype("datetime64[s]"))],
            [class_refs[c] for c in class_ids],
        ]
        scales: list[str | None] = [None] * count
        if self.v12:
            school_refs = {
                c: self.ref_fragment("school", "org", self.class_info[c]["school"]) for c in set(class_ids)
            }
            columns.append([school_refs[c] for c in class_ids])
        columns.append([category_refs[c] for c in categories])
        columns.append([period_refs[p] for p in periods])
        if self.v12:
            term_ref = self.ref_fragment("academicSession", "academicSession", self.session_ids["S1"])
            columns.append(_const(term_ref))
            scales = [self.class_scales[c][k] for c, k in zip(class_ids, kinds, strict=True)]
            columns.append([self.ref_fragment("scoreScale", "scoreScale", x) for x in scales])
        columns.append([_frag("resultValueMin", x) for x in value_min])
        columns.append([_frag("resultValueMax", x) for x in value_max])
        closed = {t for t, *_r, c in GRADING_PERIODS if c}
        for n, sid in enumerate(ids):
            refs = self.ref_fragment("lineItem", "lineItem", sid)
            if self.v12:
                refs += class_refs[class_ids[n]] + self.ref_fragment("scoreScale", "scoreScale", scales[n] or "")
            self.line_items.append(
                id=sid,
                class_id=class_ids[n],
                kind=kinds[n],
                value_min=value_min[n],
                value_max=value_max[n],
                assign_ms=int(assign_ms[n]),
                grading_period=self.session_ids[periods[n]],
                closed=periods[n] in closed,
                scale=scales[n],
                refs=refs,
            )
        return ids, render_rows(columns)

    def results(
        self, rng: np.random.Generator, line_item_numbers: np.ndarray, students: list[str],
        modified_ms: np.ndarray | None, as_of_ms: int,
    ) -> tuple[list[str], list[bytes]]:
        """Render gradebook results for (line item number, student) rows; generation and ``add``."""
        facts = self.line_items
        count = len(students)
        numbers = np.asarray(line_item_numbers).tolist()
        value_min = np.array([facts.value_min[n] for n in numbers], dtype=float)
        value_max = np.array([facts.value_max[n] for n in numbers], dtype=float)
        if modified_ms is None:
            assign = np.minimum(np.array([facts.assign_ms[n] for n in numbers], dtype=np.int64), as_of_ms - 1)
            modified_ms = _between_ms(rng, assign, as_of_ms, count)
        ids, columns = self.head_columns(rng, "result", count, modified_ms, 0.005)
        stamps = columns[1]
        status_index, score, scored = _score_columns(rng, count, value_min, value_max)
        comment_pick = rng.integers(0, len(COMMENTS) * 5, count)
        late = rng.random(count) < 0.06
        text_pick = rng.random(count) < 0.5
        user_refs = {s: self.ref_fragment("student", "user", s) for s in set(students)}
        # one pre-encoded fragment per line item: lineItem (+ class and scoreScale in 1.2)
        columns.append([facts.refs[n] for n in numbers])
        columns.append([user_refs[s] for s in students])
        columns.append(_SCORE_STATUS_FRAGMENTS[status_index].tolist())
        score_list = score.tolist()
        scored_list = scored.tolist()
        if self.v12:
            # 1.2: score is optional; an ungraded result simply has none
            columns.append([f',"score":{v!r}' if ok else "" for v, ok in zip(score_list, scored_list, strict=True)])
            kinds = [facts.kind[n] for n in numbers]
            text: list[str] = []
            for kind, v, ok, pick in zip(kinds, score_list, scored_list, text_pick.tolist(), strict=True):
                if not ok:
                    text.append("")
                elif kind == "rubric":
                    text.append(_RUBRIC_FRAGMENTS[int(v) - 1])
                elif kind == "percent" and pick:
                    text.append(_LETTER_FRAGMENTS[_letter(v)])
                else:
                    text.append("")
            columns.append(text)
        else:
            # 1.1: score is a required key; IC sends null for ungraded work
            columns.append([f',"score":{v!r}' if ok else ',"score":null' for v, ok in zip(score_list, scored_list, strict=True)])
        columns.append([f',"scoreDate":"{s[-25:-15]}"' for s in stamps])
        columns.append(_COMMENT_FRAGMENTS[comment_pick].tolist())
        if self.v12:
            columns.append(_FLAG_FRAGMENTS[status_index * 2 + late].tolist())
        return ids, render_rows(columns)

    def assessment_results(
        self, rng: np.random.Generator, items: list[str], students: list[str], modified_ms: np.ndarray | None,
        as_of_ms: int,
    ) -> tuple[list[str], list[bytes]]:
        """Render assessment results for (assessment line item, student) rows (1.2 only)."""
        count = len(items)
        if modified_ms is None:
            modified_ms = _between_ms(rng, epoch_ms(SCHOOL_YEAR_START), as_of_ms, count)
        ids, columns = self.head_columns(rng, "assessmentResult", count, modified_ms, 0.005)
        stamps = columns[1]
        status_index, score, scored = _score_columns(rng, count, np.zeros(count), np.full(count, 100.0))
        percentile = np.round(rng.random(count) * 99 + 1, 1).tolist()
        comment_pick = rng.integers(0, len(COMMENTS) * 8, count)
        item_refs = {x: self.ref_fragment("assessmentLineItem", "assessmentLineItem", x) for x in set(items)}
        user_refs = {s: self.ref_fragment("student", "user", s) for s in set(students)}
        scored_list = scored.tolist()
        score_list = score.tolist()
        columns += [
            [item_refs[x] for x in items],
            [user_refs[s] for s in students],
            [f',"score":{v!r}' if ok else "" for v, ok in zip(score_list, scored_list, strict=True)],
            [_frag("textScore", PERFORMANCE_LEVELS[min(int(v // 25), 3)]) if ok else ""
             for v, ok in zip(score_list, scored_list, strict=True)],
            [f',"scoreDate":"{s[-25:-15]}"' for s in stamps],
            [f',"scorePercentile":{p!r}' if ok else "" for p, ok in zip(percentile, scored_list, strict=True)],
            _SCORE_STATUS_FRAGMENTS[status_index].tolist(),
            _COMMENT_FRAGMENTS[comment_pick].tolist(),
            _FLAG_FRAGMENTS[status_index * 2].tolist(),
        ]
        return ids, render_rows(columns)


def _between_ms(rng: np.random.Generator, start_ms: np.ndarray | int, end_ms: int, count: int) -> np.ndarray:
    start = np.broadcast_to(np.asarray(start_ms, dtype=np.int64), (count,))
    span = np.maximum(end_ms - start, 1)
    return start + (rng.random(count) * span).astype(np.int64)


def _score_columns(
    rng: np.random.Generator, count: int, value_min: np.ndarray, value_max: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scoreStatus index per row, score per row, whether the row has a score)."""
    status_index = rng.choice(len(SCORE_STATUSES), count, p=_SCORE_STATUS_WEIGHTS)
    scored = np.isin(status_index, [SCORE_STATUSES.index(x) for x in _SCORED_STATUSES])
    fraction = np.clip(rng.beta(5, 1.6, count), 0, 1)
    fraction = np.where(status_index == SCORE_STATUSES.index("partially graded"), fraction * 0.6, fraction)
    score = value_min + fraction * (value_max - value_min)
    score = np.where(value_max <= 4, np.round(score), np.round(score * 2) / 2)
    return status_index, score, scored


def _letter(percent: float) -> str:
    for floor, letter in LETTER_GRADES:
        if percent >= floor:
            return letter
    return "F"


def _grading_period_for(day: str) -> str:
    when = date.fromisoformat(day)
    for title, _start, end, _closed in GRADING_PERIODS:
        if when <= end:
            return title
    return GRADING_PERIODS[-1][0]


def _flag_fragment(status: str, late: bool) -> str:
    flags = {
        "inProgress": status == "submitted",
        "incomplete": status == "partially graded",
        "late": late,
        "missing": status == "not submitted",
    }
    return "".join(f',"{k}":"{"true" if v else "false"}"' for k, v in flags.items())


_SCORE_STATUS_FRAGMENTS = _pool("scoreStatus", SCORE_STATUSES)
_COMMENT_FRAGMENTS = np.array([_frag("comment", c) for c in COMMENTS] + [""] * (len(COMMENTS) * 8), dtype=object)
_FLAG_FRAGMENTS = np.array([_flag_fragment(s, late) for s in SCORE_STATUSES for late in (False, True)], dtype=object)
_RUBRIC_FRAGMENTS = [_frag("textScore", level) for level in RUBRIC_LEVELS]
_LETTER_FRAGMENTS = {letter: _frag("textScore", letter) for _floor, letter in LETTER_GRADES}


# --------------------------------------------------------------------------------------------------
# generation


def generate(
    preset: str = "tiny", seed: int = 42, api: str = "1.2", base_url: str = "http://127.0.0.1"
) -> Dataset:
    """Build a whole district for ``preset``; deterministic in (preset, seed, api, base_url)."""
    if api not in ("1.1", "1.2"):
        raise ValueError(f"api must be '1.1' or '1.2', got {api!r}")
    try:
        sizes = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}") from None
    collecting = gc.isenabled()
    gc.disable()  # millions of short-lived strings: the cyclic collector only costs time here
    try:
        return _Generation(sizes, preset, seed, api, base_url.rstrip("/")).run()
    finally:
        if collecting:
            gc.enable()


_CHUNK_ROWS = 100_000


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


class _Generation:
    def __init__(self, sizes: Preset, preset: str, seed: int, api: str, base_url: str) -> None:
        self.sizes = sizes
        self.preset = preset
        self.seed = seed
        self.api = api
        self.factory = RecordFactory(api, base_url, seed)
        self.collections: dict[str, CollectionData] = {}
        self.as_of_ms = epoch_ms(DATA_AS_OF)
        self.start_ms = epoch_ms(SCHOOL_YEAR_START)

    @property
    def v12(self) -> bool:
        return self.api == "1.2"

    def run(self) -> Dataset:
        self._rostering()
        self._categories()
        self._score_scales()
        self._line_items()
        self._results()
        if self.v12:
            self._assessment_line_items()
            self._assessment_results()
        f = self.factory
        f.closed_grading_periods = {f.session_ids[t] for t, *_rest, closed in GRADING_PERIODS if closed}
        return Dataset(self.api, self.preset, self.seed, f.base_url, self.collections, f)

    # rostering: small collections, built as dicts -------------------------------------------------
    def _dict_collection(self, name: str, records: list[dict[str, Any]]) -> None:
        self.collections[name] = CollectionData([r["sourcedId"] for r in records], [encode_json(r) for r in records])

    def _base(self, sourced_id: str, legacy: str, modified: datetime) -> dict[str, Any]:
        record: dict[str, Any] = {
            "sourcedId": sourced_id,
            "status": "active",
            "dateLastModified": format_timestamp(modified),
        }
        if self.v12:
            record["metadata"] = {"ic": {"legacysourceId": legacy}}
        return record

    def _rostering(self) -> None:
        f, s = self.factory, self.sizes
        rng = _rng(self.seed, 1)
        modified = SCHOOL_YEAR_START - timedelta(days=30)
        org_ids, org_legacy = f.new_ids(rng, "org", 1 + s.schools)
        district = self._base(org_ids[0], org_legacy[0], modified) | {
            "name": "Sandbox Unified School District",
            "type": "district",
            "identifier": org_legacy[0],
        }
        schools = [
            self._base(org_ids[1 + i], org_legacy[1 + i], modified)
            | {
                "name": f"Sandbox School {i + 1:02d}",
                "type": "school",
                "identifier": org_legacy[1 + i],
                "parent": f.ref("org", org_ids[0]),
            }
            for i in range(s.schools)
        ]
        self.school_ids = org_ids[1:]
        self._dict_collection("orgs", [district, *schools])
        self._dict_collection("schools", schools)

        titles = ["2026-2027"] + [t for t, *_ in TERMS] + [g for g, *_ in GRADING_PERIODS]
        session_ids, session_legacy = f.new_ids(rng, "academicSession", len(titles))
        f.session_ids = dict(zip(titles, session_ids, strict=True))
        legacy_of = dict(zip(titles, session_legacy, strict=True))
        sessions = [
            self._base(session_ids[0], session_legacy[0], modified)
            | {
                "title": "2026-2027",
                "startDate": SCHOOL_YEAR_START.date().isoformat(),
                "endDate": SCHOOL_YEAR_END.date().isoformat(),
                "type": "schoolYear",
                "schoolYear": "2027",
            }
        ]
        for title, start, end in TERMS:
            sessions.append(
                self._base(f.session_ids[title], legacy_of[title], modified)
                | {
                    "title": title,
                    "startDate": start.isoformat(),
                    "endDate": end.isoformat(),
                    "type": "semester" if self.v12 else "term",
                    "parent": f.ref("academicSession", session_ids[0]),
                    "schoolYear": "2027",
                }
            )
        for title, start, end, _closed in GRADING_PERIODS:
            term = "S1" if end <= TERMS[0][2] else "S2"
            sessions.append(
                self._base(f.session_ids[title], legacy_of[title], modified)
                | {
                    "title": title,
                    "startDate": start.isoformat(),
                    "endDate": end.isoformat(),
                    "type": "gradingPeriod",
                    "parent": f.ref("academicSession", f.session_ids[term]),
                    "schoolYear": "2027",
                }
            )
        self._dict_collection("academicSessions", sessions)
        self._dict_collection("terms", [x for x in sessions if x["type"] in ("semester", "term")])
        self._dict_collection("gradingPeriods", [x for x in sessions if x["type"] == "gradingPeriod"])

        # students: a pool per school; each class draws its roster from its school's pool
        pool = max(s.students_per_class + 2, s.classes_per_school * s.students_per_class // 6)
        user_ids, user_legacy = f.new_ids(rng, "user", pool * s.schools)
        self.student_ids = user_ids
        given = rng.integers(0, len(GIVEN_NAMES), len(user_ids)).tolist()
        family = rng.integers(0, len(FAMILY_NAMES), len(user_ids)).tolist()
        students = []
        for n, (sid, legacy) in enumerate(zip(user_ids, user_legacy, strict=True)):
            school = self.school_ids[n // pool]
            f.school_students.setdefault(school, set()).add(sid)
            record = self._base(sid, legacy, modified) | {
                "enabledUser": "true",
                "givenName": GIVEN_NAMES[given[n]],
                "familyName": FAMILY_NAMES[family[n]],
                "identifier": legacy,
            }
            if self.v12:
                record["roles"] = [{"roleType": "primary", "role": "student", "org": f.ref("org", school)}]
            else:
                record["role"] = "student"
                record["orgs"] = [f.ref("org", school)]
            record["grades"] = ["10"]
            students.append(record)
        self._dict_collection("users", students)
        self._dict_collection("students", students)

        course_ids, course_legacy = f.new_ids(rng, "course", len(SUBJECTS) * s.schools)
        courses = [
            self._base(cid, legacy, modified)
            | {
                "title": f"{SUBJECTS[n % len(SUBJECTS)]} 10",
                "courseCode": f"{SUBJECTS[n % len(SUBJECTS)][:3].upper()}10",
                "org": f.ref("org", self.school_ids[n // len(SUBJECTS)]),
            }
            for n, (cid, legacy) in enumerate(zip(course_ids, course_legacy, strict=True))
        ]
        self._dict_collection("courses", courses)

        class_total = s.classes_per_school * s.schools
        class_ids, class_legacy = f.new_ids(rng, "class", class_total)
        self.class_ids = class_ids
        self.roster = np.zeros((class_total, s.students_per_class), dtype=np.int64)
        classes = []
        for n, (cid, legacy) in enumerate(zip(class_ids, class_legacy, strict=True)):
            school_index = n // s.classes_per_school
            school = self.school_ids[school_index]
            subject_index = n % len(SUBJECTS)
            members = np.sort(school_index * pool + rng.choice(pool, s.students_per_class, replace=False))
            self.roster[n] = members
            f.class_students[cid] = {user_ids[m] for m in members.tolist()}
            f.school_classes.setdefault(school, set()).add(cid)
            title = f"{SUBJECTS[subject_index]} 10 — Period {n % 7 + 1}"
            f.class_info[cid] = {"school": school, "title": title, "index": n}
            classes.append(
                self._base(cid, legacy, modified)
                | {
                    "title": title,
                    "classCode": f"{SUBJECTS[subject_index][:3].upper()}10-{n + 1}",
                    "classType": "scheduled",
                    "location": f"Room {100 + n % 300}",
                    "course": f.ref("course", course_ids[school_index * len(SUBJECTS) + subject_index]),
                    "school": f.ref("org", school),
                    "terms": [f.ref("academicSession", f.session_ids[t]) for t, *_ in TERMS],
                    "periods": [str(n % 7 + 1)],
                }
            )
        self._dict_collection("classes", classes)

    # gradebook: columnar ----------------------------------------------------------------------------
    def _categories(self) -> None:
        f, s = self.factory, self.sizes
        rng = _rng(self.seed, 2)
        per_class = s.categories_per_class
        count = len(self.class_ids) * per_class
        titles = [CATEGORY_TITLES[i % per_class % len(CATEGORY_TITLES)] for i in range(count)]
        weights = rng.dirichlet(np.ones(per_class), len(self.class_ids)).round(2).ravel().tolist()
        modified = _between_ms(rng, self.start_ms, self.as_of_ms, count)
        ids, blobs = f.categories(rng, titles, weights, modified, deleted_share=0.03)
        for n, cid in enumerate(self.class_ids):
            f.class_categories[cid] = ids[n * per_class : (n + 1) * per_class]
        self.category_titles = dict(zip(ids, titles, strict=True))
        self.collections["categories"] = CollectionData(ids, blobs)

    def _score_scales(self) -> None:
        f = self.factory
        rng = _rng(self.seed, 3)
        ids, legacy = f.new_ids(rng, "scoreScale", len(self.class_ids) * len(SCALE_KINDS))
        records = []
        for n, sid in enumerate(ids):
            class_index, kind_index = divmod(n, len(SCALE_KINDS))
            kind = SCALE_KINDS[kind_index]
            cid = self.class_ids[class_index]
            f.class_scales.setdefault(cid, {})[kind] = sid
            records.append(score_scale_record(f, sid, legacy[n], cid, kind, format_timestamp(SCHOOL_YEAR_START)))
        if self.v12:  # 1.1 has no score scales; drawing the ids anyway keeps legacy numbering aligned
            self._dict_collection("scoreScales", records)

    def _line_items(self) -> None:
        f, s = self.factory, self.sizes
        rng = _rng(self.seed, 4)
        per_class = s.line_items_per_class
        class_total = len(self.class_ids)
        count = class_total * per_class
        class_index = np.repeat(np.arange(class_total), per_class)
        class_ids = np.array(self.class_ids, dtype=object)[class_index].tolist()
        category_pick = rng.integers(0, s.categories_per_class, count).tolist()
        categories = [f.class_categories[c][k] for c, k in zip(class_ids, category_pick, strict=True)]
        kind_index = rng.choice(len(SCALE_KINDS), count, p=(0.5, 0.35, 0.15))
        kinds = [SCALE_KINDS[k] for k in kind_index.tolist()]
        point_max = np.array([10.0, 20.0, 25.0, 50.0, 100.0])[rng.integers(0, 5, count)]
        value_max = np.where(kind_index == 0, point_max, np.where(kind_index == 1, 100.0, 4.0)).tolist()
        day = 86_400_000
        assign_ms = self.start_ms + rng.integers(0, 95, count) * day + 8 * 3_600_000
        due_ms = assign_ms + rng.integers(1, 15, count) * day + 15 * 3_600_000 + 59 * 60_000
        modified = _between_ms(rng, assign_ms, self.as_of_ms, count)
        topics = rng.integers(0, len(LINE_ITEM_TOPICS), count).tolist()
        has_description = (rng.random(count) < 0.6).tolist()
        titles = [
            f"{self.category_titles[c]} {n % per_class + 1}: {LINE_ITEM_TOPICS[t]}"
            for n, (c, t) in enumerate(zip(categories, topics, strict=True))
        ]
        descriptions = [
            f"Assignment {n % per_class + 1} — {LINE_ITEM_TOPICS[t]}" if d else None
            for n, (t, d) in enumerate(zip(topics, has_description, strict=True))
        ]
        ids, blobs = f.line_item_records(
            rng, class_ids, categories, kinds, value_max, titles, descriptions, assign_ms, due_ms, modified, 0.01
        )
        self.collections["lineItems"] = CollectionData(ids, blobs)

    def _results(self) -> None:
        f, s = self.factory, self.sizes
        rng = _rng(self.seed, 5)
        classes = len(self.class_ids)
        per_class = s.line_items_per_class * s.students_per_class
        class_index = np.repeat(np.arange(classes), per_class)
        line_item = class_index * s.line_items_per_class + np.tile(
            np.repeat(np.arange(s.line_items_per_class), s.students_per_class), classes
        )
        seat = np.tile(np.arange(s.students_per_class), classes * s.line_items_per_class)
        student_index = self.roster[class_index, seat]
        pending = rng.random(len(line_item)) < s.pending_share
        student_ids = np.array(self.student_ids, dtype=object)
        f.pending_results = list(zip(line_item[pending].tolist(), student_ids[student_index[pending]].tolist(), strict=True))
        keep = ~pending
        line_item, student_index = line_item[keep], student_index[keep]
        ids: list[str] = []
        blobs: list[bytes] = []
        for start in range(0, len(line_item), _CHUNK_ROWS):  # chunks bound the transient fragment lists
            chunk = slice(start, start + _CHUNK_ROWS)
            chunk_ids, chunk_blobs = f.results(
                rng, line_item[chunk], student_ids[student_index[chunk]].tolist(), None, self.as_of_ms
            )
            ids += chunk_ids
            blobs += chunk_blobs
        self.collections["results"] = CollectionData(ids, blobs)

    def _assessment_line_items(self) -> None:
        f, s = self.factory, self.sizes
        rng = _rng(self.seed, 6)
        count = s.assessments_per_school * s.schools
        ids, legacy = f.new_ids(rng, "assessmentLineItem", count)
        stamps = iso_ms(_between_ms(rng, self.start_ms, self.as_of_ms, count))
        records = []
        for n, sid in enumerate(ids):
            school_index, k = divmod(n, s.assessments_per_school)
            first_class = self.class_ids[school_index * s.classes_per_school]
            records.append(
                assessment_line_item_record(
                    f,
                    sid,
                    legacy[n],
                    stamps[n],
                    title=ASSESSMENT_TITLES[0] if k == 0 else f"{ASSESSMENT_TITLES[0]}: {ASSESSMENT_TITLES[1 + (k - 1) % 5]}",
                    school=self.school_ids[school_index],
                    class_id=first_class if k == 1 else None,
                    parent=ids[school_index * s.assessments_per_school] if k > 0 else None,
                    scale=f.class_scales[first_class]["percent"],
                )
            )
        self._dict_collection("assessmentLineItems", records)

    def _assessment_results(self) -> None:
        f = self.factory
        rng = _rng(self.seed, 7)
        items: list[str] = []
        students: list[str] = []
        for item_id, info in f.assessment_items.items():
            members = sorted(f.school_students[info["school"]])
            items.extend([item_id] * len(members))
            students.extend(members)
        pending = (rng.random(len(items)) < self.sizes.pending_share).tolist()
        f.pending_assessment_results = [(a, b) for a, b, p in zip(items, students, pending, strict=True) if p]
        keep_items = [a for a, p in zip(items, pending, strict=True) if not p]
        keep_students = [b for b, p in zip(students, pending, strict=True) if not p]
        ids, blobs = f.assessment_results(rng, keep_items, keep_students, None, self.as_of_ms)
        self.collections["assessmentResults"] = CollectionData(ids, blobs)


def score_scale_record(
    f: RecordFactory, sourced_id: str, legacy: str, class_id: str, kind: str, modified: str
) -> dict[str, Any]:
    return {
        "sourcedId": sourced_id,
        "status": "active",
        "dateLastModified": modified,
        "metadata": {"ic": {"legacysourceId": legacy}},
        "title": f"{f.class_info[class_id]['title']} — {kind.title()}",
        "type": kind,
        "class": f.ref("class", class_id),
        "scoreScaleValue": _SCALE_VALUES[kind],
    }


def assessment_line_item_record(
    f: RecordFactory,
    sourced_id: str,
    legacy: str,
    modified: str,
    *,
    title: str,
    school: str,
    class_id: str | None,
    parent: str | None,
    scale: str,
) -> dict[str, Any]:
    """A district benchmark (or one of its parts); registers it for assessment results."""
    record: dict[str, Any] = {
        "sourcedId": sourced_id,
        "status": "active",
        "dateLastModified": modified,
        "metadata": {"ic": {"legacysourceId": legacy}},
        "title": title,
        "description": "Benchmark assessment",
    }
    if class_id:
        record["class"] = f.ref("class", class_id)
    if parent:
        record["parentAssessmentLineItem"] = f.ref("assessmentLineItem", parent)
    record["scoreScale"] = f.ref("scoreScale", scale)
    record["resultValueMin"] = 0.0
    record["resultValueMax"] = 100.0
    f.assessment_items[sourced_id] = {"school": school, "min": 0.0, "max": 100.0}
    return record
