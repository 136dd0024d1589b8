"""Trigger-form Params: what a person may type, and the sentence they get when it is wrong."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from gradesync.run_params import InvalidRunParams, RunParams, dag_params, parse_run_params

V11 = ["categories", "line_items", "results"]
V12 = ["categories", "score_scales", "line_items", "results", "assessment_line_items", "assessment_results"]
NOW = datetime(2026, 11, 15, 12, 0, tzinfo=timezone.utc)


def parse(params: dict, allowed: list[str] = V12) -> RunParams:
    return parse_run_params(params, allowed_entities=allowed, now=NOW)


def problems(params: dict, allowed: list[str] = V12) -> list[str]:
    with pytest.raises(InvalidRunParams) as caught:
        parse(params, allowed)
    return caught.value.problems


def test_defaults_sync_every_entity_as_a_delta() -> None:
    assert parse({}) == RunParams(full_refresh=False, entities=V12, since=None, dry_run=False)
    assert parse({"full_refresh": False, "entities": None, "since": None, "dry_run": False}).entities == V12


def test_entities_keep_load_order_and_drop_repeats() -> None:
    assert parse({"entities": ["results", "categories", "results"]}).entities == ["categories", "results"]
    assert parse({"entities": "results, line_items"}).entities == ["line_items", "results"]


def test_entity_the_integration_does_not_sync_is_named_with_the_choices() -> None:
    [message] = problems({"entities": ["assessment_results"]}, V11)
    assert message == ("Param 'entities': 'assessment_results' is not synced by this integration "
                       "(choose from categories, line_items, results)")


def test_empty_entity_list_is_rejected() -> None:
    [message] = problems({"entities": []})
    assert message.startswith("Param 'entities' is empty")
    assert "leave it unset" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01T00:00:00Z", datetime(2026, 11, 1, tzinfo=timezone.utc)),
        ("2026-11-01T06:30:00+06:00", datetime(2026, 11, 1, 0, 30, tzinfo=timezone.utc)),
        ("2026-11-01T00:00:00", datetime(2026, 11, 1, tzinfo=timezone.utc)),  # no offset: UTC
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=timezone.utc)),  # date only: midnight UTC
        (date(2026, 11, 1), datetime(2026, 11, 1, tzinfo=timezone.utc)),
        (datetime(2026, 11, 1, 1, tzinfo=timezone(timedelta(hours=1))), datetime(2026, 11, 1, tzinfo=timezone.utc)),
    ],
)
def test_since_accepts_iso_date_times_and_dates_as_utc(text, expected) -> None:
    since = parse({"since": text}).since
    assert since == expected
    assert since is not None and since.utcoffset() == timedelta(0)


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "01/11/2026", 42])
def test_since_that_is_not_a_date_time_gets_an_example(bad) -> None:
    [message] = problems({"since": bad})
    assert message == (f"Param 'since' must be an ISO 8601 date-time such as 2026-11-01T00:00:00Z, got {bad!r}")


def test_since_in_the_future_is_rejected() -> None:
    [message] = problems({"since": "2026-11-16"})
    assert message.startswith("Param 'since' is in the future (2026-11-16T00:00:00+00:00")


def test_full_refresh_with_since_contradict() -> None:
    [message] = problems({"full_refresh": True, "since": "2026-11-01"})
    assert message.startswith("full_refresh and since contradict each other")


def test_booleans_from_a_command_line_and_wrong_ones() -> None:
    assert parse({"dry_run": "true", "full_refresh": "False"}) == RunParams(entities=V12, dry_run=True)
    [message] = problems({"dry_run": "maybe"})
    assert message == "Param 'dry_run' must be true or false, got 'maybe'"


def test_typo_in_a_param_name_suggests_the_right_one() -> None:
    [message] = problems({"ful_refresh": True})
    assert message == "Param 'ful_refresh' is not a grade sync Param (did you mean 'full_refresh'?)"
    declared = parse_run_params({"notify": True}, allowed_entities=V12, now=NOW, other_params={"notify"})
    assert declared == RunParams(entities=V12)


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"since": "soon", "entities": ["nope"], "dry_run": 3})
    assert len(found) == 3
    assert str(InvalidRunParams(found)) == "; ".join(found)


def test_to_dict_is_json_ready() -> None:
    params = parse({"since": "2026-11-01", "entities": ["results"]})
    assert params.to_dict() == {"full_refresh": False, "entities": ["results"],
                                "since": "2026-11-01T00:00:00+00:00", "dry_run": False}


def test_dag_params_form_and_parser_agree() -> None:
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamsDict

    form = dag_params(V11)
    assert list(form) == ["full_refresh", "entities", "since", "dry_run"]
    assert all(isinstance(p, Param) for p in form.values())
    for name, param in form.items():
        assert param.schema.get("title"), name
        assert param.description, name
        assert param.schema["$schema"] == "http://json-schema.org/draft-07/schema#"  # the cheaper meta-schema
    assert form["entities"].schema["examples"] == V11  # the UI's multi-select
    assert form["entities"].schema["items"]["enum"] == V11
    # Airflow's own schema validation accepts what the parser accepts (date-only since included) ...
    resolved = ParamsDict(form)
    resolved.update({"since": "2026-11-01", "entities": ["results"]})
    values = resolved.validate()
    assert parse(values, V11) == RunParams(entities=["results"], since=datetime(2026, 11, 1, tzinfo=timezone.utc))
    # ... and rejects an entity outside the integration before a run is even created.
    bad = ParamsDict(form)
    with pytest.raises(Exception, match="assessment_results"):
        bad.update({"entities": ["assessment_results"]})
        bad.validate()
