"""A real Airflow 3 deployment for end-to-end operations tests: scheduler, API server, DAG processor.

``testing.DagRunner`` runs one DAG in-process with ``airflow dags test``; that is quick, but it has
no scheduler, no executor, no REST API and no backfills, which is where operations live: a run
triggered with a Params form, a backfill of three intervals, a failed run read back through its task
logs and XComs. ``AirflowDeployment`` starts the same services a production install runs, as child
processes of the test, each in its own process group:

* ``airflow db migrate`` into a throwaway metadata database: a Postgres database created for the
  deployment and dropped afterwards (``metadata_url`` = a server URL), or SQLite in the home folder;
* ``airflow api-server`` (one worker, the REST API v2 and the task execution API),
  ``airflow scheduler`` (LocalExecutor) and ``airflow dag-processor``, with
  ``AIRFLOW__CORE__DAGS_FOLDER`` = the project's ``dags/`` and ``GRADESYNC_INTEGRATIONS_DIR`` = a
  temp folder holding the integration YAMLs given to the constructor.

The REST API runs with the simple auth manager's "everyone is admin" switch, so requests need no
login. Connections can be given as environment variables (fixed for the deployment's lifetime) or
set at any time through the REST API (``set_connection``; tasks read them through the execution
API); each integration's pool ``gradesync_<name>`` is created after start. New DAGs are not paused.

Nothing here mocks Airflow: a run goes from the REST API through the scheduler to a LocalExecutor
worker, which runs the task in a supervised child process that talks to the execution API.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from gradesync.cli import PROJECT_ROOT, airflow_bin

TERMINAL_RUN_STATES = ("success", "failed")
SERVICES = ("api-server", "scheduler", "dag-processor")


class AirflowDeploymentError(RuntimeError):
    """The deployment could not start, or an operation on it did not finish in time."""


class AirflowApiError(RuntimeError):
    """The REST API answered an error; ``status`` and ``detail`` say which and why."""

    def __init__(self, method: str, path: str, status: int, detail: Any):
        self.status = status
        self.detail = detail
        super().__init__(f"{method} {path} answered HTTP {status}: {detail}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def iso(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


@dataclass
class RunResult:
    """A DAG run as the REST API reports it, with the state of each task instance."""

    dag_id: str
    run_id: str
    state: str
    run_type: str
    conf: dict[str, Any]
    logical_date: str | None
    data_interval_start: str | None
    data_interval_end: str | None
    tasks: dict[tuple[str, int], str] = field(default_factory=dict)

    @property
    def failed_tasks(self) -> list[tuple[str, int]]:
        return sorted(k for k, v in self.tasks.items() if v in ("failed", "upstream_failed"))

    def task_state(self, task_id: str, map_index: int = -1) -> str | None:
        return self.tasks.get((task_id, map_index))


@dataclass
class TaskLog:
    """One task try's log: the structured records and a plain-text rendering, one record a line."""

    records: list[dict[str, Any]]

    @property
    def lines(self) -> list[str]:
        return [render_record(r) for r in self.records]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def messages(self) -> list[str]:
        """The ``event`` of every record (the logged message), in order."""
        return [str(r.get("event", "")) for r in self.records]


def render_record(record: Mapping[str, Any]) -> str:
    """``LEVEL event key=value ...``: every field of the record, so nothing hides from a text search."""
    level = str(record.get("level", "")).upper()
    rest = {k: v for k, v in record.items() if k not in ("event", "level", "timestamp")}
    extra = " ".join(f"{k}={json.dumps(v, default=str) if not isinstance(v, str) else v}" for k, v in rest.items())
    return " ".join(p for p in (level, str(record.get("event", "")), extra) if p)


