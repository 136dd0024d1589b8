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

DEFAULT_PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"


def require_postgres() -> bool:
    return os.environ.get("GRADESYNC_REQUIRE_POSTGRES") == "1" or os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a reachable Postgres; skips (or, when required, fails) when there is none."""
    import sqlalchemy as sa

    url = os.environ.get("GRADESYNC_PG_URL", DEFAULT_PG_URL)
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "no usable Postgres"
        message = f"Postgres at {url} is unreachable: {exc.__class__.__name__}: {exc}"
        if require_postgres():
            pytest.fail(message + " (GRADESYNC_REQUIRE_POSTGRES=1)")
        pytest.skip(message)
    return url


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
