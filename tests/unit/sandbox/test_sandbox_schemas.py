"""Every generated 1.2 record satisfies the official OneRoster 1.2 OpenAPI schema of its entity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from gradesync.sandbox.generator import expand_hrefs, generate, href_root

SCHEMAS = {
    "categories": "CategoryDType",
    "lineItems": "LineItemDType",
    "results": "ResultDType",
    "scoreScales": "ScoreScaleDType",
    "assessmentLineItems": "AssessmentLineItemDType",
    "assessmentResults": "AssessmentResultDType",
}

pytestmark = pytest.mark.spec


@pytest.fixture(scope="module")
def gradebook_spec(spec_dir: Path) -> dict[str, Any]:
    return json.loads((spec_dir / "onerosterv1p2gradebookservice_openapi3_v1p0.json").read_text())


def _validator(spec: dict[str, Any], schema_name: str) -> OAS30Validator:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    return OAS30Validator(schema, format_checker=oas30_format_checker)


@pytest.fixture(scope="module")
def dataset() -> Any:
    return generate("school", 3, "1.2")


@pytest.mark.parametrize("collection", sorted(SCHEMAS))
def test_generated_records_match_the_openapi_schema(
    gradebook_spec: dict[str, Any], dataset: Any, collection: str
) -> None:
    validator = _validator(gradebook_spec, SCHEMAS[collection])
    root = href_root("http://127.0.0.1:8000")
    blobs = dataset.collections[collection].blobs
    assert blobs
    stride = max(1, len(blobs) // 1500)  # a spread sample keeps this quick; shapes repeat
    for blob in blobs[::stride]:
        record = json.loads(expand_hrefs(blob, root))
        errors = sorted(validator.iter_errors(record), key=str)
        assert not errors, f"{collection} {record['sourcedId']}: {errors[0].message}"


def test_the_validator_does_reject_a_broken_record(gradebook_spec: dict[str, Any]) -> None:
    """Guards the test above against a validator that accepts anything."""
    validator = _validator(gradebook_spec, "ResultDType")
    record = json.loads(generate("tiny", 3, "1.2").collections["results"].blobs[0])
    record.pop("scoreDate")
    record["late"] = True
    assert len(list(validator.iter_errors(record))) >= 2


ROSTER_SCHEMAS = {
    "orgs": "OrgDType",
    "academicSessions": "AcademicSessionDType",
    "users": "UserDType",
    "courses": "CourseDType",
    "classes": "ClassDType",
}


@pytest.mark.parametrize("collection", sorted(ROSTER_SCHEMAS))
def test_rostering_records_match_the_rostering_schema(spec_dir: Path, dataset: Any, collection: str) -> None:
    rostering = json.loads((spec_dir / "onerosterv1p2rostersservice_openapi3_v1p0.json").read_text())
    validator = _validator(rostering, ROSTER_SCHEMAS[collection])
    root = href_root("http://127.0.0.1:8000")
    for blob in dataset.collections[collection].blobs:
        record = json.loads(expand_hrefs(blob, root))
        errors = list(validator.iter_errors(record))
        assert not errors, f"{collection} {record['sourcedId']}: {errors[0].message}"
