"""Fixtures of the warehouse integration tests: a migrated warehouse on SQLite and on Postgres."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from gradesync.entities import get_entity
from gradesync.records import flatten_records, rejects_table
from gradesync.warehouse import Warehouse
from gradesync.warehouse.testing import throwaway_schema


def _sqlite(tmp_path: Path) -> Iterator[Warehouse]:
    wh = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    wh.migrate()
    yield wh
    wh.dispose()


def _postgres() -> Iterator[Warehouse]:
    with throwaway_schema() as (url, schema):
        wh = Warehouse(url, schema=schema)
        wh.migrate()
        yield wh
        wh.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def wh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """A freshly migrated warehouse, once per database."""
    yield from (_sqlite(tmp_path) if request.param == "sqlite" else _postgres())


@pytest.fixture
def pg_wh() -> Iterator[Warehouse]:
    yield from _postgres()


def result(i: int, *, score: float | None = None, status: str = "active", comment: str | None = None,
           dlm: str = "2026-09-01T08:00:00Z", **extra: Any) -> dict[str, Any]:
    """A OneRoster 1.2 result record."""
    rec = {
        "sourcedId": f"res-{i}",
        "status": status,
        "dateLastModified": dlm,
        "lineItem": {"sourcedId": f"li-{i % 3}", "type": "lineItem", "href": "x"},
        "student": {"sourcedId": f"stu-{i}", "type": "user", "href": "x"},
        "class": {"sourcedId": "cls-1", "type": "class", "href": "x"},
        "scoreStatus": "fully graded",
        "score": float(i) if score is None else score,
        "scoreDate": "2026-09-01",
        "comment": comment,
        "late": "false",
        "metadata": {"ic": {"legacysourceId": str(1000 + i)}},
    }
    rec.update(extra)
    return rec


@pytest.fixture
def make_result() -> Callable[..., dict[str, Any]]:
    return result


class Stager:
    """Writes OneRoster records as staged Parquet files, like the extract task does."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counter = itertools.count()

    def __call__(self, records: list[dict[str, Any]], entity: str = "results", api_version: str = "1.2",
                 *, files: int = 1) -> tuple[list[str], pd.DataFrame, int]:
        """Return (paths, rejects frame, extracted count) for the records."""
        table, rejects = flatten_records(get_entity(entity), api_version, records)
        paths = []
        per_file = max(1, -(-table.num_rows // files))
        for start in range(0, max(table.num_rows, 1), per_file):
            path = self.folder / f"{entity}-{next(self.counter):04d}.parquet"
            pq.write_table(table.slice(start, per_file), path)
            paths.append(str(path))
        return paths, rejects_table(rejects).to_pandas(), len(records)


@pytest.fixture
def stage(tmp_path: Path) -> Stager:
    folder = tmp_path / "staging"
    folder.mkdir()
    return Stager(folder)
