"""A failing task in a real Airflow run: the callback gets Airflow's own context, alerts, and ends the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

AIRFLOW = str(Path(sys.executable).with_name("airflow"))

DAG_FILE = textwrap.dedent('''
    from datetime import datetime

    from airflow.sdk import DAG, task

    from gradesync import alerts
    from gradesync.config import parse_config

    config = parse_config({"name": "district_a", "api_version": "1.2", "connection_id": "ic_district_a",
                           "alerts": {"webhook_connection_id": "alerts_hook", "finish_by": "06:00"}})

    with DAG(dag_id=config.dag_id, schedule="0 2 * * *", start_date=datetime(2026, 1, 1), catchup=False,
             default_args={"retries": 0, **alerts.task_callbacks(config)}, **alerts.dag_callbacks(config)):

        @task(task_id="refresh_token")
        def refresh_token():
            from gradesync.oneroster import CredentialsError

            raise CredentialsError("IC rejected the client id/secret of connection ic_district_a (HTTP 401 from "
                                   "the token URL): renew the secret or fix login/password in Admin → Connections")

        refresh_token()
''')


@pytest.mark.slow
def test_failed_task_alerts_and_ends_its_log_with_the_cause(tmp_path: Path, webhook) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "alerting_dag.py").write_text(DAG_FILE)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False"}
    env["AIRFLOW_CONN_ALERTS_HOOK"] = json.dumps({"conn_type": "http", "host": webhook.url,
                                                  "password": "hook-Token-5150"})
    env["AIRFLOW_CONN_IC_DISTRICT_A"] = json.dumps({"conn_type": "http", "host": "https://ic.example.org/x/v1p2",
                                                    "login": "client-id", "password": "IC-client-Secret-0042"})
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=240,
                             check=False)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    run = subprocess.run([AIRFLOW, "dags", "test", "grade_sync_district_a"], env=env, capture_output=True,
                         text=True, timeout=240, check=False)
    output = run.stdout + run.stderr

    [body] = webhook.bodies()
    assert body["event"] == "task_failed"
    assert body["dag_id"] == "grade_sync_district_a"
    assert body["run_id"].startswith("manual__")
    assert body["task_id"] == "refresh_token" and body["try_number"] == 1
    assert body["cause"].startswith("Grade sync district_a failed: IC rejected the client id/secret")
    assert "IC-client-Secret-0042" not in json.dumps(body) and "hook-Token-5150" not in json.dumps(body)

    task_lines = [line for line in output.splitlines() if "[gradesync." in line]
    assert task_lines, output[-3000:]
    assert "Grade sync district_a failed: IC rejected the client id/secret" in task_lines[-1]
    assert "Callback failed" not in output  # the dag-level callback stayed quiet instead of crashing
