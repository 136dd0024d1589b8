"""Rules parse from YAML, name every mistake with its path and fix, and default sensibly."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from pydantic import ValidationError

import gradesync.merge as merge
from gradesync.entities import ENTITIES
from gradesync.merge import (
    EntityMergeRules,
    MergeRules,
    RenameMapping,
    RulesError,
    ScaleMapping,
    ScoreScaleMapping,
    ValueMapping,
    default_rules,
)


def parse(text: str) -> MergeRules:
    return MergeRules.model_validate(yaml.safe_load(textwrap.dedent(text)))


def error_text(text: str) -> str:
    with pytest.raises(ValidationError) as info:
        parse(text)
    return str(info.value)


def test_the_documented_yaml_example_parses_to_what_it_says() -> None:
    block = merge.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    config = yaml.safe_load(textwrap.dedent(block))
    rules = MergeRules.model_validate(config["merge_rules"])
    assert rules.reject_rate_threshold == 0.02
    items = rules.for_entity("line_items")
    assert items.match_keys == [["class_sourced_id", "title", "due_date"]]
    assert items.master_for("description") == "vendor"
    assert items.master_for("title") == "ic"
    results = rules.for_entity("results")
    assert results.master_for("late") == "newest"
    assert [type(m) for m in results.mappings] == [
        RenameMapping,
        ValueMapping,
        ScaleMapping,
        ScoreScaleMapping,
        merge.DefaultMapping,
    ]
    assert results.mappings[1].values["ext:GR"] == "fully graded"
    assert all(m.apply_to == "vendor" for m in results.mappings)


def test_mergerules_has_one_field_per_registered_entity() -> None:
    entity_fields = set(MergeRules.model_fields) - {"reject_rate_threshold", "vendor_grades"}
    assert entity_fields == set(ENTITIES)


def test_entities_left_out_get_defaults_and_vendor_grades_flows_into_them() -> None:
    rules = parse("line_items: {default_master: vendor}")
    assert rules.for_entity("line_items").default_master == "vendor"
    assert rules.for_entity("results") == default_rules("results")
    assert rules.configured().keys() == {"line_items"}
    no_vendor = parse("vendor_grades: false")
    assert no_vendor.for_entity("results").fields == {}


def test_default_rules_master_scores_on_the_vendor_side_only_when_vendor_grades_are_imported() -> None:
    results = default_rules("results")
    for column in ("score", "text_score", "score_status", "comment"):
        assert results.master_for(column) == "vendor"
    assert results.master_for("student_sourced_id") == "ic"
    assert results.master_for("line_item_sourced_id") == "ic"
    assert results.match_keys == [["line_item_sourced_id", "student_sourced_id"]]
    assert default_rules("results", vendor_grades=False).master_for("score") == "ic"
    assert default_rules("assessment_results").master_for("score") == "vendor"
    assert default_rules("line_items").match_keys == [["class_sourced_id", "title", "due_date"]]
    assert default_rules("line_items").master_for("title") == "ic"
    assert default_rules("categories").match_keys == []
    for name in ENTITIES:  # defaults must themselves be valid for their entity
        default_rules(name).check_for(ENTITIES[name])
    with pytest.raises(KeyError, match="unknown entity"):
        default_rules("grades")


def test_date_last_modified_is_newest_unless_configured_and_sourced_id_is_always_ic() -> None:
    rules = EntityMergeRules(default_master="vendor")
    assert rules.master_for("date_last_modified") == "newest"
    assert rules.master_for("sourced_id") == "ic"
    assert rules.master_for("title") == "vendor"
    assert EntityMergeRules(fields={"date_last_modified": "ic"}).master_for("date_last_modified") == "ic"


def test_unknown_top_level_key_suggests_the_entity_name() -> None:
    text = error_text("line_item: {default_master: ic}")
    assert "unknown key 'line_item'" in text
    assert "did you mean 'line_items'" in text


def test_unknown_entity_key_suggests_the_rule_name() -> None:
    text = error_text("results: {match_key: [[student_sourced_id]]}")
    assert "results" in text and "unknown key 'match_key'" in text and "did you mean 'match_keys'" in text


def test_bad_master_value_names_the_field_and_the_allowed_values() -> None:
    text = error_text("results: {fields: {score: vendr}}")
    assert "results.fields.score" in text
    assert "'ic', 'vendor' or 'newest'" in text


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "line_items: {match_keys: [[class_sourced_id, titel]]}",
            ["line_items.match_keys[0][1]", "'titel' is not a line_items column", "did you mean 'title'"],
        ),
        ("line_items: {match_keys: [[sourced_id, title]]}", ["sourced_id is always matched first"]),
        ("line_items: {match_keys: [[]]}", ["match_keys[0] is empty"]),
        ("line_items: {match_keys: [[title, title]]}", ["repeats a column"]),
        ("line_items: {match_keys: [[metadata]]}", ["is JSON text"]),
        ("results: {fields: {sourced_id: vendor}}", ["results.fields.sourced_id", "keeps the IC sourced_id"]),
        ("results: {fields: {scor: vendor}}", ["results.fields.scor", "did you mean 'score'"]),
        (
            "results: {mappings: [{type: scale, column: comment, factor: 2}]}",
            ["results.mappings[0].column", "'comment' is a str column", "needs a float column"],
        ),
        (
            "results: {mappings: [{type: default, column: score, value: high}]}",
            ["results.mappings[0].value", "'high' does not fit a float column", "finite number"],
        ),
        ("results: {mappings: [{type: default, column: late, value: 'yes'}]}", ["true or false"]),
        (
            "results: {mappings: [{type: default, column: score_date, value: '2026-13-01'}]}",
            ["ISO 8601 date"],
        ),
        ("results: {mappings: [{type: default, column: sourced_id, value: x}]}", ["cannot have a default"]),
        ("results: {mappings: [{type: default, column: comment, value: null}]}", ["does nothing"]),
        (
            "results: {mappings: [{type: map_values, column: score_status, values: {X: done}}]}",
            ["results.mappings[0].values['X']", "'done' is not a OneRoster score status", "'ext:' code"],
        ),
        ("results: {mappings: [{type: map_values, column: late, values: {Y: 'yes'}}]}", ["true or false"]),
        (
            "results: {mappings: [{type: map_values, column: score, values: {A: 1}}]}",
            ["needs a str or ref or flag"],
        ),
        ("results: {mappings: [{type: map_values, column: comment, values: {}}]}", ["values is empty"]),
        ("results: {mappings: [{type: score_scale, scale: {A: 1, ' a ': 2}}]}", ["differ only in case"]),
        (
            "results: {mappings: [{type: score_scale, column: comment, to: text_score, scale: {A: 1}}]}",
            ["mappings[0].to", "'text_score' is a str column"],
        ),
        ("results: {mappings: [{type: rename, column: grade, to: grade}]}", ["to itself"]),
        (
            "results: {mappings: [{type: rename, column: g, to: score}, {type: rename, column: h, to: score}]}",
            ["mappings[1] renames to 'score'", "keep one rename per target"],
        ),
        (
            "results: {mappings: [{type: rename, column: g, to: scores}]}",
            ["mappings[0].to", "did you mean 'score'"],
        ),
        (
            "results: {mappings: [{type: lookup, column: score}]}",
            ["does not match any of the expected tags", "'rename'"],
        ),
        (
            "results: {mappings: [{type: scale, column: score, factor: 2, rounding: 1}]}",
            ["unknown key 'rounding'"],
        ),
        ("reject_rate_threshold: 5", ["reject_rate_threshold", "less than or equal to 1"]),
    ],
)
def test_invalid_rules_fail_at_parse_time_with_path_and_fix(yaml_text: str, expected: list[str]) -> None:
    text = error_text(yaml_text)
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in:\n{text}"


def test_renames_to_one_target_on_different_sides_are_allowed() -> None:
    rules = parse(
        """
        results:
          mappings:
            - {type: rename, column: grade, to: score, apply_to: vendor}
            - {type: rename, column: pts, to: score, apply_to: ic}
        """
    )
    assert len(rules.for_entity("results").mappings) == 2


def test_map_values_keys_are_text_even_when_yaml_reads_numbers() -> None:
    rules = parse("results: {mappings: [{type: map_values, column: score_status, values: {1: exempt}}]}")
    assert rules.for_entity("results").mappings[0].values == {"1": "exempt"}


def test_check_for_catches_rules_built_in_code_too() -> None:
    rules = EntityMergeRules(match_keys=[["nope"]])
    with pytest.raises(RulesError, match="match_keys\\[0\\]\\[0\\]: 'nope' is not a results column"):
        rules.check_for(ENTITIES["results"])


def test_fingerprint_ignores_mapping_key_order_but_not_rule_changes() -> None:
    a = EntityMergeRules(fields={"score": "vendor", "comment": "vendor"})
    b = EntityMergeRules(fields={"comment": "vendor", "score": "vendor"})
    c = EntityMergeRules(fields={"comment": "vendor", "score": "newest"})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert len(a.fingerprint()) == 12


def test_rules_are_immutable_after_validation() -> None:
    rules = default_rules("results")
    with pytest.raises(ValidationError):
        rules.default_master = "vendor"  # type: ignore[misc]
