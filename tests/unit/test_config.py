from __future__ import annotations

from pathlib import Path

import pytest

from gradesync.config import ConfigError, discover, load_config, parse_config

VALID = {"name": "district_a", "api_version": "1.2", "connection_id": "ic_district_a"}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_gets_documented_defaults() -> None:
    config = parse_config(VALID)
    assert config.dag_id == "grade_sync_district_a"
    assert config.warehouse_connection_id == "gradesync_warehouse"
    assert config.warehouse_schema == "gradesync"
    assert config.schedule == "0 2 * * *"
    assert config.extraction.max_concurrent_requests == 5
    assert config.selected_entities == [
        "categories", "score_scales", "line_items", "results", "assessment_line_items", "assessment_results",
    ]


def test_version_11_defaults_to_its_three_entities() -> None:
    config = parse_config({**VALID, "api_version": "1.1"})
    assert config.selected_entities == ["categories", "line_items", "results"]


def test_unquoted_yaml_version_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "name: a\napi_version: 1.1\nconnection_id: ic\n")
    assert load_config(path).api_version == "1.1"


def test_assessments_on_11_are_rejected_with_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**VALID, "api_version": "1.1", "entities": ["results", "assessment_results"]})
    message = str(err.value)
    assert "assessment_results" in message and "1.1" in message and "api_version" in message


def test_selected_entities_keep_load_order() -> None:
    config = parse_config({**VALID, "entities": ["results", "categories", "line_items"]})
    assert config.selected_entities == ["categories", "line_items", "results"]


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"api_version": "1.2", "connection_id": "c"}, "name", "add it"),
        ({**VALID, "api_version": "2.0"}, "api_version", "1.1"),
        ({**VALID, "name": "Bad-Name"}, "name", "lowercase"),
        ({**VALID, "connection_idd": "x"}, "connection_idd", "spelling"),
        ({**VALID, "extraction": {"max_concurrent_requests": 0}}, "extraction.max_concurrent_requests", "greater"),
        ({**VALID, "warehouse_schema": "x; drop table"}, "warehouse_schema", "identifier"),
        ({**VALID, "extraction": {"peak_window": {"timezone": "Mars/Base"}}}, "extraction.peak_window.timezone",
         "IANA"),
        ({**VALID, "entities": ["grades"]}, "entities", "unknown"),
    ],
)
def test_errors_name_file_field_and_fix(data: dict, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "integrations/district_a.yaml")
    message = str(err.value)
    assert message.startswith("integrations/district_a.yaml: ")
    assert f"'{field}'" in message or field in message
    assert words in message


def test_inline_secrets_are_not_a_field() -> None:
    with pytest.raises(ConfigError, match="client_secret"):
        parse_config({**VALID, "client_secret": "s3cr3t"})


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "name: a\napi_version: [1.2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: invalid YAML at line \d+"):
        load_config(path)


def test_non_mapping_file_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="YAML mapping"):
        load_config(path)


def test_discover_keeps_good_files_when_one_is_broken(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: a\napi_version: '1.2'\nconnection_id: ic_a\n")
    write(tmp_path, "b.yml", "name: b\napi_version: '1.1'\nconnection_id: ic_b\n")
    write(tmp_path, "c.yaml", "name: c\napi_version: '9'\nconnection_id: ic_c\n")
    write(tmp_path, "notes.txt", "not a config")
    found = discover(tmp_path)
    assert [c.name for _, c in found.configs] == ["a", "b"]
    assert len(found.errors) == 1 and "c.yaml" in str(found.errors[0])


def test_duplicate_names_are_an_error_for_the_second_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: same\napi_version: '1.2'\nconnection_id: ic_a\n")
    write(tmp_path, "b.yaml", "name: same\napi_version: '1.2'\nconnection_id: ic_b\n")
    found = discover(tmp_path)
    assert len(found.configs) == 1
    assert "already used by a.yaml" in str(found.errors[0])


def test_discover_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "x.yaml", "name: x\napi_version: '1.2'\nconnection_id: ic_x\n")
    monkeypatch.setenv("GRADESYNC_INTEGRATIONS_DIR", str(tmp_path))
    assert [c.name for _, c in discover().configs] == ["x"]


def test_sample_integrations_are_valid() -> None:
    found = discover(Path(__file__).resolve().parents[2] / "include" / "integrations")
    assert not found.errors
    assert {c.name for _, c in found.configs} >= {"sandbox", "sandbox_v1p1"}
