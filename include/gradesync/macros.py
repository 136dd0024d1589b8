"""Template macros and run-outcome lines behind ``plugins/gradesync_plugin.py``.

Downstream tasks (a dbt run, a SQL check) sometimes need the OneRoster filter of a window, e.g.
``{{ macros.gradesync.gradesync_filter(data_interval_start, data_interval_end) }}``. The window a
run actually read is in each extract task's XCom manifest (``window``): which one applies depends
on the stored watermark, so it is decided in one place only, ``gradesync.pipeline.resolve_window``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def _utc(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def gradesync_filter(since: Any = None, until: Any = None) -> str:
    """The OneRoster ``filter`` of a delta window, exactly as the extract task sends it to IC."""
    from gradesync.oneroster import date_filter

    return date_filter(_utc(since), _utc(until)) or ""


def run_outcome_line(dag_run: Any, state: str) -> str | None:
    """One line about a finished grade sync run, for the scheduler log; ``None`` for other DAGs."""
    dag_id = getattr(dag_run, "dag_id", "") or ""
    if not dag_id.startswith("grade_sync_"):
        return None
    run_id = getattr(dag_run, "run_id", "?")
    run_type = getattr(dag_run, "run_type", None)
    run_type = getattr(run_type, "value", run_type) or "run"
    start, end = getattr(dag_run, "start_date", None), getattr(dag_run, "end_date", None)
    took = ""
    if start is not None and end is not None:
        seconds = int((end - start).total_seconds())
        took = f" in {seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
    if state == "success":
        return f"{dag_id}: {run_type} run {run_id} succeeded{took}"
    return (f"{dag_id}: {run_type} run {run_id} failed{took}; the failed task's log ends with what broke "
            "and what to do")
