"""The sandbox state: queries over encoded records, teacher-like changes, the forward-only clock."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from gradesync.sandbox.generator import DATA_AS_OF, generate
from gradesync.sandbox.query import Predicate, parse_datetime
from gradesync.sandbox.store import SandboxClock, Scope, Store


@pytest.fixture
def store() -> Store:
    return Store(generate("tiny", 5, "1.2"))


def _ids(store: Store, collection: str, slots: list[int]) -> list[str]:
    return [store.collection(collection).ids[s] for s in slots]


def test_unfiltered_select_is_the_serving_order(store: Store) -> None:
    assert _ids(store, "results", store.select("results")) == store.dataset.collections["results"].ids


def test_filter_and_or_scope_and_sort(store: Store) -> None:
    records = store.records("results")
    exempt = {r["sourcedId"] for r in records if r["scoreStatus"] == "exempt"}
    submitted = {r["sourcedId"] for r in records if r["scoreStatus"] == "submitted"}
    got = store.select("results", predicates=(Predicate("scoreStatus", "=", "exempt"),))
    assert set(_ids(store, "results", got)) == exempt
    either = store.select(
        "results",
        predicates=(Predicate("scoreStatus", "=", "exempt"), Predicate("scoreStatus", "=", "submitted")),
        joiner="OR",
    )
    assert set(_ids(store, "results", either)) == exempt | submitted
    line_item = records[0]["lineItem"]["sourcedId"]
    scoped = store.select("results", (Scope("lineItem.sourcedId", frozenset({line_item})),))
    assert set(_ids(store, "results", scoped)) == {
        r["sourcedId"] for r in records if r["lineItem"]["sourcedId"] == line_item
    }
    by_score = store.select("results", sort="score", descending=True)
    scores = [r.get("score") for r in (json.loads(store.collection("results").blobs[s]) for s in by_score)]
    graded = [s for s in scores if s is not None]
    assert graded == sorted(graded, reverse=True)


def test_modify_advances_date_last_modified_beyond_all_data(store: Store) -> None:
    before = max(parse_datetime(r["dateLastModified"]) for r in store.records("results"))
    changed = store.modify("results", count=3)
    assert len(changed) == 3
    after = {r["sourcedId"]: r for r in store.records("results")}
    stamps = [parse_datetime(after[s]["dateLastModified"]) for s in changed]
    assert all(stamp > before for stamp in stamps) and stamps == sorted(stamps)
    assert all(after[s]["comment"].startswith("Regraded") for s in changed)
    delta = store.select("results", predicates=(Predicate("dateLastModified", ">", before.isoformat()),))
    assert set(_ids(store, "results", delta)) == set(changed)


def test_add_fills_ungraded_pairs_and_lands_where_asked(store: Store) -> None:
    pending = list(store.factory.pending_results[:2])
    added = store.add("results", count=2)
    records = {r["sourcedId"]: r for r in store.records("results")}
    line_items = store.factory.line_items.ids
    assert {(records[a]["lineItem"]["sourcedId"], records[a]["student"]["sourcedId"]) for a in added} == {
        (line_items[n], student) for n, student in pending
    }
    front = store.add("results", count=1, position=0)
    assert store.collection("results").ids[store.select("results")[0]] == front[0]


def test_add_line_item_makes_its_results_addable(store: Store) -> None:
    store.factory.pending_results.clear()
    (line_item,) = store.add("lineItems", count=1)
    added = store.add("results", count=3)
    records = {r["sourcedId"]: r for r in store.records("results")}
    assert {records[a]["lineItem"]["sourcedId"] for a in added} == {line_item}


def test_tombstone_keeps_the_record_and_vanish_removes_it(store: Store) -> None:
    first, second = store.collection("lineItems").ids[:2]
    total = len(store.collection("lineItems"))
    assert store.delete("lineItems", first, "tombstone")
    tomb = json.loads(store.collection("lineItems").get(first) or b"{}")
    assert tomb["status"] == "tobedeleted" and parse_datetime(tomb["dateLastModified"]) > DATA_AS_OF
    assert store.delete("lineItems", second, "vanish")
    assert store.collection("lineItems").get(second) is None and len(store.collection("lineItems")) == total - 1
    assert not store.delete("lineItems", second, "vanish")


def test_changes_invalidate_cached_queries(store: Store) -> None:
    wanted = (Predicate("scoreStatus", "=", "fully graded"),)
    before = len(store.select("results", predicates=wanted))
    target = next(r["sourcedId"] for r in store.records("results") if r["scoreStatus"] == "exempt")
    store.modify("results", ids=[target])
    assert len(store.select("results", predicates=wanted)) == before + 1


def test_picks_are_reproducible() -> None:
    assert Store(generate("tiny", 5, "1.2")).pick("results", 4) == Store(generate("tiny", 5, "1.2")).pick("results", 4)


def test_clock_only_moves_forward() -> None:
    future = datetime(2100, 1, 1, tzinfo=timezone.utc)
    clock = SandboxClock(floor=future)
    stamps = [clock.now() for _ in range(5)]
    assert stamps[0] > future and stamps == sorted(set(stamps))


def test_regrades_stay_within_the_rules_the_sandbox_enforces() -> None:
    store = Store(generate("school", 5, "1.2"))
    changed = set(store.modify("results", count=400))
    facts = store.factory.line_items
    for record in store.records("results"):
        if record["sourcedId"] not in changed:
            continue
        item = facts.get(record["lineItem"]["sourcedId"])
        assert item is not None and item["min"] <= record["score"] <= item["max"]
        if item["kind"] == "rubric":
            assert record["textScore"] == ["Beginning", "Developing", "Meets", "Exceeds"][int(record["score"]) - 1]


def test_adding_more_results_than_pending_pairs_adds_an_assignment(store: Store) -> None:
    line_items_before = len(store.collection("lineItems"))
    wanted = len(store.factory.pending_results) + 5
    assert len(store.add("results", count=wanted)) == wanted
    assert len(store.collection("lineItems")) > line_items_before
    pairs = [(r["lineItem"]["sourcedId"], r["student"]["sourcedId"]) for r in store.records("results")]
    assert len(pairs) == len(set(pairs))  # never two results for one student on one assignment
