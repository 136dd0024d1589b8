"""Connection URLs from Airflow connections, identifier validation and the schema metadata."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateTable

from gradesync.entities import ENTITIES
from gradesync.warehouse import InvalidIdentifier, Warehouse, warehouse_url_from_connection
from gradesync.warehouse.naming import validate_identifier
from gradesync.warehouse.schema import HISTORY_TABLES, SYNC_TABLES, build_schema


def _connections(uri: str) -> list[object]:
    # what AIRFLOW_CONN_* env vars parse into, in the core model and in the task SDK
    from airflow.models import Connection as CoreConnection  # noqa: AIR311 - still what core hands out
    from airflow.sdk import Connection as SdkConnection

    return [CoreConnection(conn_id="gradesync_warehouse", uri=uri),  # noqa: AIR311
            SdkConnection.from_uri(uri, conn_id="gradesync_warehouse")]


@pytest.mark.parametrize("uri,expected", [
    ("sqlite:////abs/path/warehouse.db", "sqlite:////abs/path/warehouse.db"),
    ("sqlite:///relative.db", "sqlite:///relative.db"),
    ("postgresql://user@host:5432/db", "postgresql+psycopg://user@host:5432/db"),
    ("postgres://u:p%40ss@db.example:6543/wh?sslmode=require",
     "postgresql+psycopg://u:p%40ss@db.example:6543/wh?sslmode=require"),
])
def test_url_from_airflow_connection_uris(uri: str, expected: str) -> None:
    for conn in _connections(uri):
        url = warehouse_url_from_connection(conn)
        assert url == expected, type(conn)
        assert sa.make_url(url).password == sa.make_url(expected).password


def test_url_from_json_connection_with_sqlalchemy_url() -> None:
    from airflow.sdk import Connection

    conn = Connection(conn_id="w", conn_type="generic",
                      extra=json.dumps({"sqlalchemy_url": "postgres://a:b@c:5/d"}))
    assert warehouse_url_from_connection(conn) == "postgresql+psycopg://a:b@c:5/d"
    conn = Connection(conn_id="w", conn_type="postgres", host="h", login="l", schema="db",
                      extra=json.dumps({"sqlalchemy_url": "sqlite:////x.db"}))
    assert warehouse_url_from_connection(conn) == "sqlite:////x.db"


def test_unsupported_connection_type_says_what_to_do() -> None:
    from airflow.sdk import Connection

    with pytest.raises(ValueError, match="sqlalchemy_url"):
        warehouse_url_from_connection(Connection(conn_id="w", conn_type="mysql", host="h"))
    with pytest.raises(ValueError, match="postgresql or sqlite"):
        Warehouse("mysql://u@h/db")


@pytest.mark.parametrize("value", ["gradesync", "gs_2", "_x"])
def test_valid_identifiers(value: str) -> None:
    assert validate_identifier(value, "schema") == value


@pytest.mark.parametrize("value", ["", "Gradesync", "grade sync", "g;drop", 'g"x', "1st", "é", "a" * 41, "a-b"])
def test_invalid_identifiers(value: str) -> None:
    with pytest.raises(InvalidIdentifier):
        validate_identifier(value, "schema")


def test_warehouse_construction_is_cheap_and_validates() -> None:
    wh = Warehouse("postgresql://nobody@127.0.0.1:1/none", schema="analytics", table_prefix="gs_")
    assert wh._engine is None  # nothing connected yet
    assert wh.tables.table("results").fullname == "analytics.gs_results"
    assert "nobody" in repr(wh)
    sqlite_wh = Warehouse("sqlite://", schema="ignored")
    assert sqlite_wh.schema_name is None and sqlite_wh.tables.table("results").fullname == "results"
    with pytest.raises(ValueError):
        Warehouse("sqlite://", work_mem="1; DROP")


def test_schema_derives_from_the_entity_registry() -> None:
    ws = build_schema("gradesync")
    names = {t.name for t in ws.metadata.sorted_tables}
    assert names == set(ENTITIES) | set(HISTORY_TABLES.values()) | set(SYNC_TABLES)
    for name, entity in ENTITIES.items():
        table = ws.entity(name)
        assert [c.name for c in table.primary_key] == ["sourced_id", "integration_id"]
        for f in entity.fields:
            assert f.column in table.c, (name, f.column)
            assert table.c[f.column].nullable is (not f.required)
        for col in ("metadata", "status", "date_last_modified", "row_hash", "deleted_at", "deleted_reason"):
            assert col in table.c
    for dialect in (postgresql.dialect(), sqlite.dialect()):
        for table in ws.metadata.sorted_tables:
            str(CreateTable(table).compile(dialect=dialect))
    ddl = str(CreateTable(ws.entity("results")).compile(dialect=postgresql.dialect()))
    assert 'sourced_id TEXT COLLATE "C"' in ddl and "metadata JSONB" in ddl and "TIMESTAMP WITH TIME ZONE" in ddl


def test_an_old_postgres_server_is_refused_with_a_clear_message() -> None:
    from gradesync.warehouse.backends import require_server_version

    with pytest.raises(RuntimeError, match=r"PostgreSQL 14 or newer; this server is 13\.11: upgrade it"):
        require_server_version(130011)
    require_server_version(140000)
    require_server_version(150020)
