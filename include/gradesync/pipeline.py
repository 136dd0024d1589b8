"""The steps of one grade sync run as plain functions; the DAG factory only wires them to tasks.

Every step takes the integration config and small, JSON-serialisable inputs (manifests that point
at staged Parquet files) and returns the same kind of thing, so each one can be tested without
Airflow, rerun on its own, and run on any worker that can reach the staging location.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gradesync.config import IntegrationConfig
from gradesync.entities import get_entity
from gradesync.records import arrow_schema
from gradesync.staging import staging_path

log = logging.getLogger("gradesync.pipeline")

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
INTERVAL_RUN_TYPES = ("scheduled", "backfill")
SCHEDULED_FULL_SYNC = "weekly full sync"




# ---------------------------------------------------------------------------------------------
# Which records a run asks for
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The slice of IC a run extracts: everything (full) or dateLastModified in (since, until]."""

    full: bool
    since: datetime | None = None
    until: datetime | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "full": self.full,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        parse = lambda v: datetime.fromisoformat(v) if v else None  # noqa: E731
        return cls(bool(data["full"]), parse(data.get("since")), parse(data.get("until")), data.get("reason", ""))


def resolve_window(
    config: IntegrationConfig,
    *,
    full_refresh: bool = False,
    since: datetime | None = None,
    interval_start: datetime | None = None,
    interval_end: datetime | None = None,
    watermark: datetime | None = None,
    run_type: str | None = "scheduled",
) -> Window:
    """Decide full vs. delta for one entity of one run.

    Order: an explicit full refresh; an explicit ``since``; no watermark yet (first load is full);
    the weekly full-sync day of a scheduled run; the data interval of a scheduled or backfill run;
    else the stored watermark. Manual runs use the watermark even though Airflow infers an interval
    for them: that interval is the last scheduled one, not what changed since the last load.
    """
    if full_refresh:
        return Window(True, reason="full_refresh requested")
    if since is not None:
        return Window(False, since=since, reason="since requested")
    if watermark is None:
        return Window(True, reason="no watermark yet: first load is a full sync")
    has_interval = (
        run_type in INTERVAL_RUN_TYPES
        and interval_start is not None
        and interval_end is not None
        and interval_end > interval_start
    )
    if has_interval:
        assert interval_start is not None and interval_end is not None
        if config.full_sync_weekday is not None and run_type == "scheduled":  # backfills keep their window
            local_end = interval_end.astimezone(ZoneInfo(config.timezone))
            if _WEEKDAYS[local_end.weekday()] == config.full_sync_weekday:
                return Window(True, reason=SCHEDULED_FULL_SYNC)
        return Window(False, since=interval_start, until=interval_end, reason="data interval")
    return Window(False, since=watermark, reason="stored watermark")


# ---------------------------------------------------------------------------------------------
# Staging layout
# ---------------------------------------------------------------------------------------------