class AirflowDeployment:
    """Airflow 3 services in child processes, driven through the REST API; a context manager.

    ``integrations`` maps a file name to the integration YAML's fields (written before start, so the
    DAG processor finds them on its first parse); ``connections`` maps connection ids to an Airflow
    connection URI or JSON dict, exported as ``AIRFLOW_CONN_<ID>``; ``metadata_url`` is a Postgres
    server URL (SQLAlchemy form) on which a throwaway database is created, or None for SQLite.
    """

    def __init__(
        self,
        root: Path,
        integrations: Mapping[str, Mapping[str, Any]],
        *,
        connections: Mapping[str, str | Mapping[str, Any]] | None = None,
        metadata_url: str | None = None,
        dags_folder: Path | None = None,
        parallelism: int = 4,
        extra_env: Mapping[str, str] | None = None,
        startup_timeout: float = 150.0,
        preload: Iterable[str] = (),
    ) -> None:
        self.root = Path(root)
        self.home = self.root / "airflow-home"
        self.integrations_dir = self.root / "integrations"
        self.staging = self.root / "staging"
        self.service_logs = self.root / "service-logs"
        self.integrations = {name: dict(data) for name, data in integrations.items()}
        self.connections = dict(connections or {})
        self.server_url = metadata_url
        self.dags_folder = dags_folder or PROJECT_ROOT / "dags"
        self.parallelism = parallelism
        self.extra_env = dict(extra_env or {})
        self.startup_timeout = startup_timeout
        self.preload = list(preload)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.metadata_db: str | None = None
        self.session = requests.Session()
        self.started_in: float | None = None
        self._env: dict[str, str] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def dag_ids(self) -> list[str]:
        return [f"grade_sync_{data['name']}" for data in self.integrations.values()]

    @property
    def env(self) -> dict[str, str]:
        if self._env is None:
            raise AirflowDeploymentError("the deployment has not been started")
        return self._env

    def _build_env(self, metadata_sync: str, metadata_async: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
        env.pop("AIRFLOW_HOME", None)
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_sync,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API_AUTH__JWT_ISSUER": "gradesync-tests",
            # The YAMLs are written before start: one parse is enough, re-parses only cost CPU.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "GRADESYNC_INTEGRATIONS_DIR": str(self.integrations_dir),
            "GRADESYNC_STAGING_URL": f"file://{self.staging}",
            "PYTHONUNBUFFERED": "1",
        })
        if metadata_async:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = metadata_async
        for conn_id, value in self.connections.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        env.update(self.extra_env)
        return env

    def _create_metadata_db(self) -> tuple[str, str | None]:
        if not self.server_url:
            return f"sqlite:///{self.home / 'airflow.db'}", None
        import sqlalchemy as sa

        name = f"gradesync_airflow_{uuid.uuid4().hex[:10]}"
        url = sa.make_url(self.server_url)
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        self.metadata_db = name
        target = url.set(database=name)
        sync = target.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        async_ = target.set(drivername="postgresql+psycopg_async").render_as_string(hide_password=False)
        return sync, async_

    def _drop_metadata_db(self) -> None:
        if not (self.server_url and self.metadata_db):
            return
        import sqlalchemy as sa

        engine = sa.create_engine(sa.make_url(self.server_url), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.metadata_db}" WITH (FORCE)'))
        finally:
            engine.dispose()
        self.metadata_db = None

    def start(self) -> AirflowDeployment:
        started = time.monotonic()
        for folder in (self.home, self.integrations_dir, self.staging, self.service_logs):
            folder.mkdir(parents=True, exist_ok=True)
        import yaml

        for name, data in self.integrations.items():
            (self.integrations_dir / f"{name}.yaml").write_text(yaml.safe_dump(dict(data), sort_keys=False))
        try:
            self._env = self._build_env(*self._create_metadata_db())
            self.cli(["db", "migrate"], timeout=240, log_name="db-migrate")
            for service in SERVICES:
                self._spawn(service)
            self._wait_until_ready(started + self.startup_timeout)
            for data in self.integrations.values():
                slots = int((data.get("extraction") or {}).get("max_concurrent_requests", 5))
                self.set_pool(f"gradesync_{data['name']}", slots)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - started
        return self

    def _preload_env(self) -> dict[str, str]:
        """The scheduler's environment with a ``sitecustomize`` that imports ``self.preload`` first.

        LocalExecutor workers are forked from the scheduler and fork each task process in turn, so
        modules the scheduler imported are already in memory when a task parses the DAG file. Nothing
        else changes: the task still parses the DAG file and runs the same code.
        """
        folder = self.root / "preload"
        folder.mkdir(exist_ok=True)
        lines = ["import importlib", f"for _name in {self.preload!r}:", "    try:",
                 "        importlib.import_module(_name)", "    except Exception:", "        pass"]
        (folder / "sitecustomize.py").write_text("\n".join(lines) + "\n")
        env = dict(self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH", "")) if p)
        return env

    def _spawn(self, service: str) -> None:
        log = (self.service_logs / f"{service}.log").open("ab")
        args = [airflow_bin(), service]
        env = self._preload_env() if service == "scheduler" and self.preload else self.env
        try:
            self.processes[service] = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.root, start_new_session=True,
            )
        finally:
            log.close()

    def _check_alive(self) -> None:
        for service, process in self.processes.items():
            if process.poll() is not None:
                raise AirflowDeploymentError(
                    f"airflow {service} exited with {process.returncode}; the end of its log:\n"
                    + self.service_log(service, tail=60)
                )

    def _wait_until_ready(self, deadline: float) -> None:
        """Health answers, every integration's DAG is registered, and none failed to import."""
        expected = set(self.dag_ids)
        last_problem = "the API server did not answer"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                health = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                if health.status_code == 200 and health.json()["metadatabase"]["status"] == "healthy":
                    errors = self.api("GET", "/api/v2/importErrors", params={"limit": 100})["import_errors"]
                    if errors:
                        raise AirflowDeploymentError(
                            "the DAG files failed to import: "
                            + "; ".join(f"{e['filename']}: {e['stack_trace']}" for e in errors)
                        )
                    found = {d["dag_id"] for d in self.dags()}
                    if expected <= found:
                        if self._scheduler_running():
                            return
                        last_problem = "the scheduler has not reported a heartbeat yet"
                    else:
                        last_problem = f"DAGs not registered yet: {sorted(expected - found)}"
            except requests.RequestException as exc:
                last_problem = f"the API server did not answer: {exc.__class__.__name__}"
            time.sleep(0.5)
        raise AirflowDeploymentError(
            f"Airflow was not ready within {self.startup_timeout:.0f} s ({last_problem}); the end of the "
            f"service logs:\n" + "\n".join(f"--- {s}\n{self.service_log(s, tail=30)}" for s in SERVICES)
        )

    def _scheduler_running(self) -> bool:
        health = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()
        return (health.get("scheduler") or {}).get("status") == "healthy"

    def stop(self) -> None:
        """Stop every service and whatever it started (task processes), then drop the metadata DB."""
        self.session.close()
        descendants: list[Any] = []
        try:
            import psutil

            for process in self.processes.values():
                try:
                    descendants += psutil.Process(process.pid).children(recursive=True)
                except psutil.Error:
                    pass
        except ImportError:
            psutil = None  # type: ignore[assignment]
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(10)
        for child in descendants:  # task processes that left the service's process group
            try:
                if child.is_running():
                    child.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.processes.clear()
        try:
            self._drop_metadata_db()
        except Exception:  # noqa: BLE001 - a leftover database must not hide the test's own outcome
            pass

    def __enter__(self) -> AirflowDeployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def service_log(self, service: str, tail: int | None = None) -> str:
        path = self.service_logs / f"{service}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-tail:]) if tail else text

    # -- the CLI and the REST API ------------------------------------------------------------

    def cli(self, args: list[str], *, timeout: float = 120, check: bool = True,
            log_name: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` against this deployment; output captured (and kept in a log file)."""
        result = subprocess.run([airflow_bin(), *args], env=self.env, capture_output=True, text=True,
                                timeout=timeout, cwd=self.root, check=False)
        name = log_name or f"cli-{args[0]}-{uuid.uuid4().hex[:6]}"
        (self.service_logs / f"{name}.log").write_text(f"$ airflow {' '.join(args)}\n{result.stdout}\n{result.stderr}")
        if check and result.returncode != 0:
            raise AirflowDeploymentError(
                f"airflow {' '.join(args)} exited with {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def api(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None,
            headers: Mapping[str, str] | None = None, timeout: float = 30) -> Any:
        response = self.session.request(method, f"{self.base_url}{path}", json=json_body, params=params,
                                        headers=dict(headers or {}), timeout=timeout)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise AirflowApiError(method, path, response.status_code, detail)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def dags(self) -> list[dict[str, Any]]:
        return self.api("GET", "/api/v2/dags", params={"dag_id_pattern": "grade_sync_", "limit": 100})["dags"]

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause a DAG (new DAGs start unpaused in this deployment)."""
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json_body={"is_paused": paused})

    def set_pool(self, name: str, slots: int, description: str = "IC request budget") -> None:
        body = {"name": name, "slots": slots, "description": description, "include_deferred": False}
        try:
            self.api("POST", "/api/v2/pools", json_body=body)
        except AirflowApiError as exc:
            if exc.status != 409:
                raise
            self.api("PATCH", f"/api/v2/pools/{quote(name, safe='')}", json_body=body)

    def set_connection(self, conn_id: str, conn: Mapping[str, Any]) -> None:
        """Create or replace a connection in the metadata DB (tasks read it through the execution API).

        ``conn`` is Airflow's JSON form (``conn_type``, ``host``, ``login``, ``password``, ``extra``...),
        e.g. ``SandboxProcess.airflow_connection()``. A connection exported as an environment variable
        shadows one set here.
        """
        extra = conn.get("extra")
        body = {
            "connection_id": conn_id,
            "conn_type": conn.get("conn_type", "http"),
            "host": conn.get("host"),
            "login": conn.get("login"),
            "password": conn.get("password"),
            "schema": conn.get("schema"),
            "port": conn.get("port"),
            "extra": extra if extra is None or isinstance(extra, str) else json.dumps(extra),
        }
        try:
            self.api("POST", "/api/v2/connections", json_body=body)
        except AirflowApiError as exc:
            if exc.status != 409:
                raise
            self.api("PATCH", f"/api/v2/connections/{quote(conn_id, safe='')}", json_body=body)

    # -- runs ---------------------------------------------------------------------------------

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, run_id: str | None = None,
                logical_date: datetime | str | None = None) -> str:
        """Trigger a manual run (as the UI's Trigger button does) and return its run id."""
        body: dict[str, Any] = {"logical_date": iso(logical_date) if logical_date else None, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json_body=body)["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> RunResult:
        data = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
        tasks = {(t["task_id"], int(t.get("map_index", -1))): t.get("state") or "none"
                 for t in self.task_instances(dag_id, run_id)}
        return RunResult(
            dag_id=dag_id, run_id=run_id, state=data["state"], run_type=data["run_type"], conf=data.get("conf") or {},
            logical_date=data.get("logical_date"), data_interval_start=data.get("data_interval_start"),
            data_interval_end=data.get("data_interval_end"), tasks=tasks,
        )

    def runs(self, dag_id: str, run_type: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 100, "order_by": "run_after"}
        if run_type:
            params["run_type"] = run_type
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params=params)["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        return self.api("GET", path, params={"limit": 100})["task_instances"]

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float = 180, poll: float = 1.0) -> RunResult:
        """Wait until the run succeeded or failed; a timeout names the task states and the scheduler's log."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
            if data["state"] in TERMINAL_RUN_STATES:
                return self.run(dag_id, run_id)
            if time.monotonic() > deadline:
                current = self.run(dag_id, run_id)
                raise AirflowDeploymentError(
                    f"{dag_id} run {run_id} still {current.state} after {timeout:.0f} s; tasks {current.tasks}; "
                    f"the end of the scheduler's log:\n{self.service_log('scheduler', tail=40)}"
                )
            self._check_alive()
            time.sleep(poll)

    def trigger_and_wait(self, dag_id: str, conf: Mapping[str, Any] | None = None, *,
                         timeout: float = 180) -> RunResult:
        return self.wait_for_run(dag_id, self.trigger(dag_id, conf), timeout=timeout)

    # -- backfills ------------------------------------------------------------------------------

    def backfill(
        self, dag_id: str, from_date: datetime | str, to_date: datetime | str, *, max_active_runs: int = 1,
        reprocess_behavior: str = "none", conf: Mapping[str, Any] | None = None, via: str = "cli",
    ) -> dict[str, Any]:
        """Create a backfill (``airflow backfill create`` or ``POST /api/v2/backfills``); returns it."""
        if via == "cli":
            args = ["backfill", "create", "--dag-id", dag_id, "--from-date", iso(from_date), "--to-date", iso(to_date),
                    "--max-active-runs", str(max_active_runs), "--reprocess-behavior", reprocess_behavior]
            if conf:
                args += ["--dag-run-conf", json.dumps(dict(conf))]
            self.cli(args, timeout=120)
            backfills = self.api("GET", "/api/v2/backfills", params={"dag_id": dag_id, "limit": 100})["backfills"]
            if not backfills:
                raise AirflowDeploymentError(f"airflow backfill create made no backfill for {dag_id}")
            return max(backfills, key=lambda b: b["id"])
        body = {"dag_id": dag_id, "from_date": iso(from_date), "to_date": iso(to_date),
                "max_active_runs": max_active_runs, "reprocess_behavior": reprocess_behavior,
                "dag_run_conf": dict(conf) if conf else None, "run_backwards": False}
        return self.api("POST", "/api/v2/backfills", json_body=body)

    def wait_for_backfill(self, backfill: Mapping[str, Any], *, timeout: float = 300,
                          poll: float = 1.0) -> list[RunResult]:
        """Wait until every run of the backfill finished; returns them ordered by logical date."""
        dag_id, backfill_id = backfill["dag_id"], backfill["id"]
        deadline = time.monotonic() + timeout
        while True:
            info = self.api("GET", f"/api/v2/backfills/{backfill_id}")
            runs = [r for r in self.runs(dag_id, run_type="backfill") if r.get("backfill_id") in (None, backfill_id)]
            done = all(r["state"] in TERMINAL_RUN_STATES for r in runs)
            if runs and done and info.get("completed_at"):
                results = [self.run(dag_id, r["dag_run_id"]) for r in runs]
                return sorted(results, key=lambda r: r.logical_date or "")
            if time.monotonic() > deadline:
                raise AirflowDeploymentError(
                    f"backfill {backfill_id} of {dag_id} not finished after {timeout:.0f} s: "
                    f"{[(r['dag_run_id'], r['state']) for r in runs]}; completed_at={info.get('completed_at')}; "
                    f"the end of the scheduler's log:\n{self.service_log('scheduler', tail=40)}"
                )
            self._check_alive()
            time.sleep(poll)

    # -- what a run left behind: logs and XComs -------------------------------------------------

    def task_log(self, dag_id: str, run_id: str, task_id: str, *, map_index: int = -1,
                 try_number: int | None = None) -> TaskLog:
        """A task try's log through the REST API (the UI's log view), as structured records."""
        if try_number is None:
            ti_path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
            if map_index >= 0:
                ti_path += f"/{map_index}"
            try_number = max(1, int(self.api("GET", ti_path).get("try_number") or 1))
        path = (f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/"
                f"{try_number}")
        data = self.api("GET", path, params={"map_index": map_index, "full_content": "true"},
                        headers={"Accept": "application/json"})
        content = data.get("content") or []
        records = [c if isinstance(c, dict) else {"event": str(c)} for c in content]
        return TaskLog(records)

    def run_log_files(self, dag_id: str, run_id: str) -> list[Path]:
        """Every log file Airflow wrote for the run's task tries (all tasks, map indexes, attempts)."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []

    def run_log_text(self, dag_id: str, run_id: str) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.run_log_files(dag_id, run_id))

    def xcoms(self, dag_id: str, run_id: str) -> dict[tuple[str, int, str], Any]:
        """Every XCom of the run: ``(task_id, map_index, key) -> value`` (the stored JSON)."""
        base = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        entries = self.api("GET", f"{base}/~/xcomEntries", params={"limit": 1000})["xcom_entries"]
        values: dict[tuple[str, int, str], Any] = {}
        for entry in entries:
            task_id, map_index, key = entry["task_id"], int(entry.get("map_index", -1)), entry["key"]
            item = self.api("GET", f"{base}/{task_id}/xcomEntries/{quote(key, safe='')}",
                            params={"map_index": map_index})
            values[(task_id, map_index, key)] = item.get("value")
        return values

    def xcom(self, dag_id: str, run_id: str, task_id: str, *, key: str = "return_value",
             map_index: int = -1) -> Any:
        base = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        return self.api("GET", f"{base}/{task_id}/xcomEntries/{quote(key, safe='')}",
                        params={"map_index": map_index}).get("value")


def find_secrets(texts: Iterable[str], secret_values: Iterable[str | None]) -> dict[str, list[str]]:
    """Which of ``secret_values`` (in any of their encoded forms) occur in which text; empty is clean.

    Forms checked: as is, URL-encoded (``quote`` and ``quote_plus``), JSON-escaped, and base64.
    Keys of the answer are the secrets (shortened, so a failure message does not print them whole).
    """
    import base64
    from urllib.parse import quote_plus

    found: dict[str, list[str]] = {}
    bodies = list(texts)
    for secret in {s for s in secret_values if s}:
        forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1],
                 base64.b64encode(secret.encode()).decode().rstrip("=")}
        hits = [f"text #{n}" for n, body in enumerate(bodies) if any(form in body for form in forms)]
        if hits:
            found[f"{secret[:3]}…({len(secret)} chars)"] = hits
    return found


def make_root(prefix: str = "gradesync-deployment-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_root(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
