"""Throwaway Postgres schemas and databases for tests (reusable by every test suite).

``GRADESYNC_PG_URL`` points at the server (default ``postgresql+psycopg://root@127.0.0.1:5432/test``).
When it cannot be reached, tests that need it are skipped, unless ``GRADESYNC_REQUIRE_POSTGRES=1``
(CI), which turns the skip into a failure. pytest is imported lazily: the package does not need it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from gradesync.warehouse.connection import normalize_url

DEFAULT_PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"


def postgres_url() -> str:
    """The test server's URL, normalised to the psycopg 3 driver."""
    return normalize_url(os.environ.get("GRADESYNC_PG_URL", DEFAULT_PG_URL)).render_as_string(hide_password=False)


def postgres_required() -> bool:
    return os.environ.get("GRADESYNC_REQUIRE_POSTGRES", "") not in ("", "0", "false", "no")


def postgres_unreachable_reason(url: str | None = None) -> str | None:
    """None if the server answers, else why not."""
    engine = sa.create_engine(url or postgres_url(), connect_args={"connect_timeout": 3}, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except Exception as exc:  # any failure to connect means "unreachable" here
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        engine.dispose()


def need_postgres(url: str | None = None) -> str:
    """Return the Postgres URL, or skip the test (fail it under GRADESYNC_REQUIRE_POSTGRES=1)."""
    import pytest

    url = url or postgres_url()
    reason = postgres_unreachable_reason(url)
    if reason is not None:
        message = f"Postgres at {sa.make_url(url).render_as_string(hide_password=True)} unreachable: {reason}"
        if postgres_required():
            pytest.fail(message + " (GRADESYNC_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(message)
    return url


def unique_name(prefix: str = "gs_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextmanager
def throwaway_schema(url: str | None = None, prefix: str = "gs_test") -> Iterator[tuple[str, str]]:
    """Yield (url, schema) for a schema name nobody uses; drop that schema afterwards."""
    url = url or need_postgres()
    schema = unique_name(prefix)
    try:
        yield url, schema
    finally:
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
        engine.dispose()


@contextmanager
def throwaway_database(url: str | None = None, prefix: str = "gs_test") -> Iterator[str]:
    """Yield the URL of a new, empty database on the test server; drop it afterwards."""
    url = url or need_postgres()
    name = unique_name(prefix)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    quoted = admin.dialect.identifier_preparer.quote(name)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    try:
        yield sa.make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        admin.dispose()
