"""The data generator: reproducible bytes, every shape the pipeline must survive, version fidelity."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from gradesync.entities import ENTITIES
from gradesync.sandbox.generator import HREF_MARKER, PRESETS, SCORE_STATUSES, generate


def _records(api: str, collection: str, preset: str = "tiny", seed: int = 42) -> list[dict[str, Any]]:
    return [json.loads(b) for b in generate(preset, seed, api).collections[collection].blobs]


@pytest.fixture(scope="module")
def school12() -> Any:
    return generate("school", 42, "1.2")


@pytest.fixture(scope="module")
def school11() -> Any:
    return generate("school", 42, "1.1")


@pytest.mark.parametrize("api", ["1.1", "1.2"])
def test_same_seed_same_bytes_other_seed_other_bytes(api: str) -> None:
    first, second = generate("school", 7, api).digest(), generate("school", 7, api).digest()
    assert first == second
    assert generate("school", 8, api).digest() != first


def test_preset_sizes() -> None:
    tiny = generate("tiny", 1, "1.2")
    results = len(tiny.collections["results"].ids)
    assert 100 <= results <= 1000 and len(tiny.collections["classes"].ids) == PRESETS["tiny"].classes_per_school
    sizes = PRESETS["district"]
    planned = sizes.schools * sizes.classes_per_school * sizes.students_per_class * sizes.line_items_per_class
    assert 950_000 <= planned * (1 - sizes.pending_share) <= 1_050_000


def test_sourced_ids_are_unique_per_collection(school12: Any) -> None:
    for name, data in school12.collections.items():
        assert len(set(data.ids)) == len(data.ids), name
        assert [json.loads(b)["sourcedId"] for b in data.blobs[:50]] == data.ids[:50]


def test_results_cover_every_score_status_flag_and_score_shape(school12: Any) -> None:
    results = [json.loads(b) for b in school12.collections["results"].blobs]
    statuses = Counter(r["scoreStatus"] for r in results)
    assert set(statuses) == set(SCORE_STATUSES) and any(s.startswith("ext:") for s in statuses)
    assert {r["status"] for r in results} == {"active", "tobedeleted"}
    for flag in ("inProgress", "incomplete", "late", "missing"):
        assert {r[flag] for r in results} == {"true", "false"}
    assert any("score" not in r for r in results)  # ungraded: no score in 1.2
    assert any("textScore" in r and "score" in r for r in results)
    assert all(isinstance(r.get("score", 0.0), float) for r in results)
    assert all(r["metadata"]["ic"]["legacysourceId"].isdigit() for r in results)
    comments = {r.get("comment") for r in results} - {None}
    assert any('"' in c for c in comments) and any("'" in c for c in comments)
    assert any(any(ord(ch) > 127 for ch in c) for c in comments) and any("\n" in c for c in comments)


def test_line_items_scales_and_categories(school12: Any) -> None:
    line_items = [json.loads(b) for b in school12.collections["lineItems"].blobs]
    scales = {s["sourcedId"]: s for s in (json.loads(b) for b in school12.collections["scoreScales"].blobs)}
    kinds = Counter(scales[li["scoreScale"]["sourcedId"]]["type"] for li in line_items)
    assert set(kinds) == {"points", "percent", "rubric"}
    assert any('"' in li["title"] for li in line_items) and any(ord(c) > 127 for li in line_items for c in li["title"])
    assert all(li["resultValueMin"] <= li["resultValueMax"] for li in line_items)
    categories = [json.loads(b) for b in school12.collections["categories"].blobs]
    assert all(isinstance(c["weight"], float) for c in categories)


def test_hrefs_are_stored_relative_to_the_oneroster_root(school12: Any) -> None:
    result = json.loads(school12.collections["results"].blobs[0])
    assert result["lineItem"]["href"].startswith(HREF_MARKER + "gradebook/v1p2/lineItems/")
    assert result["student"]["href"].startswith(HREF_MARKER + "rostering/v1p2/users/")


@pytest.mark.parametrize("collection", ["categories", "lineItems", "results"])
def test_v11_records_carry_only_v11_fields(school11: Any, collection: str) -> None:
    entity = next(e for e in ENTITIES.values() if e.collection == collection)
    allowed = {f.source for f in entity.fields_for("1.1")}
    only_12 = {f.source for f in entity.fields} - allowed
    for blob in school11.collections[collection].blobs:
        record = json.loads(blob)
        assert set(record) <= allowed, set(record) - allowed
        assert not set(record) & only_12
    if collection == "results":
        scores = [json.loads(b)["score"] for b in school11.collections["results"].blobs]
        assert None in scores and any(isinstance(s, float) for s in scores)  # required key, null when ungraded


def test_v11_has_no_assessments_or_score_scales(school11: Any) -> None:
    assert not {"scoreScales", "assessmentLineItems", "assessmentResults"} & set(school11.collections)


def test_legacy_ids_link_the_two_versions(school11: Any, school12: Any) -> None:
    """1.2 keeps the 1.1 id in metadata.ic.legacysourceId, as IC does after a version move."""
    v11 = school11.collections["lineItems"].ids
    v12 = [json.loads(b)["metadata"]["ic"]["legacysourceId"] for b in school12.collections["lineItems"].blobs]
    assert v11 == v12
