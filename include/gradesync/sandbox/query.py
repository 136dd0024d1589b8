"""The OneRoster query protocol: filter grammar, typed comparisons, paging parameters, error bodies.

Parsing lives here, apart from the HTTP server, so unit tests exercise it without a socket and so the
server has a single place that turns bad input into the right ``imsx_StatusInfo``/``statusInfoSet``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from gradesync.sandbox.generator import encode_json, format_timestamp

DATETIME_FIELDS = frozenset({"dateLastModified", "assignDate", "dueDate"})
DATE_FIELDS = frozenset({"scoreDate", "startDate", "endDate"})
NUMBER_FIELDS = frozenset({"score", "weight", "resultValueMin", "resultValueMax", "scorePercentile"})
OPERATORS = ("!=", ">=", "<=", "=", ">", "<", "~")
REF_KEYS = frozenset({"sourcedId", "href", "type"})


class ApiError(Exception):
    """An error answer: HTTP status, OneRoster code minor and a human description."""

    def __init__(self, status: int, code_minor: str, description: str, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.status = status
        self.code_minor = code_minor
        self.description = description
        self.headers = headers or {}


def error_body(api: str, code_minor: str, description: str) -> bytes:
    """1.2 answers one ``imsx_StatusInfo``; 1.1 answers a ``statusInfoSet`` list of them."""
    status_info = {
        "imsx_codeMajor": "failure",
        "imsx_severity": "error",
        "imsx_description": description,
        "imsx_CodeMinor": {
            "imsx_codeMinorField": [
                {"imsx_codeMinorFieldName": "TargetEndSystem", "imsx_codeMinorFieldValue": code_minor}
            ]
        },
    }
    if api == "1.1":
        return encode_json({"statusInfoSet": [status_info]})
    return encode_json(status_info)


@dataclass(frozen=True)
class Predicate:
    field: str  # possibly dotted, e.g. "class.sourcedId"
    op: str
    value: str


@dataclass(frozen=True)
class Filter:
    predicates: tuple[Predicate, ...]
    joiner: str = "AND"  # "AND" | "OR"; irrelevant for a single predicate


_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def parse_filter(text: str) -> Filter:
    """Parse ``field op 'value' [AND|OR field op 'value']``.

    Values are single-quoted; a quote inside a value is written ``\\'`` or ``''``. Whitespace around
    operators and the logical keyword is optional/ignored; keywords are case-insensitive.
    """
    pos = 0
    predicates: list[Predicate] = []
    joiner = "AND"

    def fail(why: str) -> ApiError:
        return ApiError(400, "invalid_filter_field", f"invalid filter {text!r}: {why}")

    def skip_space(p: int) -> int:
        while p < len(text) and text[p] == " ":
            p += 1
        return p

    while True:
        pos = skip_space(pos)
        match = _FIELD.match(text, pos)
        if not match:
            raise fail(f"expected a field name at position {pos}")
        field = match.group(0)
        pos = skip_space(match.end())
        op = next((o for o in OPERATORS if text.startswith(o, pos)), None)
        if op is None:
            raise fail(f"expected one of {' '.join(OPERATORS)} after {field!r}")
        pos = skip_space(pos + len(op))
        if pos >= len(text) or text[pos] != "'":
            raise fail(f"the value for {field!r} must be in single quotes")
        pos += 1
        value_chars: list[str] = []
        while True:
            if pos >= len(text):
                raise fail("unterminated quoted value")
            ch = text[pos]
            if ch == "\\" and pos + 1 < len(text) and text[pos + 1] in "'\\":
                value_chars.append(text[pos + 1])
                pos += 2
            elif ch == "'" and text.startswith("''", pos):
                value_chars.append("'")
                pos += 2
            elif ch == "'":
                pos += 1
                break
            else:
                value_chars.append(ch)
                pos += 1
        predicates.append(Predicate(field, op, "".join(value_chars)))
        pos = skip_space(pos)
        if pos >= len(text):
            break
        keyword = re.match(r"(AND|OR)\b", text[pos:], re.IGNORECASE)
        if not keyword:
            raise fail(f"expected AND or OR at position {pos}")
        if len(predicates) == 2:
            raise fail("at most two predicates are allowed")
        joiner = keyword.group(1).upper()
        pos += keyword.end()
    return Filter(tuple(predicates), joiner)


def check_field(field: str, known: frozenset[str], refs: frozenset[str], code_minor: str, what: str) -> None:
    """Reject fields the collection does not have: 400 with ``code_minor``."""
    head, _, rest = field.partition(".")
    if head not in known:
        raise ApiError(400, code_minor, f"unknown {what} field {field!r}")
    if rest and head != "metadata" and not (head in refs and rest in REF_KEYS):
        raise ApiError(400, code_minor, f"unknown {what} field {field!r}")


def parse_datetime(text: str) -> datetime:
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def canonical_datetime(text: str) -> str:
    """Any ISO 8601 date-time (or date) as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC."""
    return format_timestamp(parse_datetime(text))


def comparable(field: str, value: Any) -> Any:
    """A record's value in the form comparisons and sorting use (date-times canonical UTC strings)."""
    leaf = field.rsplit(".", 1)[-1]
    if value is None:
        return None
    if leaf in DATETIME_FIELDS:
        text = str(value)
        if len(text) == 24 and text[10] == "T" and text[-1] == "Z":
            return text  # already canonical: canonical UTC strings sort and compare like datetimes
        try:
            return canonical_datetime(text)
        except ValueError:
            return None
    if isinstance(value, (dict, list)):
        return encode_json(value).decode()
    return value


