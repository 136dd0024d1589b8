"""The one registry of gradebook entities: endpoints, envelopes and flattened columns.

Client, staging, merge and warehouse all derive their column lists from here, so a field added to
an entity is added in one place. OneRoster references (``{"href", "sourcedId", "type"}``) flatten to
``<ref>_sourced_id``; camelCase becomes snake_case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["str", "float", "datetime", "date", "ref", "flag", "json"]

API_VERSIONS = ("1.1", "1.2")


@dataclass(frozen=True)
class Field:
    """One flattened column: ``column`` in staging and warehouse, ``source`` key in OneRoster JSON."""

    column: str
    source: str
    kind: Kind = "str"
    required: bool = False
    versions: tuple[str, ...] = API_VERSIONS


@dataclass(frozen=True)
class Entity:
    name: str  # warehouse table name, e.g. "line_items"
    collection: str  # OneRoster collection path and envelope key, e.g. "lineItems"
    singular: str  # single-object envelope key, e.g. "lineItem"
    fields: tuple[Field, ...]
    versions: tuple[str, ...] = API_VERSIONS
    # references that must point at a known record of another entity (checked at merge time)
    parents: dict[str, str] = field(default_factory=dict)

    def fields_for(self, api_version: str) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if api_version in f.versions)

    def columns(self, api_version: str | None = None) -> list[str]:
        fields = self.fields if api_version is None else self.fields_for(api_version)
        return [f.column for f in fields]

    @property
    def required_columns(self) -> list[str]:
        return [f.column for f in self.fields if f.required]


_V12 = ("1.2",)

_COMMON = (
    Field("sourced_id", "sourcedId", "str", required=True),
    Field("status", "status", "str", required=True),
    Field("date_last_modified", "dateLastModified", "datetime", required=True),
    Field("metadata", "metadata", "json"),
)

CATEGORIES = Entity(
    "categories",
    "categories",
    "category",
    _COMMON
    + (
        Field("title", "title", "str", required=True),
        Field("weight", "weight", "float", versions=_V12),
    ),
)

LINE_ITEMS = Entity(
    "line_items",
    "lineItems",
    "lineItem",
    _COMMON
    + (
        Field("title", "title", "str", required=True),
        Field("description", "description"),
        Field("assign_date", "assignDate", "datetime"),
        Field("due_date", "dueDate", "datetime"),
        Field("class_sourced_id", "class", "ref", required=True),
        Field("school_sourced_id", "school", "ref", versions=_V12),
        Field("category_sourced_id", "category", "ref"),
        Field("grading_period_sourced_id", "gradingPeriod", "ref"),
        Field("academic_session_sourced_id", "academicSession", "ref", versions=_V12),
        Field("score_scale_sourced_id", "scoreScale", "ref", versions=_V12),
        Field("result_value_min", "resultValueMin", "float"),
        Field("result_value_max", "resultValueMax", "float"),
    ),
    parents={"category_sourced_id": "categories"},
)

RESULTS = Entity(
    "results",
    "results",
    "result",
    _COMMON
    + (
        Field("line_item_sourced_id", "lineItem", "ref", required=True),
        Field("student_sourced_id", "student", "ref", required=True),
        Field("class_sourced_id", "class", "ref", versions=_V12),
        Field("score_scale_sourced_id", "scoreScale", "ref", versions=_V12),
        Field("score_status", "scoreStatus", "str", required=True),
        Field("score", "score", "float"),
        Field("text_score", "textScore", "str", versions=_V12),
        Field("score_date", "scoreDate", "date"),
        Field("comment", "comment"),
        Field("in_progress", "inProgress", "flag", versions=_V12),
        Field("incomplete", "incomplete", "flag", versions=_V12),
        Field("late", "late", "flag", versions=_V12),
        Field("missing", "missing", "flag", versions=_V12),
    ),
    parents={"line_item_sourced_id": "line_items"},
)

SCORE_SCALES = Entity(
    "score_scales",
    "scoreScales",
    "scoreScale",
    _COMMON
    + (
        Field("title", "title", "str", required=True),
        Field("type", "type"),
        Field("course_sourced_id", "course", "ref"),
        Field("class_sourced_id", "class", "ref"),
        Field("score_scale_value", "scoreScaleValue", "json"),
    ),
    versions=_V12,
)

ASSESSMENT_LINE_ITEMS = Entity(
    "assessment_line_items",
    "assessmentLineItems",
    "assessmentLineItem",
    _COMMON
    + (
        Field("title", "title", "str", required=True),
        Field("description", "description"),
        Field("class_sourced_id", "class", "ref"),
        Field("parent_assessment_line_item_sourced_id", "parentAssessmentLineItem", "ref"),
        Field("score_scale_sourced_id", "scoreScale", "ref"),
        Field("result_value_min", "resultValueMin", "float"),
        Field("result_value_max", "resultValueMax", "float"),
    ),
    versions=_V12,
)

ASSESSMENT_RESULTS = Entity(
    "assessment_results",
    "assessmentResults",
    "assessmentResult",
    _COMMON
    + (
        Field("assessment_line_item_sourced_id", "assessmentLineItem", "ref", required=True),
        Field("student_sourced_id", "student", "ref", required=True),
        Field("score_status", "scoreStatus", "str", required=True),
        Field("score", "score", "float"),
        Field("text_score", "textScore"),
        Field("score_date", "scoreDate", "date"),
        Field("score_scale_sourced_id", "scoreScale", "ref"),
        Field("score_percentile", "scorePercentile", "float"),
        Field("comment", "comment"),
        Field("in_progress", "inProgress", "flag"),
        Field("incomplete", "incomplete", "flag"),
        Field("late", "late", "flag"),
        Field("missing", "missing", "flag"),
    ),
    versions=_V12,
    parents={"assessment_line_item_sourced_id": "assessment_line_items"},
)

# Load order: parents before children, so reference checks see their targets.
ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        CATEGORIES,
        SCORE_SCALES,
        LINE_ITEMS,
        RESULTS,
        ASSESSMENT_LINE_ITEMS,
        ASSESSMENT_RESULTS,
    )
}


def entities_for(api_version: str) -> list[str]:
    """Entity names the given OneRoster version serves, in load order."""
    return [name for name, e in ENTITIES.items() if api_version in e.versions]


def get_entity(name: str) -> Entity:
    try:
        return ENTITIES[name]
    except KeyError:
        raise KeyError(f"unknown entity {name!r}; known: {', '.join(ENTITIES)}") from None
