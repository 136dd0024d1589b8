"""IC's write rules, checked without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gradesync.sandbox.generator import generate
from gradesync.sandbox.query import ApiError
from gradesync.sandbox.store import Store
from gradesync.sandbox.writes import WriteRules


@pytest.fixture
def rules() -> WriteRules:
    return WriteRules(Store(generate("school", 9, "1.2")))


def _open_line_item(rules: WriteRules, kind: str = "points") -> dict[str, Any]:
    facts = rules.factory.line_items
    n = next(i for i in range(len(facts.ids)) if not facts.closed[i] and facts.kind[i] == kind)
    return {"id": facts.ids[n], "class": facts.class_id[n], "max": facts.value_max[n]}


def _result(rules: WriteRules, line_item: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    student = sorted(rules.factory.class_students[line_item["class"]])[0]
    record = {
        "lineItem": {"href": "x", "sourcedId": line_item["id"], "type": "lineItem"},
        "student": {"href": "x", "sourcedId": student, "type": "user"},
        "scoreStatus": "fully graded",
        "score": 1.0,
        "scoreDate": "2026-11-20",
    }
    record.update(overrides)
    return record


def test_put_creates_then_updates_and_stamps_the_clock(rules: WriteRules) -> None:
    line_item = _open_line_item(rules)
    assert rules.put("results", "r-new", _result(rules, line_item)) is True
    assert rules.put("results", "r-new", _result(rules, line_item, score=2.0)) is False
    stored = json.loads(rules.store.collection("results").get("r-new") or b"{}")
    assert stored["score"] == 2.0 and stored["status"] == "active"
    assert stored["class"]["sourcedId"] == line_item["class"]  # IC fills the class in
    assert stored["dateLastModified"] > "2026-11-20"


@pytest.mark.parametrize(
    ("change", "status", "needle"),
    [
        ({"score": 10_000.0}, 422, "outside"),
        ({"student": {"sourcedId": "nobody"}}, 422, "unknown users"),
        ({"scoreStatus": None}, 422, "scoreStatus"),
        ({"late": True}, 422, '"true" or "false"'),
        ({"grade": "A"}, 422, "unknown field"),
        ({"lineItem": {"sourcedId": "missing"}}, 422, "unknown lineItems"),
    ],
)
def test_bad_results_are_refused_with_a_reason(rules: WriteRules, change: dict[str, Any], status: int,
                                               needle: str) -> None:
    with pytest.raises(ApiError) as caught:
        rules.put("results", "r-bad", _result(rules, _open_line_item(rules), **change))
    assert caught.value.status == status and needle in caught.value.description
    assert rules.store.collection("results").get("r-bad") is None


def test_student_must_be_enrolled_in_the_class(rules: WriteRules) -> None:
    line_item = _open_line_item(rules)
    outsider = next(
        s for s in rules.factory.school_students[next(iter(rules.factory.school_students))]
        if s not in rules.factory.class_students[line_item["class"]]
    )
    with pytest.raises(ApiError, match="not enrolled"):
        rules.put("results", "r-x", _result(rules, line_item, student={"sourcedId": outsider}))


def test_closed_grading_window_is_403(rules: WriteRules) -> None:
    facts = rules.factory.line_items
    n = facts.closed.index(True)
    line_item = {"id": facts.ids[n], "class": facts.class_id[n], "max": facts.value_max[n]}
    with pytest.raises(ApiError) as caught:
        rules.put("results", "r-closed", _result(rules, line_item, score=facts.value_min[n]))
    assert caught.value.status == 403 and "closed" in caught.value.description


def test_rubric_text_scores_must_be_on_the_scale(rules: WriteRules) -> None:
    rubric = _open_line_item(rules, "rubric")
    with pytest.raises(ApiError, match="rubric"):
        rules.put("results", "r-r", _result(rules, rubric, score=2.0, textScore="Awesome"))
    assert rules.put("results", "r-r", _result(rules, rubric, score=2.0, textScore="Developing"))


def test_line_item_without_category_is_uncategorized_and_gets_its_school(rules: WriteRules) -> None:
    class_id = next(iter(rules.factory.class_students))
    record = {
        "title": "Pushed from the vendor app",
        "assignDate": "2026-11-20T08:00:00Z",
        "dueDate": "2026-11-27T08:00:00Z",
        "class": {"sourcedId": class_id},
        "resultValueMin": 0,
        "resultValueMax": 10,
    }
    assert rules.put("lineItems", "li-pushed", record)
    stored = json.loads(rules.store.collection("lineItems").get("li-pushed") or b"{}")
    category = json.loads(rules.store.collection("categories").get(stored["category"]["sourcedId"]) or b"{}")
    assert category["title"] == "Uncategorized"
    assert stored["school"]["sourcedId"] == rules.factory.class_info[class_id]["school"]
    # and results can now be written against it, within its range
    pushed = {"id": "li-pushed", "class": class_id, "max": 10.0}
    assert rules.put("results", "r-pushed", _result(rules, pushed, score=10.0))
    with pytest.raises(ApiError, match="outside"):
        rules.put("results", "r-pushed2", _result(rules, pushed, score=10.5))
