"""merge_entity: every rule type, ties, natural keys, ambiguity, references, mappings and rejects."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from merge_helpers import lineage, loose, reasons, record, staging, ts

from gradesync.entities import CATEGORIES, LINE_ITEMS, RESULTS, SCORE_SCALES
from gradesync.merge import (
    COUNT_KEYS,
    REJECT_COLUMNS,
    EntityMergeRules,
    MergeOutcome,
    RejectRateExceeded,
    canonical_dtypes,
    check_reject_rate,
    default_rules,
    merge_entity,
)

RUN = "run-1"


def merge(entity, ic, vendor, rules=None, **kw) -> MergeOutcome:
    return merge_entity(entity, ic, vendor, rules or EntityMergeRules(), run_id=RUN, **kw)


def accounting_holds(o: MergeOutcome) -> None:
    rs = o.merged["record_source"].astype(str)
    for side, contributed in (
        ("ic", rs.isin(["ic", "both"]).sum()),
        ("vendor", rs.isin(["vendor", "both"]).sum()),
    ):
        c = o.counts
        assert c[f"{side}_in"] == c[f"duplicates_{side}"] + c[f"rejected_{side}"] + contributed, (side, c)


# --- masters ------------------------------------------------------------------------------------


def test_per_field_masters_ic_vendor_and_newest_pick_and_say_who_won() -> None:
    ic = staging(
        RESULTS,
        [
            {
                "sourced_id": "r1",
                "date_last_modified": ts("2026-09-01"),
                "score": 70.0,
                "comment": "ic comment",
                "late": False,
                "score_date": date(2026, 9, 1),
            }
        ],
    )
    vendor = staging(
        RESULTS,
        [
            {
                "sourced_id": "r1",
                "date_last_modified": ts("2026-09-02"),
                "score": 87.0,
                "comment": "lms comment",
                "late": True,
                "score_date": date(2026, 9, 2),
            }
        ],
    )
    rules = EntityMergeRules(fields={"score": "vendor", "comment": "ic", "late": "newest"})
    o = merge(RESULTS, ic, vendor, rules)
    row = record(o, "r1")
    assert (row["score"], row["comment"], row["late"]) == (87.0, "ic comment", True)
    assert row["score_date"] == date(2026, 9, 1)  # default master ic
    assert row["date_last_modified"] == pd.Timestamp("2026-09-02", tz="UTC")  # newest by default
    sources = lineage(o, "r1")
    assert sources["score"] == "vendor" and sources["comment"] == "ic" and sources["late"] == "vendor"
    assert sources["score_date"] == "ic" and sources["date_last_modified"] == "vendor"
    assert sources["sourced_id"] == "ic" and sources["_match"] == "sourced_id"
    assert sources["_rules"] == rules.fingerprint()
    assert set(sources) == set(RESULTS.columns("1.2")) | {"_match", "_rules"}
    assert o.counts["matched_by_sourced_id"] == 1
    assert record(o, "r1")["record_source"] == "both"


def test_newest_goes_to_whichever_side_is_newer_and_ties_go_to_ic() -> None:
    ic = staging(
        RESULTS,
        [
            {"sourced_id": "newer_ic", "date_last_modified": ts("2026-09-05"), "score": 1.0},
            {"sourced_id": "newer_vendor", "date_last_modified": ts("2026-09-01"), "score": 1.0},
            {"sourced_id": "tie", "date_last_modified": ts("2026-09-03"), "score": 1.0},
        ],
    )
    vendor = staging(
        RESULTS,
        [
            {"sourced_id": "newer_ic", "date_last_modified": ts("2026-09-02"), "score": 2.0},
            {"sourced_id": "newer_vendor", "date_last_modified": ts("2026-09-02"), "score": 2.0},
            {"sourced_id": "tie", "date_last_modified": ts("2026-09-03"), "score": 2.0},
        ],
    )
    o = merge(RESULTS, ic, vendor, EntityMergeRules(default_master="newest"))
    assert record(o, "newer_ic")["score"] == 1.0
    assert record(o, "newer_vendor")["score"] == 2.0
    assert record(o, "tie")["score"] == 1.0
    assert lineage(o, "tie")["score"] == "ic"
    assert lineage(o, "newer_vendor")["score"] == "vendor"


def test_default_master_applies_to_fields_not_listed() -> None:
    ic = staging(RESULTS, [{"sourced_id": "r1", "score": 1.0, "comment": "ic"}])
    vendor = staging(RESULTS, [{"sourced_id": "r1", "score": 2.0, "comment": "vendor"}])
    o = merge(RESULTS, ic, vendor, EntityMergeRules(default_master="vendor", fields={"comment": "ic"}))
    assert (record(o, "r1")["score"], record(o, "r1")["comment"]) == (2.0, "ic")


def test_date_last_modified_master_can_be_pinned() -> None:
    ic = staging(RESULTS, [{"sourced_id": "r1", "date_last_modified": ts("2026-09-01")}])
    vendor = staging(RESULTS, [{"sourced_id": "r1", "date_last_modified": ts("2026-09-09")}])
    o = merge(RESULTS, ic, vendor, EntityMergeRules(fields={"date_last_modified": "ic"}))
    assert record(o, "r1")["date_last_modified"] == pd.Timestamp("2026-09-01", tz="UTC")


@pytest.mark.parametrize("fill", [True, False])
def test_fill_nulls_takes_the_other_side_only_when_the_master_has_nothing(fill: bool) -> None:
    ic = staging(RESULTS, [{"sourced_id": "r1", "score": 70.0, "comment": None}])
    vendor = staging(RESULTS, [{"sourced_id": "r1", "score": None, "comment": "from lms"}])
    rules = EntityMergeRules(fields={"score": "vendor"}, fill_nulls=fill)
    o = merge(RESULTS, ic, vendor, rules)
    row, sources = record(o, "r1"), lineage(o, "r1")
    if fill:
        assert (row["score"], sources["score"]) == (70.0, "ic")
        assert (row["comment"], sources["comment"]) == ("from lms", "vendor")
    else:
        assert (row["score"], sources["score"]) == (None, "vendor")
        assert (row["comment"], sources["comment"]) == (None, "ic")


def test_default_rules_take_vendor_scores_and_keep_ic_roster_fields() -> None:
    ic = staging(
        RESULTS,
        [{"sourced_id": "r1", "score": 70.0, "student_sourced_id": "s1", "score_status": "submitted"}],
    )
    vendor = staging(
        RESULTS,
        [{"sourced_id": "r1", "score": 87.0, "student_sourced_id": "s9", "score_status": "fully graded"}],
    )
    o = merge(RESULTS, ic, vendor, default_rules("results"))
    row = record(o, "r1")
    assert (row["score"], row["score_status"], row["student_sourced_id"]) == (87.0, "fully graded", "s1")
    assert lineage(o, "r1")["score"] == "vendor"


# --- natural keys -------------------------------------------------------------------------------


ITEM_KEY = [["class_sourced_id", "title", "due_date"]]


def test_natural_key_match_normalises_text_and_keeps_the_ic_sourced_id() -> None:
    ic = staging(LINE_ITEMS, [{"sourced_id": "ic-1", "title": "Chapter 3  Quiz", "description": None}])
    vendor = staging(
        LINE_ITEMS, [{"sourced_id": "lms-77", "title": "  chapter 3 QUIZ", "description": "from lms"}]
    )
    o = merge(LINE_ITEMS, ic, vendor, EntityMergeRules(match_keys=ITEM_KEY))
    assert o.merged["sourced_id"].tolist() == ["ic-1"]
    row, sources = record(o, "ic-1"), lineage(o, "ic-1")
    assert row["title"] == "Chapter 3  Quiz" and row["description"] == "from lms"
    assert row["record_source"] == "both"
    assert sources["_match"] == "natural_key:class_sourced_id+title+due_date"
    assert sources["_vendor_sourced_id"] == "lms-77"
    assert sources["sourced_id"] == "ic" and sources["description"] == "vendor"
    assert o.id_map.to_dict() == {"lms-77": "ic-1"}
    assert o.counts["matched_by_natural_key"] == 1 and o.counts["matched_by_sourced_id"] == 0
    accounting_holds(o)


def test_natural_key_needs_every_component_to_agree_and_to_be_present() -> None:
    ic = staging(
        LINE_ITEMS,
        [
            {"sourced_id": "a", "title": "Quiz", "due_date": ts("2026-09-08")},
            {"sourced_id": "b", "title": "Essay", "due_date": None},
        ],
    )
    vendor = staging(
        LINE_ITEMS,
        [
            {"sourced_id": "x", "title": "Quiz", "due_date": ts("2026-09-09")},  # other due date
            {"sourced_id": "y", "title": "Essay", "due_date": None},  # missing component never matches
        ],
    )
    o = merge(LINE_ITEMS, ic, vendor, EntityMergeRules(match_keys=ITEM_KEY))
    assert o.merged["sourced_id"].tolist() == ["a", "b", "x", "y"]
    assert o.merged["record_source"].astype(str).tolist() == ["ic", "ic", "vendor", "vendor"]
    assert o.counts["matched_by_natural_key"] == 0


def test_natural_keys_are_tried_in_order_after_sourced_id() -> None:
    ic = staging(
        LINE_ITEMS,
        [
            {"sourced_id": "same", "title": "A"},
            {"sourced_id": "i1", "title": "B", "due_date": ts("2026-09-08")},
            {"sourced_id": "i2", "title": "C", "due_date": ts("2026-09-08")},
        ],
    )
    vendor = staging(
        LINE_ITEMS,
        [
            {"sourced_id": "same", "title": "B"},  # same id wins even though its title matches i1
            {"sourced_id": "v1", "title": "b", "due_date": ts("2026-09-08")},
            {"sourced_id": "v2", "title": "c", "due_date": ts("2026-10-01")},  # only the second key fits
        ],
    )
    rules = EntityMergeRules(match_keys=[*ITEM_KEY, ["class_sourced_id", "title"]])
    o = merge(LINE_ITEMS, ic, vendor, rules)
    assert o.merged["sourced_id"].tolist() == ["i1", "i2", "same"]
    assert lineage(o, "same")["_match"] == "sourced_id"
    assert lineage(o, "i1")["_match"] == "natural_key:class_sourced_id+title+due_date"
    assert lineage(o, "i2")["_match"] == "natural_key:class_sourced_id+title"
    assert o.id_map.to_dict() == {"v1": "i1", "v2": "i2"}
    assert (o.counts["matched_by_sourced_id"], o.counts["matched_by_natural_key"]) == (1, 2)


def test_natural_key_shared_by_two_ic_records_is_ambiguous_and_rejects_all_three() -> None:
    ic = staging(
        LINE_ITEMS,
        [
            {"sourced_id": "i1", "title": "Quiz"},
            {"sourced_id": "i2", "title": "quiz"},
            {"sourced_id": "i3", "title": "Essay"},
        ],
    )
    vendor = staging(LINE_ITEMS, [{"sourced_id": "v1", "title": "QUIZ"}])
    o = merge(LINE_ITEMS, ic, vendor, EntityMergeRules(match_keys=ITEM_KEY))
    assert o.merged["sourced_id"].tolist() == ["i3"]
    why = "ambiguous natural key: (class_sourced_id, title, due_date) matches 2 ic and 1 vendor records"
    assert reasons(o) == [("ic", "i1", why), ("ic", "i2", why), ("vendor", "v1", why)]
    assert o.rejects["run_id"].unique().tolist() == [RUN]
    assert json.loads(o.rejects["raw"].iloc[0])["title"] == "Quiz"
    accounting_holds(o)


def test_natural_key_shared_by_two_vendor_records_is_ambiguous_too() -> None:
    ic = staging(LINE_ITEMS, [{"sourced_id": "i1", "title": "Quiz"}])
    vendor = staging(
        LINE_ITEMS, [{"sourced_id": "v1", "title": "Quiz"}, {"sourced_id": "v2", "title": "Quiz "}]
    )
    o = merge(LINE_ITEMS, ic, vendor, EntityMergeRules(match_keys=ITEM_KEY))
    assert len(o.merged) == 0
    assert {r[0] for r in reasons(o)} == {"ic", "vendor"}
    assert all("matches 1 ic and 2 vendor records" in r[2] for r in reasons(o))


def test_duplicate_natural_keys_on_one_side_only_are_not_ambiguous() -> None:
    ic = staging(LINE_ITEMS, [{"sourced_id": "i1", "title": "Quiz"}, {"sourced_id": "i2", "title": "Quiz"}])
    o = merge(
        LINE_ITEMS,
        ic,
        staging(LINE_ITEMS, [{"sourced_id": "v1", "title": "Other"}]),
        EntityMergeRules(match_keys=ITEM_KEY),
    )
    assert o.merged["sourced_id"].tolist() == ["i1", "i2", "v1"]
    assert o.counts["rejected"] == 0


def test_records_matched_by_sourced_id_do_not_take_part_in_natural_key_ambiguity() -> None:
    ic = staging(LINE_ITEMS, [{"sourced_id": "i1", "title": "Quiz"}, {"sourced_id": "i2", "title": "Quiz"}])
    vendor = staging(
        LINE_ITEMS, [{"sourced_id": "i1", "title": "Quiz"}, {"sourced_id": "v2", "title": "Quiz"}]
    )
    o = merge(LINE_ITEMS, ic, vendor, EntityMergeRules(match_keys=ITEM_KEY))
    assert o.merged["sourced_id"].tolist() == ["i1", "i2"]
    assert lineage(o, "i2")["_vendor_sourced_id"] == "v2"


def test_vendor_results_follow_their_line_item_into_the_ic_id() -> None:
    ic_items = staging(LINE_ITEMS, [{"sourced_id": "ic-li", "title": "Quiz"}])
    v_items = staging(LINE_ITEMS, [{"sourced_id": "lms-li", "title": "quiz"}])
    items = merge(LINE_ITEMS, ic_items, v_items, EntityMergeRules(match_keys=ITEM_KEY))
    ic_res = staging(
        RESULTS,
        [{"sourced_id": "ic-r", "line_item_sourced_id": "ic-li", "student_sourced_id": "s1", "score": 70.0}],
    )
    v_res = staging(
        RESULTS,
        [
            {
                "sourced_id": "lms-r",
                "line_item_sourced_id": "lms-li",
                "student_sourced_id": "s1",
                "score": 91.0,
            },
            {
                "sourced_id": "lms-r2",
                "line_item_sourced_id": "lms-li",
                "student_sourced_id": "s2",
                "score": 80.0,
            },
        ],
    )
    known = {"line_item_sourced_id": pd.Index(items.merged["sourced_id"])}
    o = merge(
        RESULTS,
        ic_res,
        v_res,
        default_rules("results"),
        known_parents=known,
        parent_id_maps={"line_item_sourced_id": items.id_map},
    )
    assert o.rejects.empty
    assert record(o, "ic-r")["score"] == 91.0
    assert lineage(o, "ic-r")["_vendor_sourced_id"] == "lms-r"
    assert record(o, "lms-r2")["line_item_sourced_id"] == "ic-li"
    # without the id map the vendor results point at a line item that was merged away
    o2 = merge(RESULTS, ic_res, v_res, default_rules("results"), known_parents=known)
    assert {r[1] for r in reasons(o2)} == {"lms-r", "lms-r2"}
    assert all(r[2].startswith("unknown reference: line_item_sourced_id 'lms-li'") for r in reasons(o2))


# --- single-source records ------------------------------------------------------------------------


def test_vendor_only_and_ic_only_records_are_kept_with_their_own_lineage() -> None:
    o = merge(RESULTS, staging(RESULTS, [{"sourced_id": "i"}]), staging(RESULTS, [{"sourced_id": "v"}]))
    assert o.merged["record_source"].astype(str).tolist() == ["ic", "vendor"]
    assert set(lineage(o, "i").values()) - {None, EntityMergeRules().fingerprint()} == {"ic"}
    assert set(lineage(o, "v").values()) - {None, EntityMergeRules().fingerprint()} == {"vendor"}
    assert lineage(o, "v")["_match"] is None


def test_without_vendor_input_merge_still_dedupes_checks_and_writes_lineage() -> None:
    ic = staging(
        RESULTS,
        [
            {"sourced_id": "r2", "date_last_modified": ts("2026-09-01"), "score": 1.0},
            {"sourced_id": "r2", "date_last_modified": ts("2026-09-02"), "score": 2.0},
            {"sourced_id": "r1", "line_item_sourced_id": "gone"},
        ],
    )
    o = merge(RESULTS, ic, None, known_parents={"line_item_sourced_id": pd.Index(["li1"])})
    assert o.merged["sourced_id"].tolist() == ["r2"]
    assert record(o, "r2")["score"] == 2.0
    assert o.merged["record_source"].astype(str).tolist() == ["ic"]
    assert lineage(o, "r2")["score"] == "ic"
    assert o.counts == {
        **dict.fromkeys(COUNT_KEYS, 0),
        "ic_in": 3,
        "duplicates_ic": 1,
        "merged_out": 1,
        "rejected": 1,
        "rejected_ic": 1,
    }
    accounting_holds(o)


# --- rejects ------------------------------------------------------------------------------------


def test_missing_required_fields_are_rejected_with_the_raw_record() -> None:
    ic = staging(
        RESULTS,
        [
            {"sourced_id": "r1", "student_sourced_id": None, "score_status": None, "comment": "x"},
            {"sourced_id": "r2"},
        ],
    )
    o = merge(RESULTS, ic, None)
    assert o.merged["sourced_id"].tolist() == ["r2"]
    assert reasons(o) == [
        ("ic", "r1", "missing required field: student_sourced_id; missing required field: score_status")
    ]
    reject = o.rejects.iloc[0]
    assert list(o.rejects.columns) == REJECT_COLUMNS
    assert (reject["entity"], reject["run_id"], reject["source"]) == ("results", RUN, "ic")
    raw = json.loads(reject["raw"])
    assert raw["sourced_id"] == "r1" and raw["comment"] == "x" and raw["student_sourced_id"] is None


def test_records_without_sourced_id_are_rejected_and_exact_repeats_count_as_duplicates() -> None:
    vendor = loose(
        [
            {
                "sourced_id": None,
                "status": "active",
                "date_last_modified": "2026-09-01T00:00:00Z",
                "line_item_sourced_id": "li1",
                "student_sourced_id": "s1",
                "score_status": "exempt",
            }
        ]
        * 2
    )
    o = merge(RESULTS, staging(RESULTS, []), vendor)
    assert reasons(o) == [("vendor", None, "missing required field: sourced_id")]
    assert o.counts["duplicates_vendor"] == 1
    accounting_holds(o)


def test_values_that_cannot_be_typed_are_rejected_not_raised() -> None:
    vendor = loose(
        [
            {
                "sourced_id": "v1",
                "status": "active",
                "date_last_modified": "2026-09-01T00:00:00Z",
                "line_item_sourced_id": "li1",
                "student_sourced_id": "s1",
                "score_status": "exempt",
                "score": "abc",
            },
            {
                "sourced_id": "v2",
                "status": "active",
                "date_last_modified": "yesterday",
                "line_item_sourced_id": "li1",
                "student_sourced_id": "s2",
                "score_status": "exempt",
                "late": "maybe",
            },
            {
                "sourced_id": "v3",
                "status": "active",
                "date_last_modified": "2026-09-01",
                "line_item_sourced_id": "li1",
                "student_sourced_id": "s3",
                "score_status": "exempt",
                "score": " 87 ",
                "late": "TRUE",
                "score_date": "2026-09-01",
            },
        ]
    )
    o = merge(RESULTS, staging(RESULTS, []), vendor)
    assert o.merged["sourced_id"].tolist() == ["v3"]
    assert record(o, "v3")["score"] == 87.0 and record(o, "v3")["late"] is True
    assert record(o, "v3")["score_date"] == date(2026, 9, 1)
    got = dict((r[1], r[2]) for r in reasons(o))
    assert got["v1"] == "invalid value: score must be a number, got 'abc'"
    assert got["v2"] == (
        "invalid value: date_last_modified must be an ISO 8601 date-time, got 'yesterday'; "
        'invalid value: late must be "true" or "false", got \'maybe\''
    )


def test_every_problem_of_a_record_is_named_in_its_reason() -> None:
    vendor = loose(
        [
            {
                "sourced_id": "v1",
                "status": "active",
                "date_last_modified": "2026-09-01T00:00:00Z",
                "line_item_sourced_id": "li1",
                "student_sourced_id": None,
                "score_status": "exempt",
                "score": "abc",
            }
        ]
    )
    o = merge(RESULTS, staging(RESULTS, []), vendor)
    assert reasons(o) == [
        (
            "vendor",
            "v1",
            "invalid value: score must be a number, got 'abc'; missing required field: student_sourced_id",
        )
    ]


def test_a_rejected_record_takes_its_same_id_counterpart_with_it() -> None:
    ic = staging(RESULTS, [{"sourced_id": "r1", "score_status": None}, {"sourced_id": "r2"}])
    vendor = staging(RESULTS, [{"sourced_id": "r1", "score": 90.0}, {"sourced_id": "r2"}])
    o = merge(RESULTS, ic, vendor)
    assert o.merged["sourced_id"].tolist() == ["r2"]
    assert reasons(o) == [
        ("ic", "r1", "missing required field: score_status"),
        ("vendor", "r1", "counterpart rejected: the ic record with this sourced_id was rejected"),
    ]
    accounting_holds(o)


def test_newest_copy_decides_even_when_it_is_the_invalid_one() -> None:
    ic = staging(
        RESULTS,
        [
            {"sourced_id": "r1", "date_last_modified": ts("2026-09-01")},
            {"sourced_id": "r1", "date_last_modified": ts("2026-09-02"), "score_status": None},
        ],
    )
    o = merge(RESULTS, ic, None)
    assert o.merged.empty
    assert reasons(o) == [("ic", "r1", "missing required field: score_status")]
    assert o.counts["duplicates_ic"] == 1


def test_unknown_references_reject_each_raw_record_of_the_merged_record() -> None:
    ic = staging(
        LINE_ITEMS,
        [
            {"sourced_id": "both", "category_sourced_id": "cat-x"},
            {"sourced_id": "ok", "category_sourced_id": "cat-1"},
            {"sourced_id": "no-cat", "category_sourced_id": None},
        ],
    )
    vendor = staging(
        LINE_ITEMS,
        [
            {"sourced_id": "both", "category_sourced_id": "cat-x"},
            {"sourced_id": "v-only", "category_sourced_id": "cat-y"},
        ],
    )
    o = merge(LINE_ITEMS, ic, vendor, known_parents={"category_sourced_id": pd.Index(["cat-1"])})
    assert o.merged["sourced_id"].tolist() == ["no-cat", "ok"]
    assert reasons(o) == [
        ("ic", "both", "unknown reference: category_sourced_id 'cat-x' is not a known categories record"),
        ("vendor", "both", "unknown reference: category_sourced_id 'cat-x' is not a known categories record"),
        (
            "vendor",
            "v-only",
            "unknown reference: category_sourced_id 'cat-y' is not a known categories record",
        ),
    ]
    assert o.rejects_by_kind() == {"unknown reference": 3}
    accounting_holds(o)


def test_reference_check_uses_the_merged_value() -> None:
    ic = staging(LINE_ITEMS, [{"sourced_id": "li", "category_sourced_id": "cat-1"}])
    vendor = staging(LINE_ITEMS, [{"sourced_id": "li", "category_sourced_id": "cat-lms"}])
    known = {"category_sourced_id": pd.Index(["cat-1"])}
    assert merge(LINE_ITEMS, ic, vendor, known_parents=known).rejects.empty
    vendor_wins = EntityMergeRules(fields={"category_sourced_id": "vendor"})
    assert len(merge(LINE_ITEMS, ic, vendor, vendor_wins, known_parents=known).rejects) == 2


def test_known_parents_must_name_a_column() -> None:
    with pytest.raises(ValueError, match="known_parents names 'line_item'"):
        merge(
            RESULTS, staging(RESULTS, [{"sourced_id": "r"}]), None, known_parents={"line_item": pd.Index([])}
        )


# --- mappings -----------------------------------------------------------------------------------


def vendor_result(**values):
    base = {
        "sourced_id": "v1",
        "status": "active",
        "date_last_modified": "2026-09-01T00:00:00Z",
        "line_item_sourced_id": "li1",
        "student_sourced_id": "s1",
        "score_status": "fully graded",
    }
    return {**base, **values}


def rules_with(*mappings, **kw) -> EntityMergeRules:
    return EntityMergeRules.model_validate({"mappings": list(mappings), **kw})


def test_rename_brings_a_vendor_column_into_the_entity_layout() -> None:
    vendor = loose([{**vendor_result(), "grade": "88.5", "id": "ignored"}])
    o = merge(
        RESULTS,
        staging(RESULTS, []),
        vendor,
        rules_with({"type": "rename", "column": "grade", "to": "score"}),
    )
    assert record(o, "v1")["score"] == 88.5
    assert "grade" not in o.merged.columns and "id" not in o.merged.columns


def test_rename_can_supply_a_required_column() -> None:
    row = vendor_result()
    row["learner"] = row.pop("student_sourced_id")
    o = merge(
        RESULTS,
        staging(RESULTS, []),
        loose([row]),
        rules_with({"type": "rename", "column": "learner", "to": "student_sourced_id"}),
    )
    assert record(o, "v1")["student_sourced_id"] == "s1"


@pytest.mark.parametrize(
    ("unmapped", "expected_status", "rejected"),
    [("keep", "ext:ZZ", 0), ("null", None, 1), ("reject", None, 1)],
)
def test_map_values_translates_codes_and_handles_unmapped_values(unmapped, expected_status, rejected) -> None:
    vendor = loose(
        [
            vendor_result(sourced_id="v1", score_status="ext:GR"),
            vendor_result(sourced_id="v2", student_sourced_id="s2", score_status="ext:ZZ"),
        ]
    )
    rules = rules_with(
        {
            "type": "map_values",
            "column": "score_status",
            "values": {"ext:GR": "fully graded"},
            "unmapped": unmapped,
        }
    )
    o = merge(RESULTS, staging(RESULTS, []), vendor, rules)
    assert record(o, "v1")["score_status"] == "fully graded"
    assert o.counts["rejected"] == rejected
    if rejected:
        why = {
            "null": "missing required field: score_status",
            "reject": "unmapped value: score_status 'ext:ZZ' has no mapping",
        }[unmapped]
        assert reasons(o) == [("vendor", "v2", why)]
    else:
        assert record(o, "v2")["score_status"] == expected_status


def test_map_values_feeds_flags_from_vendor_codes() -> None:
    vendor = loose(
        [vendor_result(late="Y"), vendor_result(sourced_id="v2", student_sourced_id="s2", late="N")]
    )
    rules = rules_with({"type": "map_values", "column": "late", "values": {"Y": True, "N": False}})
    o = merge(RESULTS, staging(RESULTS, []), vendor, rules)
    assert o.merged["late"].tolist() == [True, False]


def test_scale_rescales_vendor_scores_and_rounds() -> None:
    vendor = loose([vendor_result(score=0.8766)])
    o = merge(
        RESULTS,
        staging(RESULTS, []),
        vendor,
        rules_with({"type": "scale", "column": "score", "factor": 100, "offset": 1, "round": 1}),
    )
    assert record(o, "v1")["score"] == 88.7


def test_score_scale_turns_text_scores_into_numbers_after_scaling() -> None:
    vendor = loose(
        [
            vendor_result(sourced_id="v1", score=None, text_score=" b "),
            vendor_result(sourced_id="v2", student_sourced_id="s2", score=0.5, text_score="A"),
            vendor_result(sourced_id="v3", student_sourced_id="s3", score=None, text_score="Z"),
        ]
    )
    rules = rules_with(
        {"type": "score_scale", "scale": {"A": 95, "B": 85}},
        {"type": "scale", "column": "score", "factor": 100},  # listed later, still runs first
    )
    o = merge(RESULTS, staging(RESULTS, []), vendor, rules)
    assert record(o, "v1")["score"] == 85.0  # case and space insensitive, not rescaled
    assert record(o, "v2")["score"] == 50.0  # a number that came with the text stays
    assert record(o, "v3")["score"] is None and record(o, "v3")["text_score"] == "Z"
    overwrite = rules_with({"type": "score_scale", "scale": {"A": 95}, "overwrite": True})
    assert record(merge(RESULTS, staging(RESULTS, []), vendor, overwrite), "v2")["score"] == 95.0
    strict = rules_with({"type": "score_scale", "scale": {"A": 95, "B": 85}, "unmapped": "reject"})
    assert reasons(merge(RESULTS, staging(RESULTS, []), vendor, strict)) == [
        ("vendor", "v3", "unmapped value: text_score 'Z' is not in the score scale")
    ]


def test_default_fills_missing_values_even_a_missing_required_column() -> None:
    row = vendor_result(score=None)
    del row["score_status"]
    rules = rules_with(
        {"type": "default", "column": "score_status", "value": "not submitted"},
        {"type": "default", "column": "score", "value": 0},
        {"type": "default", "column": "late", "value": False},
        {"type": "default", "column": "score_date", "value": "2026-09-30"},
    )
    o = merge(RESULTS, staging(RESULTS, []), loose([row]), rules)
    got = record(o, "v1")
    assert (got["score_status"], got["score"], got["late"], got["score_date"]) == (
        "not submitted",
        0.0,
        False,
        date(2026, 9, 30),
    )


def test_mappings_apply_to_the_declared_side_only() -> None:
    ic = staging(RESULTS, [{"sourced_id": "i1", "score": 0.5}])
    vendor = staging(RESULTS, [{"sourced_id": "v1", "student_sourced_id": "s2", "score": 0.5}])
    for side, expected in (("vendor", (0.5, 50.0)), ("ic", (50.0, 0.5)), ("both", (50.0, 50.0))):
        o = merge(
            RESULTS,
            ic,
            vendor,
            rules_with({"type": "scale", "column": "score", "factor": 100, "apply_to": side}),
        )
        assert (record(o, "i1")["score"], record(o, "v1")["score"]) == expected, side


def test_missing_required_column_is_a_config_error_not_a_reject() -> None:
    row = vendor_result()
    del row["student_sourced_id"]
    with pytest.raises(
        ValueError, match="vendor frame lacks required column\\(s\\) student_sourced_id.*rename mapping"
    ):
        merge(RESULTS, staging(RESULTS, []), loose([row]))


# --- shape, dtypes, layout ----------------------------------------------------------------------


def expected_dtypes(entity, version):
    return [*map(str, canonical_dtypes(entity, version).values()), "category", "category"]


def test_output_is_sorted_by_sourced_id_with_canonical_dtypes_whatever_the_input_dtypes() -> None:
    ic = staging(
        RESULTS, [{"sourced_id": s, "late": s == "b", "score_date": date(2026, 9, 1)} for s in "cab"]
    )
    vendor = loose([vendor_result(sourced_id="d", late="true", score_date="2026-09-02")])
    o = merge(RESULTS, ic, vendor)
    assert o.merged["sourced_id"].tolist() == ["a", "b", "c", "d"]
    assert isinstance(o.merged.index, pd.RangeIndex)
    assert list(o.merged.columns) == [*RESULTS.columns("1.2"), "field_sources", "record_source"]
    assert list(map(str, o.merged.dtypes)) == expected_dtypes(RESULTS, "1.2")
    assert o.merged["record_source"].cat.categories.tolist() == ["ic", "vendor", "both"]


def test_empty_inputs_give_an_empty_frame_of_the_same_dtypes() -> None:
    o = merge(RESULTS, staging(RESULTS, []), None, api_version="1.2")
    assert o.merged.empty and o.rejects.empty
    assert list(map(str, o.merged.dtypes)) == expected_dtypes(RESULTS, "1.2")
    assert list(o.rejects.columns) == REJECT_COLUMNS
    assert o.reject_rate == 0.0


def test_layout_follows_the_api_version_of_the_inputs_or_the_pinned_one() -> None:
    v11 = staging(RESULTS, [{"sourced_id": "r1"}], version="1.1")
    assert list(merge(RESULTS, v11, None).merged.columns[:-2]) == RESULTS.columns("1.1")
    pinned = merge(RESULTS, v11, None, api_version="1.2").merged
    assert list(pinned.columns[:-2]) == RESULTS.columns("1.2")
    assert pinned["text_score"].isna().all()
    with pytest.raises(ValueError, match="does not exist in OneRoster 1.1"):
        merge(SCORE_SCALES, staging(SCORE_SCALES, []), None, api_version="1.1")
    with pytest.raises(ValueError, match="match_keys\\[0\\] uses \\['school_sourced_id'\\]"):
        merge(
            LINE_ITEMS,
            staging(LINE_ITEMS, [{"sourced_id": "x"}], version="1.1"),
            None,
            EntityMergeRules(match_keys=[["school_sourced_id"]]),
        )


def test_inputs_are_not_modified() -> None:
    ic = staging(RESULTS, [{"sourced_id": "r1", "score": 0.5}, {"sourced_id": "r1", "score": 0.7}])
    vendor = loose([vendor_result(score="0.5")])
    before_ic, before_v = ic.copy(deep=True), vendor.copy(deep=True)
    merge(
        RESULTS,
        ic,
        vendor,
        rules_with({"type": "scale", "column": "score", "factor": 10, "apply_to": "both"}),
    )
    pd.testing.assert_frame_equal(ic, before_ic)
    pd.testing.assert_frame_equal(vendor, before_v)


def test_categories_without_natural_keys_merge_by_id_only() -> None:
    ic = staging(CATEGORIES, [{"sourced_id": "c1", "title": "Homework"}])
    vendor = staging(CATEGORIES, [{"sourced_id": "c2", "title": "homework"}])
    o = merge(CATEGORIES, ic, vendor, default_rules("categories"))
    assert o.merged["sourced_id"].tolist() == ["c1", "c2"]


def test_field_sources_is_valid_json_text_for_every_row() -> None:
    ic = staging(RESULTS, [{"sourced_id": f"r{i}", "student_sourced_id": f"s{i}"} for i in range(5)])
    vendor = staging(
        RESULTS,
        [
            {"sourced_id": 'v"/\\x', "student_sourced_id": "s1", "score": 1.0},
            {"sourced_id": "r2", "score": 2.0},
        ],
    )
    o = merge(RESULTS, ic, vendor, default_rules("results"))
    parsed = [json.loads(t) for t in o.merged["field_sources"].astype(str)]
    assert parsed[1]["_vendor_sourced_id"] == 'v"/\\x'
    assert parsed[2]["_match"] == "sourced_id"
    assert sum(p["_match"] is None for p in parsed) == 3


# --- reject rate --------------------------------------------------------------------------------


def test_reject_rate_threshold_fails_the_run_with_the_numbers() -> None:
    ic = staging(
        RESULTS, [{"sourced_id": f"r{i}", "score_status": None if i < 2 else "exempt"} for i in range(10)]
    )
    o = merge(RESULTS, ic, None)
    assert o.reject_rate == pytest.approx(0.2)
    assert check_reject_rate({"results": o}, 0.25) == pytest.approx(0.2)
    with pytest.raises(
        RejectRateExceeded, match=r"reject rate 20\.00% exceeds the threshold 5\.00%.*results 2/10"
    ):
        check_reject_rate({"results": o}, 0.05)
    # rejects from flattening count too
    with pytest.raises(RejectRateExceeded):
        check_reject_rate([o], 0.25, staging_in=10, staging_rejected=5)


def test_merging_with_no_input_has_no_reject_rate() -> None:
    assert check_reject_rate([], 0.0) == 0.0


def test_large_batches_stay_vectorised_and_consistent() -> None:
    n = 5_000
    rng = np.random.default_rng(1)
    ic = staging(
        RESULTS,
        [{"sourced_id": f"r{i:05d}", "student_sourced_id": f"s{i}", "score": float(i)} for i in range(n)],
    )
    vendor = staging(
        RESULTS,
        [
            {
                "sourced_id": f"r{i:05d}" if i % 2 else f"v{i:05d}",
                "student_sourced_id": f"s{i}",
                "score": float(-i - 1),
            }
            for i in rng.choice(n, 500, replace=False)
        ],
    )
    o = merge(RESULTS, ic, vendor, default_rules("results"))
    assert len(o.merged) == n
    assert o.counts["matched_by_sourced_id"] + o.counts["matched_by_natural_key"] == 500
    assert (o.merged["score"] < 0).sum() == 500
    accounting_holds(o)
