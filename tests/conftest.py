"""Shared test set-up: an isolated Airflow home, the Postgres and OneRoster-spec gates."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its home on first import: give the whole session a throwaway one.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="gradesync-airflow-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a reachable Postgres; skips (or, under GRADESYNC_REQUIRE_POSTGRES=1, fails) when there is none."""
    from gradesync.warehouse.testing import need_postgres

    return need_postgres()


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    """The official OneRoster 1.2 OpenAPI folder; missing is a failure under CI, a skip elsewhere."""
    folder = Path(os.environ.get("ONEROSTER_SPEC_DIR") or PROJECT_ROOT.parent / "shared" / "oneroster-spec")
    if not (folder / "onerosterv1p2gradebookservice_openapi3_v1p0.json").is_file():
        message = f"OneRoster spec not found in {folder} (set ONEROSTER_SPEC_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder
