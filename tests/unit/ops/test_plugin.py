"""The gradesync Airflow plugin: Airflow's plugins manager loads it, and its macros and listener work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

from gradesync.macros import gradesync_filter, run_outcome_line

ROOT = Path(__file__).resolve().parents[3]

LOAD_SCRIPT = """
import json, logging
from airflow import plugins_manager
plugins_manager.ensure_plugins_loaded()
plugins, errors = plugins_manager._get_plugins()
info = [p for p in plugins_manager.get_plugin_info() if p["name"] == "gradesync"]

plugins_manager.integrate_macros_plugins()
from airflow.sdk.execution_time import macros
window = macros.gradesync.gradesync_filter("2026-11-01T02:00:00+00:00", "2026-11-02T02:00:00+00:00")

from airflow.listeners.listener import get_listener_manager
from types import SimpleNamespace
from datetime import datetime, timezone
records = []
handler = logging.Handler(); handler.emit = records.append
logging.getLogger("gradesync.runs").addHandler(handler); logging.getLogger("gradesync.runs").setLevel("INFO")
run = SimpleNamespace(dag_id="grade_sync_district_a", run_id="scheduled__x", run_type="scheduled",
                      start_date=datetime(2026, 11, 2, 2, tzinfo=timezone.utc),
                      end_date=datetime(2026, 11, 2, 2, 5, tzinfo=timezone.utc))
get_listener_manager().hook.on_dag_run_success(dag_run=run, msg="success")
print(json.dumps({"errors": errors, "info": info, "window": window,
                  "logged": [r.getMessage() for r in records]}, default=str))
"""


def test_airflow_loads_the_plugin_and_wires_macros_and_listener(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    out = subprocess.run([sys.executable, "-c", LOAD_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=180, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    [info] = result["info"]
    assert info["source"].endswith("gradesync_plugin.py")
    assert any("gradesync_filter" in m for m in info["macros"])
    assert any("RunOutcomeListener" in str(listener) for listener in info["listeners"])
    assert result["window"] == "dateLastModified>'2026-11-01T02:00:00.000Z' AND dateLastModified<='2026-11-02T02:00:00.000Z'"
    assert result["logged"] == ["grade_sync_district_a: scheduled run scheduled__x succeeded in 0h05m00s"]


def test_importing_the_plugin_has_no_side_effects(tmp_path: Path) -> None:
    """Beyond Airflow's own plugin modules, the plugin loads only the small gradesync.macros module."""
    script = (
        "import json, runpy, sys\n"
        "import airflow.listeners, airflow.plugins_manager\n"
        "before = set(sys.modules)\n"
        f"ns = runpy.run_path({str(ROOT / 'plugins' / 'gradesync_plugin.py')!r})\n"
        "print(json.dumps({'name': ns['GradesyncPlugin'].name, 'new': sorted(set(sys.modules) - before)}))\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"name": "gradesync", "new": ["gradesync", "gradesync.macros"]}


def test_filter_matches_the_oneroster_client() -> None:
    from gradesync.oneroster import date_filter

    since = datetime(2026, 11, 1, 2, tzinfo=timezone.utc)
    until = since + timedelta(days=1)
    assert gradesync_filter(since, until) == date_filter(since, until)
    assert gradesync_filter(since) == date_filter(since, None)
    assert gradesync_filter("2026-11-01T02:00:00Z") == date_filter(since, None)
    assert gradesync_filter() == ""


def test_outcome_lines_only_for_grade_sync_dags() -> None:
    run = SimpleNamespace(dag_id="grade_sync_b", run_id="manual__1", run_type=None, start_date=None, end_date=None)
    assert run_outcome_line(run, "failed") == ("grade_sync_b: run run manual__1 failed; the failed task's log "
                                               "ends with what broke and what to do")
    assert run_outcome_line(SimpleNamespace(dag_id="other"), "success") is None
