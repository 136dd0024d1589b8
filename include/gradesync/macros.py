"""Template macros and run-outcome lines behind ``plugins/gradesync_plugin.py``.

Downstream tasks (a dbt run, a SQL check, a report) often need the same window a grade sync run
read from IC. These functions make it available in any templated field, e.g.
``{{ macros.gradesync.gradesync_window(data_interval_start, data_interval_end, params) }}``,
with the same precedence the pipeline applies: ``full_refresh``, then ``since``, then the interval.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def _iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def gradesync_window(
    data_interval_start: Any = None, data_interval_end: Any = None, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The run's window as ``{"full", "since", "until"}`` (UTC ISO strings), honouring the trigger Params.

    Without an interval or Params (a manual run) the answer is "since the stored watermark", which
    only the warehouse knows: ``since`` and ``until`` are then ``None`` and ``full`` is false.
    """
    params = params or {}
    if params.get("full_refresh") in (True, "true", "True"):
        return {"full": True, "since": None, "until": None}
    since = _utc(params.get("since"))
    if since is not None:
        return {"full": False, "since": _iso(since), "until": None}
    start, end = _utc(data_interval_start), _utc(data_interval_end)
    if start is not None and end is not None and end > start:
        return {"full": False, "since": _iso(start), "until": _iso(end)}
    return {"full": False, "since": None, "until": None}


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