def run_folder_name(run_id: str) -> str:
    """Run ids hold ':' and '+'; object stores and Windows paths do not like them."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)


def run_staging_root(config: IntegrationConfig, run_id: str) -> Any:
    return staging_path(config.staging.resolved_url()) / config.dag_id / run_folder_name(run_id)


def read_parquet_files(files: list[str]) -> pd.DataFrame | None:
    """Concatenate staged Parquet parts; ``None`` when there are none."""
    tables = []
    for name in files:
        with staging_path(name).open("rb") as handle:
            tables.append(pq.read_table(handle))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def write_parquet(df: pd.DataFrame, target: Any) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    with target.open("wb") as handle:
        pq.write_table(table, handle)
    return str(target)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------------------------------
# Connections and the warehouse
# ---------------------------------------------------------------------------------------------


def get_connection(conn_id: str) -> Any:
    """Airflow connection by id (env ``AIRFLOW_CONN_*``, secrets backend or metadata DB)."""
    from airflow.sdk import BaseHook

    from gradesync.logs import mask_connection

    conn = BaseHook.get_connection(conn_id)
    mask_connection(conn)  # Airflow masks the extra as a whole, not the secrets inside it
    return conn


def open_warehouse(config: IntegrationConfig) -> Any:
    from gradesync.warehouse import Warehouse, warehouse_url_from_connection

    conn = get_connection(config.warehouse_connection_id)
    return Warehouse(warehouse_url_from_connection(conn), schema=config.warehouse_schema)


# ---------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------


def validate_step(config: IntegrationConfig) -> dict[str, Any]:
    """Fail before touching IC when a connection is missing; bring the warehouse schema up to date."""
    from gradesync.oneroster import ICConnectionSettings

    settings = ICConnectionSettings.from_connection(get_connection(config.connection_id), config.api_version)
    warehouse = open_warehouse(config)
    warehouse.migrate()
    log.info(
        "Integration %s: OneRoster %s at %s; entities %s; warehouse ready",
        config.name, config.api_version, settings.gradebook_base, ", ".join(config.selected_entities),
    )
    return {"integration": config.name, "api_version": config.api_version, "entities": config.selected_entities}


def refresh_token_step(config: IntegrationConfig) -> dict[str, Any]:
    """Prove the client credentials and vendor key now, so a bad secret fails once, early and clearly."""
    from gradesync.oneroster import ICConnectionSettings, check_credentials

    settings = ICConnectionSettings.from_connection(get_connection(config.connection_id), config.api_version)
    info = check_credentials(settings)
    log.info("IC accepted the credentials of connection %s (token valid %ss)", config.connection_id,
             info.get("expires_in"))
    return info


def extract_step(
    config: IntegrationConfig,
    entity_name: str,
    *,
    run_id: str,
    selected: list[str] | None = None,
    full_refresh: bool = False,
    since: datetime | None = None,
    interval_start: datetime | None = None,
    interval_end: datetime | None = None,
    run_type: str | None = None,
) -> dict[str, Any]:
    """Stream one entity from IC into staged Parquet parts and return their manifest."""
    from gradesync.extract import extract_entity
    from gradesync.oneroster import OneRosterHook, request_concurrency

    if selected is not None and entity_name not in selected:
        log.info("Skipping %s: not in this run's entities %s", entity_name, selected)
        return {"entity": entity_name, "skipped": True}
    watermark = open_warehouse(config).get_watermark(config.name, entity_name)
    window = resolve_window(
        config, full_refresh=full_refresh, since=since, interval_start=interval_start,
        interval_end=interval_end, watermark=watermark, run_type=run_type,
    )
    log.info("Extracting %s: %s (%s)", entity_name,
             "full sync" if window.full else f"changed after {window.since} up to {window.until or 'now'}",
             window.reason)
    hook = OneRosterHook(ic_conn_id=config.connection_id, api_version=config.api_version)
    client = hook.get_client(
        max_concurrency=request_concurrency(config.extraction.max_concurrent_requests,
                                            config.extraction.peak_window, utcnow())
    )
    target = run_staging_root(config, run_id) / "extract" / entity_name
    manifest = extract_entity(
        client, entity_name, target, since=window.since, until=window.until,
        page_size=config.extraction.page_size, chunk_rows=config.extraction.chunk_rows,
    )
    result = manifest.to_dict()
    result["window"] = window.to_dict()
    result["skipped"] = False
    return result


def dedupe_step(config: IntegrationConfig, manifests: list[dict[str, Any]], *, run_id: str) -> list[dict[str, Any]]:
    """Merge each entity's IC records with the vendor's under the master-field rules.

    Parents are merged before children, so a result can be checked against the line items of this
    run as well as those already in the warehouse.
    """
    from gradesync.merge import merge_entity
    from gradesync.vendor import read_vendor_records

    warehouse = open_warehouse(config)
    by_entity = {m["entity"]: m for m in manifests}
    merged_ids: dict[str, pd.Index] = {}
    id_maps: dict[str, pd.Series] = {}
    out: list[dict[str, Any]] = []
    for entity_name in config.selected_entities:
        manifest = by_entity.get(entity_name)
        if manifest is None or manifest.get("skipped"):
            continue
        entity = get_entity(entity_name)
        ic = read_parquet_files(manifest["files"])
        if ic is None:
            ic = arrow_schema(entity, config.api_version).empty_table().to_pandas()
        vendor = read_vendor_records(config, entity, warehouse, run_id=run_id)
        known_parents: dict[str, pd.Index] = {}
        parent_id_maps: dict[str, pd.Series] = {}
        for column, parent in entity.parents.items():
            if parent in config.selected_entities:
                # deleted parents count as known: a full sync accepts children of tombstoned
                # line items (they are in the run), so a delta must as well
                stored = warehouse.known_sourced_ids(config.name, parent, include_deleted=True)
                known_parents[column] = stored.union(merged_ids.get(parent, pd.Index([])))
            if parent in id_maps:
                parent_id_maps[column] = id_maps[parent]
        outcome = merge_entity(
            entity, ic, vendor, config.merge_rules.for_entity(entity_name), run_id=run_id,
            known_parents=known_parents or None, parent_id_maps=parent_id_maps or None,
            api_version=config.api_version,
        )
        merged_ids[entity_name] = pd.Index(outcome.merged["sourced_id"].astype(str))
        id_maps[entity_name] = outcome.id_map
        root = run_staging_root(config, run_id) / "merged"
        merged_file = write_parquet(outcome.merged, root / f"{entity_name}.parquet")
        rejects = outcome.rejects
        extract_rejects = read_parquet_files([manifest["rejects_file"]]) if manifest.get("rejects_file") else None
        if extract_rejects is not None and len(extract_rejects):
            extract_rejects = extract_rejects.assign(run_id=run_id, source="ic")
            rejects = pd.concat([extract_rejects, rejects], ignore_index=True)
        rejects_file = write_parquet(rejects, root / f"{entity_name}.rejects.parquet") if len(rejects) else None
        extracted, duplicates = audit_counts(manifest["counts"], outcome.counts)
        log.info(
            "Merged %s: %d from IC, %d from the vendor -> %d records, %d duplicates, %d rejected",
            entity_name, manifest["counts"]["received"], outcome.counts.get("vendor_in", 0), len(outcome.merged),
            duplicates, len(rejects),
        )
        out.append({
            "entity": entity_name,
            "files": [merged_file],
            "rejects_file": rejects_file,
            "extracted": extracted,
            "duplicates": duplicates,
            "rejected": len(rejects),
            "window": manifest["window"],
            "max_date_last_modified": manifest.get("max_date_last_modified"),
            "started_at": manifest.get("started_at"),
        })
    return out


def audit_counts(extract_counts: dict[str, Any], merge_counts: dict[str, Any]) -> tuple[int, int]:
    """(extracted, duplicates) such that extracted = merged records + duplicates + rejected.

    Extracted counts every record read from either source, repeats of a page scan included; a
    duplicate is any record that did not become a merged record of its own: a repeat within one
    source, or the second half of an IC/vendor pair matched by sourced_id or natural key.
    """
    scan_repeats = int(extract_counts.get("duplicates_in_scan", 0))
    extracted = int(extract_counts["received"]) + scan_repeats + int(merge_counts.get("vendor_in", 0))
    duplicates = scan_repeats + sum(int(merge_counts.get(k, 0)) for k in (
        "duplicates_ic", "duplicates_vendor", "matched_by_sourced_id", "matched_by_natural_key"))
    return extracted, duplicates


def load_step(
    config: IntegrationConfig, merged: list[dict[str, Any]], *, run_id: str, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Load each entity in its own transaction, parents first, under the integration's lock."""
    warehouse = open_warehouse(config)
    results: list[dict[str, Any]] = []
    with warehouse.integration_lock(config.name, run_id):
        for item in merged:
            window = Window.from_dict(item["window"])
            rejects = read_parquet_files([item["rejects_file"]]) if item.get("rejects_file") else None
            watermark = _next_watermark(window, item.get("max_date_last_modified"))
            started_at = datetime.fromisoformat(item["started_at"]) if item.get("started_at") else utcnow()
            warning = _vanish_guard(config, warehouse, item, window)
            counts = warehouse.load_entity(
                config.name, item["entity"], config.api_version, [staging_path(f) for f in item["files"]],
                run_id=run_id, full_sync=window.full and warning is None, extracted=item["extracted"],
                duplicates=item["duplicates"], rejects=rejects, watermark=watermark, started_at=started_at,
                dry_run=dry_run,
            )
            row = {"entity": item["entity"], **_counts_dict(counts), "dry_run": dry_run,
                   "warnings": [warning] if warning else []}
            log.info("%s %s: %s", "Dry run, would load" if dry_run else "Loaded", item["entity"],
                     ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("entity", "dry_run")))
            results.append(row)
    return results


