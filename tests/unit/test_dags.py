"""DAG validation: every sample integration builds the documented graph, and a broken config fails alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gradesync.config import discover
from gradesync.dag_factory import build_dags

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "include" / "integrations"
SAMPLE_CONFIGS = [c for _, c in discover(SAMPLES).configs]


def dagbag(folder: Path, monkeypatch: pytest.MonkeyPatch, integrations: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("GRADESYNC_INTEGRATIONS_DIR", str(integrations))
    return DagBag(dag_folder=str(folder))


def test_dags_folder_loads_every_sample_without_import_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = dagbag(ROOT / "dags", monkeypatch, SAMPLES)
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {c.dag_id for c in SAMPLE_CONFIGS}


@pytest.mark.parametrize("config", SAMPLE_CONFIGS, ids=lambda c: c.name)
def test_structure_of_each_sample_dag(config) -> None:
    dag = build_dags(str(SAMPLES))[config.dag_id]
    assert [t.task_id for t in dag.tasks] == ["validate_config", "refresh_token", "extract", "dedupe", "load",
                                              "report"]
    downstream = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert downstream == {
        "validate_config": ["refresh_token"],
        "refresh_token": ["extract"],
        "extract": ["dedupe"],
        "dedupe": ["load"],
        "load": ["report"],
        "report": [],
    }
    assert dag.max_active_runs == 1
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"  # real data intervals for deltas
    assert dag.timetable.expression == config.schedule
    assert "gradesync" in dag.tags and f"oneroster-{config.api_version}" in dag.tags
    assert set(dag.params) == {"full_refresh", "entities", "since", "dry_run"}
    extract = dag.get_task("extract")
    assert extract.pool == config.pool
    assert extract.pool_slots == config.extraction.max_concurrent_requests
    assert extract.op_kwargs_expand_input.value["entity"] == config.selected_entities
    assert dag.get_task("refresh_token").retries == 0  # bad credentials must fail fast
    assert dag.get_task("load").retries == config.retries
    for task in dag.tasks:
        assert task.doc_md, f"{task.task_id} has no doc_md"
        assert task.execution_timeout is not None


def test_broken_config_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    integrations = tmp_path / "integrations"
    shutil.copytree(SAMPLES, integrations)
    (integrations / "broken.yaml").write_text("name: broken\napi_version: '1.1'\nconnection_id: ic\n"
                                              "entities: [assessment_results]\n")
    dags = tmp_path / "dags"
    shutil.copytree(ROOT / "dags", dags)
    with caplog.at_level("ERROR"):
        bag = dagbag(dags, monkeypatch, integrations)
    assert set(bag.dag_ids) == {c.dag_id for c in SAMPLE_CONFIGS}
    assert "broken.yaml" in caplog.text and "entities" in caplog.text
