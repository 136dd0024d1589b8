"""Merge rules as validated models: match keys, master source per field, attribute mappings.

Rules are parsed from the integration YAML (see the package docstring for the shape). Everything a
rule names is checked against the entity registry at parse time, so a typo in a column name fails
the config load with the path and the fix instead of silently never matching during a run.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gradesync.entities import ENTITIES, Entity, get_entity

MasterSource = Literal["ic", "vendor", "newest"]
ApplyTo = Literal["ic", "vendor", "both"]

# OneRoster scoreStatus tokens; anything else must use the "ext:" prefix.
SCORE_STATUSES = ("exempt", "fully graded", "not submitted", "partially graded", "submitted")

# Result-like entities whose score fields default to vendor master when vendor grades are imported.
SCORE_FIELDS = ("score", "text_score", "score_status", "comment")
_GRADED_ENTITIES = ("results", "assessment_results")


class RulesError(ValueError):
    """A rule that does not fit its entity; the message names the rule path and the fix."""


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known: {', '.join(choices)}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # pydantic's "Extra inputs are not permitted" names the key but not the fix; this does both.
        if isinstance(data, dict):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in allowed:
                    raise ValueError(f"unknown key {key!r}; {_suggest(str(key), allowed)}")
        return data


# --- attribute mappings -------------------------------------------------------------------------


class _MappingBase(_Model):
    # Mappings exist mostly to bring the vendor app's attributes into IC/OneRoster shape, hence the default.
    apply_to: ApplyTo = "vendor"

    def applies_to(self, source: str) -> bool:
        return self.apply_to in (source, "both")


class RenameMapping(_MappingBase):
    """Rename a column as the source delivers it (``column``) to an entity column (``to``)."""

    type: Literal["rename"]
    column: str
    to: str

    @model_validator(mode="after")
    def _distinct(self) -> RenameMapping:
        if self.column == self.to:
            raise ValueError(f"rename of {self.column!r} to itself; remove the mapping")
        return self


class ValueMapping(_MappingBase):
    """Replace values as delivered (exact text match), e.g. vendor ``ext:`` score-status codes."""

    type: Literal["map_values"]
    column: str
    values: dict[str, Any]
    unmapped: Literal["keep", "null", "reject"] = "keep"

    @field_validator("values", mode="before")
    @classmethod
    def _text_keys(cls, value: Any) -> Any:
        # YAML reads `1: fully graded` with an int key; values are matched as text, so key on text.
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value

    @field_validator("values")
    @classmethod
    def _non_empty(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("values is empty; list at least one `delivered: replacement` pair")
        return value


class ScoreScaleMapping(_MappingBase):
    """Text scores to numbers via a score scale: ``scale[text_score]`` fills ``score``.

    Text is matched case-insensitively with whitespace collapsed. By default only a missing number is
    filled, so a score that both sides sent as a number is never replaced by a table lookup.
    """

    type: Literal["score_scale"]
    column: str = "text_score"
    to: str = "score"
    scale: dict[str, float]
    overwrite: bool = False
    unmapped: Literal["keep", "reject"] = "keep"

    @field_validator("scale", mode="before")
    @classmethod
    def _text_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value

    @field_validator("scale")
    @classmethod
    def _usable(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("scale is empty; list `text: number` pairs such as `A: 95`")
        bad = [k for k, v in value.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"scale values must be finite numbers; fix {bad}")
        normalised = [" ".join(k.split()).casefold() for k in value]
        if len(set(normalised)) != len(normalised):
            raise ValueError("scale has keys that differ only in case or spacing; keep one of each")
        return value


class ScaleMapping(_MappingBase):
    """Linear rescale of a numeric column: ``value * factor + offset``, optionally rounded to
    ``round`` decimals (half to even, as numpy rounds)."""

    type: Literal["scale"]
    column: str
    factor: float = 1.0
    offset: float = 0.0
    round: int | None = Field(default=None, ge=0, le=10)

    @model_validator(mode="after")
    def _finite(self) -> ScaleMapping:
        if not (math.isfinite(self.factor) and math.isfinite(self.offset)):
            raise ValueError("factor and offset must be finite numbers")
        return self


class DefaultMapping(_MappingBase):
    """Fill missing values of a column with a constant (typed like the column)."""

    type: Literal["default"]
    column: str
    value: Any


AttributeMapping = Annotated[
    RenameMapping | ValueMapping | ScoreScaleMapping | ScaleMapping | DefaultMapping,
    Field(discriminator="type"),
]

# Order in which mapping types run (list order within a type): renames and value maps see values as
# delivered; scale, score scale and defaults see typed values.
MAPPING_ORDER = ("rename", "map_values", "scale", "score_scale", "default")


def _check_value_for_kind(kind: str, value: Any, where: str) -> None:
    """Raise RulesError when a constant from the YAML cannot be stored in a column of ``kind``."""
    if value is None:
        return
    if kind in ("str", "ref"):
        ok = isinstance(value, str)
        want = "a string"
    elif kind == "json":
        ok = isinstance(value, str | dict | list)
        want = "JSON text or a mapping"
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        want = "a finite number"
    elif kind == "flag":
        ok = isinstance(value, bool)
        want = "true or false"
    elif kind == "datetime":
        want = "an ISO 8601 date-time such as 2026-09-01T00:00:00Z"
        try:
            from gradesync.records import parse_datetime  # pyarrow: only when a datetime default is checked

            ok = isinstance(value, datetime) or (isinstance(value, str) and bool(parse_datetime(value)))
        except ValueError:
            ok = False
    elif kind == "date":
        want = "an ISO 8601 date such as 2026-09-01"
        try:
            ok = isinstance(value, date) or (isinstance(value, str) and bool(date.fromisoformat(value)))
        except ValueError:
            ok = False
    else:  # pragma: no cover - registry kinds are closed
        raise AssertionError(kind)
    if not ok:
        raise RulesError(f"{where}: {value!r} does not fit a {kind} column; use {want}")


# --- per-entity rules ---------------------------------------------------------------------------


class EntityMergeRules(_Model):
    """How one entity's IC and vendor records become one record per key.

    - ``match_keys``: natural keys tried, in order, after sourced_id; put the most specific first.
      Text and reference columns compare case-folded, trimmed and with spaces collapsed; dates,
      date-times and numbers compare exactly. A key with a missing component never matches.
    - ``default_master`` / ``fields``: which source wins each column. ``date_last_modified`` is
      ``newest`` unless set in ``fields``: a merged record is as recent as its newest side.
    - ``fill_nulls``: when the master's value is missing, take the other side's (lineage then names the
      side that supplied the value). Off means the master's null wins.
    - ``mappings``: rename / map_values / scale / score_scale / default; see ``MAPPING_ORDER``.
    """

    match_keys: list[list[str]] = []
    default_master: MasterSource = "ic"
    fields: dict[str, MasterSource] = {}
    fill_nulls: bool = True
    mappings: list[AttributeMapping] = []

    @field_validator("match_keys")
    @classmethod
    def _keys_shape(cls, value: list[list[str]]) -> list[list[str]]:
        for i, key in enumerate(value):
            if not key:
                raise ValueError(f"match_keys[{i}] is empty; list the columns of the natural key")
            if len(set(key)) != len(key):
                raise ValueError(f"match_keys[{i}] repeats a column; list each column once")
            if "sourced_id" in key:
                raise ValueError(
                    f"match_keys[{i}] contains sourced_id; sourced_id is always matched first, "
                    "natural keys are for records whose ids differ"
                )
        return value

    @field_validator("mappings")
    @classmethod
    def _one_rename_per_target(cls, value: list[Any]) -> list[Any]:
        seen: dict[tuple[str, str], int] = {}
        for i, m in enumerate(value):
            if isinstance(m, RenameMapping):
                for side in ("ic", "vendor"):
                    if m.applies_to(side):
                        key = (side, m.to)
                        if key in seen:
                            raise ValueError(
                                f"mappings[{i}] renames to {m.to!r} for {side} records, as mappings[{seen[key]}] "
                                "already does; keep one rename per target column"
                            )
                        seen[key] = i
        return value

    def master_for(self, column: str) -> MasterSource:
        """The rule that decides ``column``; the merged record always keeps IC's sourced_id."""
        if column == "sourced_id":
            return "ic"
        if column in self.fields:
            return self.fields[column]
        if column == "date_last_modified":
            return "newest"
        return self.default_master

    def fingerprint(self) -> str:
        """Short, order-insensitive hash of the rules; lineage carries it so a row names its rule set."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def check_for(self, entity: Entity, *, path: str = "") -> None:
        """Raise RulesError unless every column the rules name exists (with a fitting type) in ``entity``."""
        prefix = f"{path}." if path else ""
        by_column = {f.column: f for f in entity.fields}
        columns = list(by_column)

        def need(column: str, where: str, kinds: tuple[str, ...] | None = None) -> None:
            if column not in by_column:
                raise RulesError(
                    f"{prefix}{where}: {column!r} is not a {entity.name} column; {_suggest(column, columns)}"
                )
            kind = by_column[column].kind
            if kinds is not None and kind not in kinds:
                raise RulesError(
                    f"{prefix}{where}: {column!r} is a {kind} column; this rule needs a {' or '.join(kinds)} column"
                )

        for i, key in enumerate(self.match_keys):
            for j, column in enumerate(key):
                need(column, f"match_keys[{i}][{j}]")
                if by_column[column].kind == "json":
                    raise RulesError(
                        f"{prefix}match_keys[{i}][{j}]: {column!r} is JSON text; use scalar columns"
                    )
        for column in self.fields:
            if column == "sourced_id":
                raise RulesError(
                    f"{prefix}fields.sourced_id: sourced_id is the match key, not a mastered field; the merged "
                    "record always keeps the IC sourced_id. Remove it"
                )
            need(column, f"fields.{column}")
        for i, m in enumerate(self.mappings):
            where = f"mappings[{i}]"
            if isinstance(m, RenameMapping):
                need(m.to, f"{where}.to")
            elif isinstance(m, ValueMapping):
                need(m.column, f"{where}.column", ("str", "ref", "flag"))
                kind = by_column[m.column].kind
                for key, target in m.values.items():
                    tw = f"{where}.values[{key!r}]"
                    _check_value_for_kind("str" if kind == "ref" else kind, target, f"{prefix}{tw}")
                    if m.column == "score_status" and target is not None:
                        if target not in SCORE_STATUSES and not str(target).startswith("ext:"):
                            raise RulesError(
                                f"{prefix}{tw}: {target!r} is not a OneRoster score status; use one of "
                                f"{', '.join(SCORE_STATUSES)} or an 'ext:' code"
                            )
            elif isinstance(m, ScoreScaleMapping):
                need(m.column, f"{where}.column", ("str",))
                need(m.to, f"{where}.to", ("float",))
            elif isinstance(m, ScaleMapping):
                need(m.column, f"{where}.column", ("float",))
            elif isinstance(m, DefaultMapping):
                if m.column == "sourced_id":
                    raise RulesError(
                        f"{prefix}{where}.column: sourced_id cannot have a default; it identifies the record"
                    )
                need(m.column, f"{where}.column")
                if m.value is None:
                    raise RulesError(f"{prefix}{where}.value: a default of null does nothing; give a value")
                _check_value_for_kind(by_column[m.column].kind, m.value, f"{prefix}{where}.value")


# --- per-integration rules ----------------------------------------------------------------------


class MergeRules(_Model):
    """Merge rules of one integration: one optional ``EntityMergeRules`` per entity name.

    An entity without rules gets ``default_rules(name, vendor_grades=...)``. ``reject_rate_threshold``
    is the share of input records (0..1) that may be rejected before the run fails.
    """

    reject_rate_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    # Whether this integration imports grades from the vendor app; governs the default score masters.
    vendor_grades: bool = True
    categories: EntityMergeRules | None = None
    score_scales: EntityMergeRules | None = None
    line_items: EntityMergeRules | None = None
    results: EntityMergeRules | None = None
    assessment_line_items: EntityMergeRules | None = None
    assessment_results: EntityMergeRules | None = None

    @model_validator(mode="after")
    def _fits_entities(self) -> MergeRules:
        for name, rules in self.configured().items():
            rules.check_for(get_entity(name), path=name)
        return self

    def configured(self) -> dict[str, EntityMergeRules]:
        """Entity rules written in the config (entities left out use the defaults)."""
        return {name: rules for name in ENTITIES if (rules := getattr(self, name)) is not None}

    def for_entity(self, name: str) -> EntityMergeRules:
        """The rules to merge ``name`` with: configured ones, else the defaults."""
        get_entity(name)
        rules = getattr(self, name)
        return rules if rules is not None else default_rules(name, vendor_grades=self.vendor_grades)


def default_rules(entity_name: str, *, vendor_grades: bool = True) -> EntityMergeRules:
    """Sensible rules when the config says nothing: IC masters roster-like fields; vendor masters
    score, text_score, score_status and comment of (assessment) results when vendor grades are imported.

    Natural keys: a line item is the same when class, title and due date agree (both sides created it);
    a result is the same when line item and student agree (one result per student per line item).
    Categories, score scales and assessment line items have no safe natural key and match by id only.
    """
    get_entity(entity_name)
    match_keys: list[list[str]] = {
        "line_items": [["class_sourced_id", "title", "due_date"]],
        "results": [["line_item_sourced_id", "student_sourced_id"]],
        "assessment_results": [["assessment_line_item_sourced_id", "student_sourced_id"]],
    }.get(entity_name, [])
    fields: dict[str, MasterSource] = {}
    if vendor_grades and entity_name in _GRADED_ENTITIES:
        fields = {column: "vendor" for column in SCORE_FIELDS}
    return EntityMergeRules(match_keys=match_keys, default_master="ic", fields=fields)
