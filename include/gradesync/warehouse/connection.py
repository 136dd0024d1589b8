"""Turn an Airflow connection into a SQLAlchemy URL for the warehouse.

Accepted forms (e.g. ``AIRFLOW_CONN_GRADESYNC_WAREHOUSE``):

- ``sqlite:////abs/path/warehouse.db`` (or ``sqlite:///relative.db``; ``sqlite://`` is in-memory)
- ``postgresql://user:pass@host:5432/db`` or ``postgres://...``, libpq options such as ``sslmode``
  in the query string / extras
- any connection whose extra holds ``{"sqlalchemy_url": "..."}`` (JSON form), which wins.

``postgres``/``postgresql`` become ``postgresql+psycopg`` (psycopg 3, needed for COPY).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

_LIBPQ_EXTRAS = ("sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "connect_timeout",
                 "application_name", "options", "target_session_attrs", "keepalives", "keepalives_idle")


def normalize_url(url: str | sa.URL) -> sa.URL:
    """Parse a URL and pick the psycopg 3 driver for Postgres."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise ValueError(f"unsupported warehouse database {backend!r}: use postgresql or sqlite")
    return parsed


def warehouse_url_from_connection(conn: Any) -> str:
    """SQLAlchemy URL string (password included) for an Airflow ``Connection``-like object."""
    extra = getattr(conn, "extra_dejson", None) or {}
    if extra.get("sqlalchemy_url"):
        return normalize_url(extra["sqlalchemy_url"]).render_as_string(hide_password=False)
    conn_type = (getattr(conn, "conn_type", None) or "").lower().replace("-", "_")
    if conn_type == "sqlite":
        path = getattr(conn, "schema", None) or getattr(conn, "host", None) or ""
        url = sa.URL.create("sqlite", database=path or None)
    elif conn_type in ("postgres", "postgresql"):
        query = {k: str(extra[k]) for k in _LIBPQ_EXTRAS if extra.get(k) is not None}
        url = sa.URL.create(
            "postgresql+psycopg",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
            query=query,
        )
    else:
        raise ValueError(
            f"warehouse connection {getattr(conn, 'conn_id', '?')!r} has type {conn_type!r}: use a postgres or "
            "sqlite connection, or put {\"sqlalchemy_url\": ...} in its extra"
        )
    return url.render_as_string(hide_password=False)