def filter_operand(field: str, value: str) -> Any:
    """The filter's literal converted to the field's type; a bad literal is a 400."""
    leaf = field.rsplit(".", 1)[-1]
    try:
        if leaf in DATETIME_FIELDS:
            return canonical_datetime(value)
        if leaf in DATE_FIELDS:
            return date.fromisoformat(value[:10]).isoformat()
        if leaf in NUMBER_FIELDS:
            return float(value)
    except ValueError:
        raise ApiError(400, "invalid_filter_field", f"{value!r} is not a valid value for {field}") from None
    return value


def _compare(op: str, operand: Any) -> Callable[[Any], bool]:
    if op == "~":
        needle = str(operand).lower()
        return lambda v: v is not None and needle in str(v).lower()
    if op == "!=":
        return lambda v: v is None or _coerce(v, operand) != operand
    tests: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
    }
    test = tests[op]

    def check(v: Any) -> bool:
        if v is None:
            return False
        try:
            return test(_coerce(v, operand), operand)
        except TypeError:
            return False

    return check


def _coerce(value: Any, operand: Any) -> Any:
    if isinstance(operand, float) and not isinstance(value, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value
    if isinstance(operand, str) and not isinstance(value, str):
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(value)
        return str(value)
    return value


def predicate_test(predicate: Predicate) -> Callable[[Any], bool]:
    """A test on a record's comparable value for ``predicate.field``."""
    return _compare(predicate.op, filter_operand(predicate.field, predicate.value))


def sort_key(value: Any) -> tuple[int, Any]:
    """Sort with missing values last and mixed types kept apart."""
    if value is None:
        return (3, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


@dataclass(frozen=True)
class ListParams:
    limit: int
    offset: int
    sort: str | None
    order_by: str
    filter: Filter | None
    filter_text: str | None
    fields: tuple[str, ...] | None


def parse_list_params(query: dict[str, list[str]], max_limit: int, default_limit: int = 100) -> ListParams:
    """Read limit/offset/sort/orderBy/filter/fields; a ``limit`` above ``max_limit`` is clamped."""

    def single(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    def integer(name: str, default: int, minimum: int) -> int:
        raw = single(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, "invalid_selection_field", f"{name} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise ApiError(400, "invalid_selection_field", f"{name} must be at least {minimum}, got {value}")
        return value

    limit = min(integer("limit", default_limit, 1), max_limit)
    offset = integer("offset", 0, 0)
    order_by = (single("orderBy") or "asc").lower()
    if order_by not in ("asc", "desc"):
        raise ApiError(400, "invalid_selection_field", f"orderBy must be asc or desc, got {order_by!r}")
    filter_text = single("filter")
    parsed = parse_filter(filter_text) if filter_text else None
    fields: tuple[str, ...] | None = None
    if query.get("fields"):
        fields = tuple(f.strip() for raw in query["fields"] for f in raw.split(",") if f.strip())
    sort = single("sort") or None
    return ListParams(limit, offset, sort, order_by, parsed, filter_text, fields)
