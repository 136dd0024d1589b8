"""Build one Airflow DAG per integration config.

The DAG only wires ``gradesync.pipeline`` steps to tasks: each step is one task in the grid, data
moves between tasks as staged Parquet files named in small XCom manifests, and nothing here
touches the network or a database at parse time.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from typing import Any

from gradesync.config import ConfigError, IntegrationConfig
from gradesync.parsing import discover_for_parsing

log = logging.getLogger("gradesync.dag_factory")

DOCS = {
    "validate_config": "Re-reads the integration YAML, checks that its connections exist and brings the "
    "warehouse schema up to date (migrations). Fails before any request reaches IC.",
    "refresh_token": "Fetches an OAuth2 token with the connection's client id and secret and calls one "
    "gradebook endpoint with the vendor header. A bad secret or vendor key fails here once, without "
    "retries, with a message naming the setting to fix. The token itself never leaves the task.",
    "extract": "One mapped instance per entity. Streams pages from IC (concurrently, within the "
    "integration's request limit) into Parquet files on the staging location; the XCom holds only the "
    "manifest (file names and counts). Delta runs ask for records changed in the run's data interval.",
    "dedupe": "Drops records seen twice, merges IC records with the vendor's under the master-field rules "
    "and writes the merged records, their lineage (`field_sources`) and any rejects to staging.",
    "load": "Upserts each entity into the warehouse in one transaction with its history rows, audit row and "
    "watermark, under a per-integration lock. A rerun of the same run changes nothing.",
    "report": "Logs the run's counts per entity as a table, returns them as a small dict, and fails the run "
    "when the share of rejected records passes `reject_rate_threshold`.",
}


def _as_datetime(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _run_type(dag_run: Any) -> str | None:
    value = getattr(dag_run, "run_type", None)
    return None if value is None else str(getattr(value, "value", value))


class _Steps:
    """``gradesync.pipeline`` imported when a task runs, not when the DAG is parsed (pandas, pyarrow)."""

    def __getattr__(self, name: str) -> Any:
        from gradesync import pipeline as module

        return getattr(module, name)


pipeline = _Steps()


def build_dag(config: IntegrationConfig) -> Any:
    """The DAG ``grade_sync_<name>`` for one integration."""
    from airflow.sdk import DAG, CronDataIntervalTimetable, task


    entities = config.selected_entities
    from gradesync import alerts
    from gradesync.run_params import InvalidRunParams, RunParams, dag_params, parse_run_params

    default_args = {
        "owner": config.owner,
        "retries": config.retries,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=3),
        **alerts.task_callbacks(config),  # alerts, and the one-line cause as the log's last line
    }

    def run_params(context: dict[str, Any]) -> RunParams:
        return parse_run_params(context["params"], allowed_entities=entities)

    with DAG(
        dag_id=config.dag_id,
        description=config.description or f"Grade sync of {config.name} (OneRoster {config.api_version})",
        # Airflow 3 cron strings give zero-length intervals; delta windows need real ones.
        schedule=CronDataIntervalTimetable(config.schedule, timezone=config.timezone) if config.schedule else None,
        start_date=datetime.combine(config.start_date, datetime.min.time(), tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,
        default_args=default_args,
        params=dag_params(entities),
        tags=["gradesync", f"oneroster-{config.api_version}", *config.tags],
        doc_md=__doc__,
        **alerts.dag_callbacks(config),
    ) as dag:

        @task(task_id="validate_config", retries=0, doc_md=DOCS["validate_config"])
        def validate_config(**context: Any) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowFailException

            try:
                chosen = run_params(context)
            except InvalidRunParams as exc:
                raise AirflowFailException(str(exc)) from None
            expiry = alerts.credential_expiry_warning(config, date.today())
            if expiry:
                log.warning(expiry)
            return {**pipeline.validate_step(config), "run_params": chosen.to_dict()}

        @task(task_id="refresh_token", retries=0, doc_md=DOCS["refresh_token"])
        def refresh_token() -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowFailException

            from gradesync.oneroster import CredentialsError

            try:
                return pipeline.refresh_token_step(config)
            except CredentialsError as exc:
                raise AirflowFailException(str(exc)) from None

        @task(
            task_id="extract",
            pool=config.pool,
            pool_slots=config.extraction.max_concurrent_requests,
            doc_md=DOCS["extract"],
            map_index_template="{{ task.op_kwargs['entity'] }}",
        )
        def extract(entity: str, **context: Any) -> dict[str, Any]:
            chosen = run_params(context)
            return pipeline.extract_step(
                config, entity, run_id=context["run_id"], selected=chosen.entities,
                full_refresh=chosen.full_refresh, since=chosen.since,
                interval_start=_as_datetime(context.get("data_interval_start")),
                interval_end=_as_datetime(context.get("data_interval_end")),
                run_type=_run_type(context.get("dag_run")),
            )

        @task(task_id="dedupe", doc_md=DOCS["dedupe"])
        def dedupe(manifests: list[dict[str, Any]], **context: Any) -> list[dict[str, Any]]:
            return pipeline.dedupe_step(config, list(manifests), run_id=context["run_id"])

        @task(task_id="load", doc_md=DOCS["load"])
        def load(merged: list[dict[str, Any]], **context: Any) -> list[dict[str, Any]]:
            return pipeline.load_step(config, merged, run_id=context["run_id"], dry_run=run_params(context).dry_run)

        @task(task_id="report", retries=0, doc_md=DOCS["report"])
        def report(loaded: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
            summary = pipeline.report_step(config, loaded, run_id=context["run_id"],
                                           started_at=_as_datetime(context["dag_run"].start_date))
            expiry = alerts.credential_expiry_warning(config, date.today())
            if expiry:
                summary["warnings"].append(expiry)
            if summary["warnings"]:
                alerts.notify_warnings(config, summary, context)
            return summary

        checked = validate_config()
        token = refresh_token()
        manifests = extract.expand(entity=entities)
        checked >> token >> manifests
        report(load(dedupe(manifests)))
    return dag


def build_dags(directory: str | None = None) -> dict[str, Any]:
    """All DAGs of the integrations folder; a broken file is logged and skipped, never fatal."""
    found = discover_for_parsing(directory)
    for error in found.errors:
        log.error("gradesync: skipping integration config %s", error)
    dags: dict[str, Any] = {}
    for path, config in found.configs:
        try:
            dags[config.dag_id] = build_dag(config)
        except (ConfigError, ValueError, TypeError) as exc:
            log.error("gradesync: cannot build a DAG from %s: %s", path, exc)
    return dags
