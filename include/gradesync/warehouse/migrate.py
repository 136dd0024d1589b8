"""Run the warehouse migrations programmatically (no alembic.ini, no env.py).

Safe to call at the start of every run and from several processes at once: the version is read
first and nothing happens at head; otherwise one migrator at a time (advisory lock on Postgres,
``BEGIN IMMEDIATE`` on SQLite) re-reads the version and upgrades inside one transaction, so a
killed upgrade leaves the previous version (Postgres and SQLite both have transactional DDL).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from gradesync.warehouse.backends import Backend
from gradesync.warehouse.migrations import SCRIPT_LOCATION

VERSION_TABLE = "gradesync_version"


def _config(schema: str | None, prefix: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["gradesync_schema"] = schema
    cfg.attributes["gradesync_prefix"] = prefix
    return cfg


def _opts(schema: str | None, prefix: str) -> dict[str, Any]:
    return {"version_table": prefix + VERSION_TABLE, "version_table_schema": schema}


def head_revision() -> str:
    script = ScriptDirectory.from_config(_config(None, ""))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(conn: sa.Connection, schema: str | None, prefix: str) -> str | None:
    return MigrationContext.configure(conn, opts=_opts(schema, prefix)).get_current_revision()


def upgrade(engine: sa.Engine, backend: Backend, schema: str | None, prefix: str, target: str = "head") -> str:
    """Upgrade the warehouse to ``target``; return the revision it is at afterwards."""
    cfg = _config(schema, prefix)
    script = ScriptDirectory.from_config(cfg)
    wanted = script.get_revision(target).revision if target == "head" else target
    with engine.connect().execution_options(gradesync_read_only=True) as conn:
        insp = sa.inspect(conn)
        if insp.has_table(prefix + VERSION_TABLE, schema=schema):
            if current_revision(conn, schema, prefix) == wanted:
                return wanted
        conn.rollback()
    with engine.begin() as conn:
        backend.xact_lock(conn, "migrate", schema or "", prefix)
        backend.ensure_schema(conn, schema)

        def steps(rev: Any, _context: Any) -> Any:
            return script._upgrade_revs(wanted, rev)

        with EnvironmentContext(cfg, script, fn=steps, destination_rev=wanted) as env:
            env.configure(connection=conn, **_opts(schema, prefix))
            env.run_migrations()
        return current_revision(conn, schema, prefix) or ""
