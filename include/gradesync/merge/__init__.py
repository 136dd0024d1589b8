"""Master-field dedupe and merge: one record per gradebook entity from IC and the vendor app.

Grade exchange has two sources for one gradebook: Infinite Campus and the vendor's app. Without
rules the same line item appears twice and grades are overwritten with no record of who won. Here the
rules are data (versioned in the integration YAML, validated at parse time) and every merged record
carries ``field_sources``: which source supplied each column, and how the two records were paired.

Rules YAML, one block per integration (every key is optional; an entity left out gets
``default_rules(name)``)::

    merge_rules:
      reject_rate_threshold: 0.02      # fail the run when more than 2% of input records are rejected
      vendor_grades: true              # grades come from the vendor app: vendor masters score fields
      line_items:
        match_keys:                    # tried in order after sourced_id; most specific first
          - [class_sourced_id, title, due_date]   # text compared case-folded, trimmed, spaces collapsed
        default_master: ic             # ic | vendor | newest (by dateLastModified; ties go to IC)
        fields:
          description: vendor
      results:
        match_keys:
          - [line_item_sourced_id, student_sourced_id]
        default_master: ic
        fields:
          score: vendor
          text_score: vendor
          score_status: vendor
          comment: vendor
          late: newest
        fill_nulls: true               # a missing master value is taken from the other side
        mappings:                      # apply_to: vendor (default) | ic | both
          - {type: rename, column: grade, to: score}
          - type: map_values           # exact text as delivered; unmapped: keep | null | reject
            column: score_status
            values: {"ext:GR": fully graded, "ext:MS": not submitted, "ext:EX": exempt}
            unmapped: reject
          - {type: scale, column: score, factor: 100, round: 2}     # vendor scores 0..1 -> 0..100
          - type: score_scale          # text scores to numbers; fills score where it is missing
            column: text_score
            to: score
            scale: {A: 95, B: 85, C: 75, D: 65, F: 50}
          - {type: default, column: score_status, value: fully graded}

Mappings run by type, in this order (list order within a type): rename, map_values (values as
delivered), type coercion, scale, score_scale, default (typed values); then the required-field check.

Use::

    rules = MergeRules.model_validate(config["merge_rules"])
    items = merge_entity(LINE_ITEMS, ic_items, vendor_items, rules.for_entity("line_items"), run_id=run_id,
                         known_parents={"category_sourced_id": category_ids})
    results = merge_entity(RESULTS, ic_results, vendor_results, rules.for_entity("results"), run_id=run_id,
                           known_parents={"line_item_sourced_id": line_item_ids},
                           parent_id_maps={"line_item_sourced_id": items.id_map})
    check_reject_rate({"line_items": items, "results": results}, rules.reject_rate_threshold)

``known_parents`` should hold the parent ids in the warehouse plus ``items.merged["sourced_id"]``.
"""

from typing import Any

from gradesync.merge.rules import (
    AttributeMapping,
    DefaultMapping,
    EntityMergeRules,
    MergeRules,
    RenameMapping,
    RulesError,
    ScaleMapping,
    ScoreScaleMapping,
    ValueMapping,
    default_rules,
)

# The engine needs pandas; the rules do not. Config parsing (and so every DAG parse) imports the
# rules only, so the engine's names are resolved on first use.
_LAZY = {
    "COUNT_KEYS": "engine",
    "REJECT_COLUMNS": "engine",
    "MergeOutcome": "engine",
    "RejectRateExceeded": "engine",
    "check_reject_rate": "engine",
    "dedupe_within_source": "engine",
    "merge_entity": "engine",
    "canonical_dtypes": "frames",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"gradesync.merge.{module}"), name)


__all__ = [
    "COUNT_KEYS",
    "REJECT_COLUMNS",
    "AttributeMapping",
    "DefaultMapping",
    "EntityMergeRules",
    "MergeOutcome",
    "MergeRules",
    "RejectRateExceeded",
    "RenameMapping",
    "RulesError",
    "ScaleMapping",
    "ScoreScaleMapping",
    "ValueMapping",
    "canonical_dtypes",
    "check_reject_rate",
    "dedupe_within_source",
    "default_rules",
    "merge_entity",
]
