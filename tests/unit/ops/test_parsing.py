"""Which integrations are loaded and built, with and without Airflow's parsing context."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradesync.config import discover
from gradesync.parsing import dag_ids_to_build, discover_for_parsing

CONTEXT_ENV = "_AIRFLOW_PARSING_CONTEXT_DAG_ID"


def write(folder: Path, file_name: str, name: str, version: str = "1.2") -> Path:
    path = folder / file_name
    path.write_text(f"name: {name}\napi_version: '{version}'\nconnection_id: ic_{name}\n", encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path, "a.yaml", "a")
    write(tmp_path, "b.yaml", "b", "1.1")
    write(tmp_path, "c.yml", "c")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    return tmp_path


def test_without_context_everything_is_discovered_and_the_broken_file_reported(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONTEXT_ENV, raising=False)
    found = discover_for_parsing(folder)
    assert [c.name for _, c in found.configs] == ["a", "b", "c"]
    assert len(found.errors) == 1 and "broken.yaml" in str(found.errors[0])
    assert dag_ids_to_build(found.configs) is None


def test_a_task_loads_only_its_own_file(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONTEXT_ENV, "grade_sync_c")
    found = discover_for_parsing(folder)
    assert [(p.name, c.name) for p, c in found.configs] == [("c.yml", "c")]
    assert found.errors == []  # the broken file was not even parsed
    assert dag_ids_to_build([c for _, c in discover(folder).configs]) == {"grade_sync_c"}


def test_file_named_differently_falls_back_to_full_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "district-a.yaml", "district_a")
    write(tmp_path, "other.yaml", "other")
    monkeypatch.setenv(CONTEXT_ENV, "grade_sync_district_a")
    found = discover_for_parsing(tmp_path)
    assert [(p.name, c.name) for p, c in found.configs] == [("district-a.yaml", "district_a")]


def test_a_twin_name_gets_the_same_answer_as_the_dag_processor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "a.yaml", "b")  # sorts first: discover keeps this one, rejects b.yaml
    write(tmp_path, "b.yaml", "b", "1.1")
    monkeypatch.delenv(CONTEXT_ENV, raising=False)
    [(expected_path, _)] = discover(tmp_path).configs
    monkeypatch.setenv(CONTEXT_ENV, "grade_sync_b")
    [(path, config)] = discover_for_parsing(tmp_path).configs
    assert path == expected_path and config.api_version == "1.2"


def test_a_dag_that_is_not_ours_builds_nothing(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONTEXT_ENV, "some_other_dag")
    assert discover_for_parsing(folder).configs == []
    assert dag_ids_to_build(discover(folder).configs) == set()


def test_a_task_of_a_now_broken_file_finds_nothing_rather_than_a_stale_config(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder / "a.yaml").write_text("name: a\napi_version: '9.9'\nconnection_id: x\n", encoding="utf-8")
    monkeypatch.setenv(CONTEXT_ENV, "grade_sync_a")
    assert discover_for_parsing(folder).configs == []
