"""No Docker engine runs in CI, so the compose file is checked for the structure it promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from gradesync.config import discover

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def test_airflow_3_services_and_dependencies() -> None:
    assert {"postgres", "ic-sandbox", "airflow-init", "airflow-apiserver", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer"} <= set(SERVICES)
    assert SERVICES["airflow-apiserver"]["command"] == "api-server"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        depends = SERVICES[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"


def test_image_pins_the_same_airflow_as_the_lock() -> None:
    locked = re.search(r"^apache-airflow==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"FROM apache/airflow:{locked}-python3.11" in dockerfile
    assert "-c /opt/gradesync/constraints.txt" in dockerfile


def test_mounts_and_connections_match_the_project() -> None:
    env = SERVICES["airflow-scheduler"]["environment"]
    volumes = SERVICES["airflow-scheduler"]["volumes"]
    for folder in ("dags", "plugins", "include"):
        source = next(v.split(":")[0] for v in volumes if v.startswith(f"./{folder}:"))
        assert (ROOT / source).is_dir()
    assert env["AIRFLOW_CONN_GRADESYNC_WAREHOUSE"].startswith("postgresql://")
    ic = json.loads(env["AIRFLOW_CONN_IC_SANDBOX"])
    assert ic["host"].endswith("/rostering/v1p2") and "token_url" in ic["extra"]
    sandbox_config = {c.name: c for _, c in discover(ROOT / "include" / "integrations").configs}["sandbox"]
    assert f"AIRFLOW_CONN_{sandbox_config.connection_id.upper()}" in env


def test_sandbox_service_runs_the_gradesync_cli_on_the_port_it_publishes() -> None:
    sandbox = SERVICES["ic-sandbox"]
    assert sandbox["entrypoint"] == ["gradesync", "sandbox"]
    port = sandbox["command"][sandbox["command"].index("--port") + 1]
    assert f"{port}:{port}" in sandbox["ports"]
    init_sql = ROOT / SERVICES["postgres"]["volumes"][1].split(":")[0]
    assert "CREATE DATABASE warehouse" in init_sql.read_text()
