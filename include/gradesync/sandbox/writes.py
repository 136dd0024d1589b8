"""IC's write rules for PUT/POST, so write-back code meets the refusals it will meet in production.

Checked, with the answer IC-like clients should expect:
- malformed or incomplete records, unknown fields, references to unknown objects → 422 ``invaliddata``
- a result for a student not enrolled in the line item's class → 422 ``invaliddata``
- a score outside the line item's ``resultValueMin``/``resultValueMax`` → 422 ``invaliddata``
- a rubric text score that is not one of the score scale's values → 422 ``invaliddata``
- a result in a grading period whose grading window is closed → 403 ``forbidden``
A line item without a category is filed under an "Uncategorized" category, as IC does.
"""

from __future__ import annotations

from typing import Any

from gradesync.sandbox.catalog import known_fields
from gradesync.sandbox.generator import RUBRIC_LEVELS
from gradesync.sandbox.query import ApiError
from gradesync.sandbox.store import Store

# Required by the 1.2 OpenAPI schemas (and the 1.1 information model), besides the server-filled
# sourcedId/status/dateLastModified.
REQUIRED: dict[str, dict[str, tuple[str, ...]]] = {
    "1.2": {
        "categories": ("title",),
        "lineItems": ("title", "assignDate", "dueDate", "class"),
        "results": ("lineItem", "student", "scoreStatus", "scoreDate"),
        "scoreScales": ("title", "type", "class", "scoreScaleValue"),
        "assessmentLineItems": ("title",),
        "assessmentResults": ("assessmentLineItem", "student", "scoreStatus", "scoreDate"),
    },
    "1.1": {
        "categories": ("title",),
        "lineItems": ("title", "assignDate", "dueDate", "class", "category", "gradingPeriod"),
        "results": ("lineItem", "student", "scoreStatus", "score", "scoreDate"),
    },
}
REF_KINDS = {
    "class": "class",
    "school": "org",
    "category": "category",
    "gradingPeriod": "academicSession",
    "academicSession": "academicSession",
    "scoreScale": "scoreScale",
    "lineItem": "lineItem",
    "student": "user",
    "course": "course",
    "assessmentLineItem": "assessmentLineItem",
    "parentAssessmentLineItem": "assessmentLineItem",
}
REF_COLLECTIONS = {
    "class": "classes",
    "school": "orgs",
    "category": "categories",
    "gradingPeriod": "academicSessions",
    "academicSession": "academicSessions",
    "scoreScale": "scoreScales",
    "lineItem": "lineItems",
    "student": "users",
    "course": "courses",
    "assessmentLineItem": "assessmentLineItems",
    "parentAssessmentLineItem": "assessmentLineItems",
}
NUMBERS = ("score", "weight", "resultValueMin", "resultValueMax", "scorePercentile")
FLAGS = ("inProgress", "incomplete", "late", "missing")
UNCATEGORIZED_TITLE = "Uncategorized"


def _invalid(description: str) -> ApiError:
    return ApiError(422, "invaliddata", description)


