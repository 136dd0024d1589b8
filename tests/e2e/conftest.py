"""Whole-DAG runs through ``airflow dags test`` against a live sandbox, into SQLite and Postgres."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from gradesync.cli import airflow_env, ensure_airflow_db


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    ensure_airflow_db(airflow_env(home), home / "migrate.log")
    return home


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture
def postgres_warehouse(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A fresh Postgres schema per test: (Airflow connection URI, schema name)."""
    schema = f"gs_e2e_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(postgres_url)
    url = engine.url
    uri = f"postgresql://{url.username}@{url.host}:{url.port or 5432}/{url.database}"
    yield uri, schema
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()
