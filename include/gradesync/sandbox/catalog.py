"""What the sandbox serves: collections per API version, envelopes, fields and OAuth scopes.

One table for the server (routing, envelopes, query validation) and the write rules (unknown fields),
derived from the project's entity registry for gradebook collections.
"""

from __future__ import annotations

from gradesync.entities import ENTITIES

SCOPE_PREFIX = "https://purl.imsglobal.org/spec/or/v1p2/scope/"
ALL_SCOPES = tuple(
    SCOPE_PREFIX + s
    for s in (
        "roster-core.readonly",
        "roster.readonly",
        "gradebook.readonly",
        "gradebook-core.readonly",
        "gradebook.createput",
        "gradebook.createpost",
        "gradebook.delete",
        "assessment.readonly",
        "assessment.createput",
        "assessment.delete",
    )
)

# collection → (envelope plural, envelope singular)
ENVELOPES: dict[str, tuple[str, str]] = {
    "orgs": ("orgs", "org"),
    "schools": ("orgs", "org"),
    "academicSessions": ("academicSessions", "academicSession"),
    "terms": ("academicSessions", "academicSession"),
    "gradingPeriods": ("academicSessions", "academicSession"),
    "users": ("users", "user"),
    "students": ("users", "user"),
    "courses": ("courses", "course"),
    "classes": ("classes", "class"),
    "categories": ("categories", "category"),
    "lineItems": ("lineItems", "lineItem"),
    "results": ("results", "result"),
    "scoreScales": ("scoreScales", "scoreScale"),
    "assessmentLineItems": ("assessmentLineItems", "assessmentLineItem"),
    "assessmentResults": ("assessmentResults", "assessmentResult"),
}
ROSTERING = ("orgs", "schools", "academicSessions", "terms", "gradingPeriods", "users", "students", "courses", "classes")
GRADEBOOK_11 = ("categories", "lineItems", "results")
GRADEBOOK_12 = GRADEBOOK_11 + ("scoreScales", "assessmentLineItems", "assessmentResults")
ASSESSMENT = ("assessmentLineItems", "assessmentResults")
_COMMON_FIELDS = ("sourcedId", "status", "dateLastModified", "metadata")
_ROSTER_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # collection → (plain fields, reference fields)
    "orgs": (("name", "type", "identifier", "children"), ("parent",)),
    "academicSessions": (("title", "startDate", "endDate", "type", "schoolYear", "children"), ("parent",)),
    "users": (("enabledUser", "givenName", "familyName", "identifier", "roles", "role", "orgs", "grades", "email",
               "username"), ()),
    "courses": (("title", "courseCode", "grades", "subjects"), ("org", "schoolYear")),
    "classes": (("title", "classCode", "classType", "location", "grades", "subjects", "terms", "periods"),
                ("course", "school")),
}
_ROSTER_ALIAS = {"schools": "orgs", "terms": "academicSessions", "gradingPeriods": "academicSessions",
                 "students": "users"}


def known_fields(collection: str, api: str) -> tuple[frozenset[str], frozenset[str]]:
    """(fields, reference fields) a collection has in ``api``: what filter/sort/fields may name."""
    for entity in ENTITIES.values():
        if entity.collection == collection:
            fs = entity.fields_for(api)
            plain = {f.source for f in fs} | {"learningObjectiveSet"} if api == "1.2" else {f.source for f in fs}
            return frozenset(plain), frozenset(f.source for f in fs if f.kind == "ref")
    plain_fields, refs = _ROSTER_FIELDS[_ROSTER_ALIAS.get(collection, collection)]
    return frozenset(_COMMON_FIELDS + plain_fields + refs), frozenset(refs)