class WriteRules:
    """Validates and stores client writes against the sandbox's roster facts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.factory = store.factory
        self.api = store.api

    def put(self, collection: str, sourced_id: str, record: dict[str, Any]) -> bool:
        """Validate and store ``record`` as ``sourced_id``; True when it was created."""
        record = dict(record)
        supplied = record.get("sourcedId")
        if supplied not in (None, sourced_id):
            raise _invalid(f"sourcedId {supplied!r} in the body differs from {sourced_id!r} in the path")
        record["sourcedId"] = sourced_id
        status = record.get("status", "active")
        if status not in ("active", "tobedeleted"):
            raise _invalid(f"status must be 'active' or 'tobedeleted', got {status!r}")
        record["status"] = status
        known, refs = known_fields(collection, self.api)
        unknown = sorted(set(record) - known)
        if unknown:
            raise _invalid(f"unknown field {unknown[0]!r} for {collection} in OneRoster {self.api}")
        with self.store.lock:
            if collection == "lineItems" and not record.get("category"):
                record["category"] = self._uncategorized()
            for name in REQUIRED[self.api].get(collection, ()):
                if record.get(name) in (None, ""):
                    raise _invalid(f"missing required field {name!r}")
            for name in refs:
                if name in record:
                    record[name] = self._ref(name, record[name])
            for name in NUMBERS:
                value = record.get(name)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise _invalid(f"{name} must be a number, got {value!r}")
                if value is not None:
                    record[name] = float(value)
            for name in FLAGS:
                if name in record and record[name] not in ("true", "false"):
                    raise _invalid(f'{name} must be the string "true" or "false", got {record[name]!r}')
            check = getattr(self, f"_check_{collection}", None)
            if check:
                check(record)
            record["dateLastModified"] = self.store.clock.now_text()
            ordered = {k: record[k] for k in ("sourcedId", "status", "dateLastModified") if k in record}
            ordered.update({k: v for k, v in record.items() if k not in ordered})
            created = self.store.upsert(collection, ordered)
            if collection == "lineItems":
                self._register_line_item(ordered)
            return created

    # -- references ------------------------------------------------------------------------------------
    def _ref(self, name: str, value: Any) -> dict[str, str]:
        if not isinstance(value, dict) or not isinstance(value.get("sourcedId"), str):
            raise _invalid(f"{name} must be a reference object with a sourcedId")
        target = REF_COLLECTIONS.get(name)
        sourced_id = value["sourcedId"]
        if target in self.store.collections and self.store.collection(target).get(sourced_id) is None:
            raise _invalid(f"{name} refers to unknown {target} {sourced_id!r}")
        return self.factory.ref(REF_KINDS[name], sourced_id)

    def _uncategorized(self) -> dict[str, str]:
        categories = self.store.collection("categories")
        for sid in categories.ids:
            blob = categories.get(sid)
            if blob is not None and b'"title":"Uncategorized"' in blob:
                return self.factory.ref("category", sid)
        sid = "uncategorized"
        self.store.upsert(
            "categories",
            {"sourcedId": sid, "status": "active", "dateLastModified": self.store.clock.now_text(),
             "title": UNCATEGORIZED_TITLE},
        )
        return self.factory.ref("category", sid)

    # -- per-collection rules ----------------------------------------------------------------------------
    def _check_lineItems(self, record: dict[str, Any]) -> None:  # noqa: N802 - named after the collection
        low, high = record.get("resultValueMin"), record.get("resultValueMax")
        if low is not None and high is not None and low > high:
            raise _invalid(f"resultValueMin {low} is above resultValueMax {high}")
        class_id = record["class"]["sourcedId"]
        school = self.factory.class_info.get(class_id, {}).get("school")
        if self.api == "1.2":
            if "school" not in record and school:
                record["school"] = self.factory.ref("org", school)
            if record.get("school", {}).get("sourcedId") != school:
                raise _invalid(f"school does not match class {class_id!r}'s school {school!r}")

    def _check_results(self, record: dict[str, Any]) -> None:
        line_item_id = record["lineItem"]["sourcedId"]
        facts = self.factory.line_items.get(line_item_id)
        if facts is None:
            raise _invalid(f"lineItem {line_item_id!r} has no gradebook facts")
        student = record["student"]["sourcedId"]
        if student not in self.factory.class_students.get(facts["class"], set()):
            raise _invalid(f"student {student!r} is not enrolled in class {facts['class']!r}")
        score = record.get("score")
        if score is not None and facts["min"] is not None and facts["max"] is not None:
            if not facts["min"] <= score <= facts["max"]:
                raise _invalid(
                    f"score {score} is outside the line item's range {facts['min']}..{facts['max']}"
                )
        text = record.get("textScore")
        if text is not None and facts["kind"] == "rubric" and text not in RUBRIC_LEVELS:
            raise _invalid(f"textScore {text!r} is not on the rubric scale {', '.join(RUBRIC_LEVELS)}")
        if facts["closed"]:
            raise ApiError(403, "forbidden",
                           f"the grading window for grading period {facts['gradingPeriod']!r} is closed")
        if self.api == "1.2":
            record.setdefault("class", self.factory.ref("class", facts["class"]))
            if facts["scale"]:
                record.setdefault("scoreScale", self.factory.ref("scoreScale", facts["scale"]))

    def _check_assessmentResults(self, record: dict[str, Any]) -> None:  # noqa: N802
        item = self.factory.assessment_items.get(record["assessmentLineItem"]["sourcedId"])
        score = record.get("score")
        if item and score is not None and not item["min"] <= score <= item["max"]:
            raise _invalid(f"score {score} is outside the assessment's range {item['min']}..{item['max']}")

    def _register_line_item(self, record: dict[str, Any]) -> None:
        """Keep the facts results are checked against in step with the stored line item."""
        facts = self.factory.line_items
        sid = record["sourcedId"]
        period = (record.get("gradingPeriod") or {}).get("sourcedId", "")
        scale = (record.get("scoreScale") or {}).get("sourcedId")
        kind = "points"
        if scale:
            for class_scales in self.factory.class_scales.values():
                for scale_kind, scale_id in class_scales.items():
                    if scale_id == scale:
                        kind = scale_kind
        values = {
            "class_id": record["class"]["sourcedId"],
            "kind": kind,
            "value_min": record.get("resultValueMin"),
            "value_max": record.get("resultValueMax"),
            "assign_ms": 0,
            "grading_period": period,
            "closed": period in self.factory.closed_grading_periods,
            "scale": scale,
        }
        refs = self.factory.ref_fragment("lineItem", "lineItem", sid)
        if self.api == "1.2":
            refs += self.factory.ref_fragment("class", "class", values["class_id"])
            if scale:
                refs += self.factory.ref_fragment("scoreScale", "scoreScale", scale)
        number = facts.index.get(sid)
        if number is None:
            facts.append(id=sid, refs=refs, **values)
        else:
            for name, value in values.items():
                getattr(facts, name)[number] = value
            facts.refs[number] = refs