def _vanish_guard(config: IntegrationConfig, warehouse: Any, item: dict[str, Any], window: Window) -> str | None:
    """Refuse to mark most of an entity deleted because a scheduled full sync came back small.

    A scheduled full sync marks every record it did not see as deleted. If IC answers with far fewer
    records than the warehouse holds (a permission change, an emptied test tenant), that would
    delete the gradebook; a ``full_refresh`` someone asked for (e.g. after the school-year rollover)
    is trusted. Returns the warning when the guard holds the deletes back.
    """
    if not window.full or window.reason != SCHEDULED_FULL_SYNC:
        return None
    live = len(warehouse.known_sourced_ids(config.name, item["entity"]))
    seen = int(item["extracted"]) - int(item["duplicates"]) - int(item["rejected"])
    if live == 0 or seen >= live * (1 - config.max_vanished_share):
        return None
    message = (
        f"{item['entity']}: the weekly full sync saw {seen} records but the warehouse holds {live} live ones; "
        f"marking more than {config.max_vanished_share:.0%} of them deleted needs a human: check the IC "
        "connection's permissions, then trigger a run with full_refresh (or raise max_vanished_share)"
    )
    log.warning(message)
    return message


def _next_watermark(window: Window, max_seen: str | None) -> datetime | None:
    """The newest change this run has certainly seen: the window's end, else the newest record."""
    candidates = [d for d in (window.until, datetime.fromisoformat(max_seen) if max_seen else None) if d]
    return max(candidates) if candidates else None


