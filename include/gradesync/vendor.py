"""The vendor app's side of the gradebook, read in the same staging layout as IC's records.

Two sources are supported (``vendor_source.kind`` in the integration YAML):

* ``warehouse_tables`` — the vendor's own process fills tables named ``<table_prefix><entity>``
  (``vendor_line_items``, ``vendor_results``, ...) in the warehouse schema, with the same columns as
  gradesync's entity tables (``sourced_id``, ``status``, ``date_last_modified``, ``title``, ...,
  references as ``<ref>_sourced_id``). Missing tables mean "no vendor records for this entity".
* ``oneroster`` — a second OneRoster connection (the vendor's own API) read like IC.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from gradesync.config import IntegrationConfig
from gradesync.entities import Entity
from gradesync.records import arrow_schema

log = logging.getLogger("gradesync.vendor")


def conform(df: pd.DataFrame, entity: Entity, api_version: str) -> pd.DataFrame:
    """Cast a vendor frame to the staging schema: missing optional columns become nulls."""
    schema = arrow_schema(entity, api_version)
    missing_required = [f.name for f in schema if not f.nullable and f.name not in df.columns]
    if missing_required:
        raise ValueError(f"vendor {entity.name} lacks required columns {missing_required}")
    for field in schema:
        if field.name not in df.columns:
            df[field.name] = None
    table = pa.Table.from_pandas(df[[f.name for f in schema]], preserve_index=False)
    return table.cast(schema.remove_metadata(), safe=False).to_pandas() if table.num_rows else (
        schema.empty_table().to_pandas()
    )


def read_vendor_records(
    config: IntegrationConfig, entity: Entity, warehouse: Any, *, run_id: str
) -> pd.DataFrame | None:
    source = config.vendor_source
    if source is None:
        return None
    if source.kind == "warehouse_tables":
        return _read_vendor_table(config, entity, warehouse, f"{source.table_prefix}{entity.name}")
    return _read_vendor_oneroster(config, entity, run_id)


def _read_vendor_table(config: IntegrationConfig, entity: Entity, warehouse: Any, table: str) -> pd.DataFrame | None:
    engine = warehouse.engine
    schema = None if engine.dialect.name == "sqlite" else config.warehouse_schema
    if not sa.inspect(engine).has_table(table, schema=schema):
        log.info("No vendor table %s: merging %s from IC only", table, entity.name)
        return None
    frame = pd.read_sql_table(table, engine, schema=schema)
    log.info("Read %d vendor %s from %s", len(frame), entity.name, table)
    return conform(frame, entity, config.api_version)


def _read_vendor_oneroster(config: IntegrationConfig, entity: Entity, run_id: str) -> pd.DataFrame | None:
    from gradesync.extract import extract_entity
    from gradesync.oneroster import OneRosterHook
    from gradesync.pipeline import read_parquet_files, run_staging_root

    source = config.vendor_source
    assert source is not None and source.connection_id
    if source.api_version not in entity.versions:
        return None
    hook = OneRosterHook(ic_conn_id=source.connection_id, api_version=source.api_version)
    target = run_staging_root(config, run_id) / "vendor" / entity.name
    manifest = extract_entity(hook.get_client(max_concurrency=config.extraction.max_concurrent_requests),
                              entity.name, target, page_size=config.extraction.page_size)
    frame = read_parquet_files(manifest.files)
    return None if frame is None else conform(frame, entity, config.api_version)
