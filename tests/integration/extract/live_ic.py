"""Live sandbox processes and the comparisons the extraction tests share."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from airflow.sdk import Connection

from gradesync.entities import get_entity
from gradesync.extract import ExtractManifest
from gradesync.oneroster import ICConnectionSettings, OneRosterClient, RetryPolicy
from gradesync.records import arrow_schema, flatten_records
from gradesync.sandbox import SandboxProcess
from gradesync.staging import staging_path

FAST_RETRIES = RetryPolicy(backoff_initial=0.05, backoff_max=0.5)


def connection(sb: SandboxProcess, conn_id: str = "ic_sandbox", **overrides: Any) -> Connection:
    """The sandbox as an Airflow connection (the JSON form users put in AIRFLOW_CONN_*)."""
    values = sb.airflow_connection()
    extra = {**values.pop("extra"), **overrides.pop("extra", {})}
    values.update(overrides)
    return Connection(conn_id=conn_id, extra=json.dumps(extra), **values)


def client_for(sb: SandboxProcess, max_concurrency: int = 5, **overrides: Any) -> OneRosterClient:
    settings = ICConnectionSettings.from_connection(connection(sb, **overrides), sb.api)
    return OneRosterClient(settings, max_concurrency=max_concurrency, retry_policy=FAST_RETRIES)


def staged(manifest: ExtractManifest) -> pa.Table:
    entity = get_entity(manifest.entity)
    tables = [arrow_schema(entity, manifest.api_version).empty_table()]
    for name in manifest.files:
        with staging_path(name).open("rb") as handle:
            tables.append(pq.read_table(handle))
    return pa.concat_tables(tables).sort_by("sourced_id")


def served(sb: SandboxProcess, entity_name: str) -> pa.Table:
    """The sandbox's truth, flattened the way staging must hold it."""
    entity = get_entity(entity_name)
    table, rejects = flatten_records(entity, sb.api, sb.admin.records(entity_name))
    assert not rejects, rejects[:3]
    return table.sort_by("sourced_id")


def assert_exact(sb: SandboxProcess, manifest: ExtractManifest) -> None:
    """Staged == served: every record once, with the same values; counts add up."""
    got, want = staged(manifest), served(sb, manifest.entity)
    ids = got.column("sourced_id").to_pylist()
    assert len(ids) == len(set(ids)), f"{manifest.entity}: duplicates staged"
    missing = set(want.column("sourced_id").to_pylist()) - set(ids)
    extra = set(ids) - set(want.column("sourced_id").to_pylist())
    assert not missing and not extra, f"{manifest.entity}: {len(missing)} lost, {len(extra)} extra"
    assert got.equals(want), f"{manifest.entity}: staged values differ from the served records"
    counts = manifest.counts
    assert counts["staged"] == got.num_rows and counts["received"] == counts["staged"] + counts["rejected"]


