"""Filter grammar, typed comparisons, paging parameters and error bodies of the sandbox."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradesync.sandbox.query import (
    ApiError,
    Predicate,
    check_field,
    comparable,
    error_body,
    filter_operand,
    parse_filter,
    parse_list_params,
    predicate_test,
)


@pytest.mark.parametrize("op", ["=", "!=", ">", ">=", "<", "<=", "~"])
def test_every_operator_parses(op: str) -> None:
    parsed = parse_filter(f"title{op}'Quiz'")
    assert parsed.predicates == (Predicate("title", op, "Quiz"),)


def test_two_predicates_with_and_or_and_dotted_fields() -> None:
    both = parse_filter("class.sourcedId='c1' AND dateLastModified>'2026-11-01T00:00:00Z'")
    assert both.joiner == "AND"
    assert [p.field for p in both.predicates] == ["class.sourcedId", "dateLastModified"]
    either = parse_filter("scoreStatus='exempt' or scoreStatus='submitted'")
    assert either.joiner == "OR" and len(either.predicates) == 2


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r"title='Teacher\'s pick'", "Teacher's pick"),
        ("title='Teacher''s pick'", "Teacher's pick"),
        ("title='say \"hi\"'", 'say "hi"'),
        ("title='a AND b'", "a AND b"),
        ("title = 'spaced'", "spaced"),
        ("title='日本の歴史 🌍'", "日本の歴史 🌍"),
        ("title=''", ""),
    ],
)
def test_quoted_values_keep_quotes_keywords_and_unicode(text: str, value: str) -> None:
    assert parse_filter(text).predicates[0].value == value


@given(st.text(max_size=30))
def test_any_value_survives_backslash_escaping(value: str) -> None:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    assert parse_filter(f"comment='{escaped}'").predicates[0].value == value


@pytest.mark.parametrize(
    "text",
    [
        "title=Quiz",  # unquoted
        "title='Quiz",  # unterminated
        "title=='Quiz'",
        "title^'Quiz'",
        "='Quiz'",
        "a='1' AND b='2' AND c='3'",  # three predicates
        "a='1' XOR b='2'",
        "a='1' b='2'",
    ],
)
def test_malformed_filters_are_400_invalid_filter_field(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_filter(text)
    assert caught.value.status == 400 and caught.value.code_minor == "invalid_filter_field"


def test_date_times_compare_as_instants_not_text() -> None:
    after = predicate_test(Predicate("dateLastModified", ">", "2026-11-01T01:00:00+02:00"))
    # 2026-10-31T23:30Z is after 2026-10-31T23:00Z even though "10-31" < "11-01" as text
    assert after(comparable("dateLastModified", "2026-10-31T23:30:00.000Z"))
    assert not after(comparable("dateLastModified", "2026-10-31T22:59:59.999Z"))
    bare_date = predicate_test(Predicate("dateLastModified", ">=", "2026-11-01"))
    assert bare_date(comparable("dateLastModified", "2026-11-01T00:00:00.000Z"))


def test_numbers_compare_numerically_and_contains_ignores_case() -> None:
    assert predicate_test(Predicate("score", ">", "9"))(comparable("score", 10.0))
    assert not predicate_test(Predicate("score", "<", "9"))(comparable("score", 10.0))
    assert predicate_test(Predicate("title", "~", "quiz"))("Pop QUIZ 3")
    assert predicate_test(Predicate("score", "!=", "5"))(None)
    assert not predicate_test(Predicate("score", "=", "5"))(None)


@pytest.mark.parametrize(("field", "value"), [("dateLastModified", "yesterday"), ("score", "ten")])
def test_bad_literals_for_typed_fields_are_400(field: str, value: str) -> None:
    with pytest.raises(ApiError) as caught:
        filter_operand(field, value)
    assert caught.value.status == 400


def test_check_field_accepts_known_refs_and_metadata_only() -> None:
    known, refs = frozenset({"title", "class", "metadata"}), frozenset({"class"})
    check_field("class.sourcedId", known, refs, "invalid_filter_field", "filter")
    check_field("metadata.ic.legacysourceId", known, refs, "invalid_filter_field", "filter")
    for bad in ("bogus", "title.sourcedId", "class.name"):
        with pytest.raises(ApiError):
            check_field(bad, known, refs, "invalid_filter_field", "filter")


def test_list_params_defaults_clamp_and_errors() -> None:
    assert parse_list_params({}, max_limit=500).limit == 100  # OneRoster's default page
    params = parse_list_params({}, max_limit=50)  # the default is clamped too
    assert (params.limit, params.offset, params.order_by, params.filter) == (50, 0, "asc", None)
    assert parse_list_params({"limit": ["100000"]}, max_limit=50_000).limit == 50_000
    assert parse_list_params({"fields": ["a,b", "c"]}, 10).fields == ("a", "b", "c")
    for bad in ({"limit": ["0"]}, {"limit": ["x"]}, {"offset": ["-1"]}, {"orderBy": ["up"]}):
        with pytest.raises(ApiError) as caught:
            parse_list_params(bad, 100)
        assert caught.value.status == 400


def test_error_bodies_follow_each_version() -> None:
    v12 = json.loads(error_body("1.2", "unknownobject", "no such thing"))
    assert v12["imsx_codeMajor"] == "failure" and v12["imsx_severity"] == "error"
    assert v12["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == "unknownobject"
    v11 = json.loads(error_body("1.1", "invalid_filter_field", "bad"))
    assert v11["statusInfoSet"][0]["imsx_description"] == "bad"