def _counts_dict(counts: Any) -> dict[str, int]:
    if isinstance(counts, dict):
        return {k: int(v) for k, v in counts.items()}
    return {k: int(v) for k, v in asdict(counts).items()}


REPORT_COLUMNS = ("entity", "extracted", "inserted", "updated", "unchanged", "deleted", "duplicates", "rejected")


def report_step(
    config: IntegrationConfig, loaded: list[dict[str, Any]], *, run_id: str, started_at: datetime | None = None
) -> dict[str, Any]:
    """Summarise the run as a table in the log and a small dict for XCom; fail on too many rejects."""
    dry_run = any(row.get("dry_run") for row in loaded)
    rows = [{c: row.get(c, 0) for c in REPORT_COLUMNS} for row in loaded]
    totals = {c: sum(int(r[c]) for r in rows) for c in REPORT_COLUMNS[1:]}
    duration = (utcnow() - started_at).total_seconds() if started_at else None
    log.info("%sRun %s of %s\n%s", "DRY RUN (nothing was loaded; counts are what a load would do). " if dry_run
             else "", run_id, config.dag_id, format_table(rows + [{"entity": "TOTAL", **totals}]))
    warnings: list[str] = [w for row in loaded for w in row.get("warnings", [])]
    for row in rows:
        accounted = sum(int(row[c]) for c in ("inserted", "updated", "unchanged", "duplicates", "rejected"))
        if accounted != int(row["extracted"]):
            warnings.append(f"{row['entity']}: {row['extracted']} extracted but {accounted} accounted for")
    summary = {
        "integration": config.name,
        "run_id": run_id,
        "entities": {r["entity"]: {k: int(v) for k, v in r.items() if k != "entity"} for r in rows},
        "totals": totals,
        "dry_run": dry_run,
        "duration_s": round(duration, 1) if duration is not None else None,
        "warnings": warnings,
    }
    summary["staging_removed"] = clean_staging(config)
    extracted = totals["extracted"]
    threshold = config.merge_rules.reject_rate_threshold
    if extracted and totals["rejected"] / extracted > threshold:
        from gradesync.merge import RejectRateExceeded

        raise RejectRateExceeded(
            f"{totals['rejected']} of {extracted} records were rejected "
            f"({totals['rejected'] / extracted:.1%} > merge_rules.reject_rate_threshold {threshold:.1%}); "
            f"see the rejects table for run {run_id}, fix the source records or raise the threshold"
        )
    return summary


def clean_staging(config: IntegrationConfig, now: datetime | None = None) -> int:
    """Remove this integration's staged runs older than ``staging.retention_days``; never fails a run."""
    from datetime import timedelta

    from gradesync.staging import cleanup_staging

    root = staging_path(config.staging.resolved_url()) / config.dag_id
    try:
        removed = cleanup_staging(root, timedelta(days=config.staging.retention_days), now)
    except Exception as exc:  # noqa: BLE001 - housekeeping must not fail a sync that loaded
        log.warning("Could not clean up staging under %s: %s", root, exc)
        return 0
    if removed:
        log.info("Removed %d staged run(s) older than %d days under %s", len(removed),
                 config.staging.retention_days, root)
    return len(removed)


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(nothing loaded)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    line = lambda values: "  ".join(str(v).rjust(widths[c]) if i else str(v).ljust(widths[c])  # noqa: E731
                                    for i, (c, v) in enumerate(zip(columns, values, strict=True)))
    return "\n".join([line(columns), line("-" * widths[c] for c in columns)] + [line(r.get(c, "") for c in columns) for r in rows])
