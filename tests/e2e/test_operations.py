"""Operations through a real Airflow 3 deployment: trigger Params, a backfill, and failed runs.

One deployment (API server, scheduler with LocalExecutor, DAG processor; see
``gradesync.testing_airflow``) serves the whole module. Every test has its own integration (its own
DAG, IC connection, SQLite warehouse and sandbox), declared up front so the DAG processor parses
them once. Runs are triggered through the REST API as the UI does; the backfill is created with
``airflow backfill create``.

The backfill needs changes that land in three distinct data intervals. The sandbox stamps every
change with its own clock, which follows the wall clock (the admin API cannot set a change's
``dateLastModified``), and Airflow only backfills intervals that have ended. So the backfill
integration runs every minute, and a background thread started with the module loads it once,
then makes one batch of changes in each of three consecutive minutes while the other tests run;
the backfill test comes last and backfills those three minutes. Its ``start_date`` lies in the
future, so the scheduler creates no scheduled runs of its own (backfills ignore ``start_date``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote_plus

import pandas as pd
import pytest
import requests

from gradesync.config import IntegrationConfig, load_config
from gradesync.sandbox import SandboxProcess
from gradesync.testing import assert_warehouse_matches_sandbox
from gradesync.testing_airflow import (
    AirflowApiError,
    AirflowDeployment,
    RunResult,
    TaskLog,
    find_secrets,
)
from gradesync.warehouse import Warehouse

pytestmark = pytest.mark.slow

ENTITIES = ["categories", "line_items", "results"]
NAMES = ("ops_full", "ops_entities", "ops_since", "ops_dry", "ops_invalid", "ops_badsecret", "ops_down",
         "ops_backfill")
# Imported once by the scheduler, so forked task processes do not import them again (see
# AirflowDeployment.preload): a run then takes seconds, not half a minute, on a small machine.
PRELOAD = ("pandas", "pyarrow", "pyarrow.parquet", "sqlalchemy", "airflow.sdk",
           "airflow.sdk.execution_time.task_runner", "gradesync.dag_factory", "gradesync.pipeline",
           "gradesync.merge", "gradesync.warehouse", "gradesync.oneroster", "gradesync.extract")
RUN_TIMEOUT = 150
# The sandbox issues tokens of this shape (secrets.token_urlsafe(32)); test_token_shape checks it.
TOKEN_SHAPE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def integration_yaml(name: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "api_version": "1.2",
        "connection_id": f"ic_{name}",
        "warehouse_connection_id": f"wh_{name}",
        "schedule": None,
        "full_sync_weekday": None,
        "entities": ENTITIES,
        "retries": 0,  # a failed task fails the run at once instead of waiting out retry delays
        "extraction": {"max_concurrent_requests": 2, "page_size": 500},
    }
    data.update(overrides)
    return data


def metadata_server() -> str | None:
    """Postgres for Airflow's metadata DB when it answers (as in production), else SQLite.

    ``GRADESYNC_AIRFLOW_METADATA=sqlite|postgres`` forces one; ``postgres`` (or
    ``GRADESYNC_REQUIRE_POSTGRES=1``) with no server fails rather than falling back.
    """
    from gradesync.warehouse.testing import postgres_required, postgres_unreachable_reason
    from gradesync.warehouse.testing import postgres_url as server_url

    choice = os.environ.get("GRADESYNC_AIRFLOW_METADATA", "")
    if choice == "sqlite":
        return None
    url = server_url()
    reason = postgres_unreachable_reason(url)
    if reason is not None:
        if choice == "postgres" or postgres_required():
            pytest.fail(f"Postgres for Airflow's metadata DB at {url} is unreachable: {reason}")
        return None
    return url


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowDeployment]:
    root = tmp_path_factory.mktemp("airflow-ops")
    warehouses = root / "warehouses"
    warehouses.mkdir()
    integrations = {name: integration_yaml(name) for name in NAMES}
    integrations["ops_backfill"] = integration_yaml(
        "ops_backfill", schedule="* * * * *", start_date=date.today() + timedelta(days=2),
    )
    connections = {f"wh_{name}": f"sqlite:///{warehouses / name}.db" for name in NAMES}
    deployment = AirflowDeployment(root, integrations, connections=connections, metadata_url=metadata_server(),
                                   preload=PRELOAD)
    try:
        deployment.start()
    except Exception as exc:  # noqa: BLE001 - say why, never skip
        pytest.fail(f"Airflow 3 did not start: {exc}", pytrace=False)
    print(f"Airflow started in {deployment.started_in:.1f} s "
          f"(metadata DB: {'Postgres ' + str(deployment.metadata_db) if deployment.metadata_db else 'SQLite'})")
    yield deployment
    deployment.stop()


@dataclass
class Integration:
    """One test's integration inside the shared deployment."""

    airflow: AirflowDeployment
    name: str
    config: IntegrationConfig = field(init=False)
    warehouse: Warehouse = field(init=False)

    def __post_init__(self) -> None:
        self.config = load_config(self.airflow.integrations_dir / f"{self.name}.yaml")
        url = self.airflow.connections[self.config.warehouse_connection_id]
        assert isinstance(url, str)
        self.warehouse = Warehouse(url)

    @property
    def dag_id(self) -> str:
        return self.config.dag_id

    def connect(self, sandbox: SandboxProcess, **changes: Any) -> dict[str, Any]:
        conn = {**sandbox.airflow_connection(), **changes}
        self.airflow.set_connection(self.config.connection_id, conn)
        return conn

    def run(self, conf: dict[str, Any] | None = None, *, expect: str | None = "success") -> RunResult:
        result = self.airflow.trigger_and_wait(self.dag_id, conf, timeout=RUN_TIMEOUT)
        if expect is not None and result.state != expect:
            pytest.fail(f"{self.dag_id} run {result.run_id} ended {result.state}, expected {expect}; "
                        f"tasks {result.tasks}\n{self.failure_report(result)}", pytrace=False)
        return result

    def failure_report(self, result: RunResult) -> str:
        parts = []
        for task_id, map_index in result.failed_tasks:
            if result.tasks[(task_id, map_index)] == "failed":
                log = self.airflow.task_log(self.dag_id, result.run_id, task_id, map_index=map_index)
                parts.append(f"--- {task_id}[{map_index}]\n" + "\n".join(log.lines[-12:]))
        try:
            rejects = self.warehouse.read_table("rejects", self.name)
            rejects = rejects[rejects["run_id"] == result.run_id]
            if len(rejects):
                parts.append("--- rejects\n" + rejects[["entity", "sourced_id", "reason"]].to_string())
        except Exception as exc:  # noqa: BLE001 - a report helper must not hide the failure it reports
            parts.append(f"(rejects unreadable: {exc})")
        return "\n".join(parts)

    def sync_runs(self, run_id: str) -> dict[str, dict[str, Any]]:
        return {row["entity"]: row for row in self.warehouse.run_summary(self.name, run_id)}

    def report(self, run_id: str) -> dict[str, Any]:
        return self.airflow.xcom(self.dag_id, run_id, "report")

    def windows(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The window each mapped extract used, from its XCom manifest."""
        out = {}
        for index, entity in enumerate(self.config.selected_entities):
            manifest = self.airflow.xcom(self.dag_id, run_id, "extract", map_index=index)
            out[manifest["entity"]] = manifest.get("window") or {"skipped": manifest.get("skipped")}
            assert manifest["entity"] == entity
        return out


def sandbox(**kwargs: Any) -> SandboxProcess:
    """A tiny 1.2 sandbox with secrets unique to the test, so a leak cannot hide behind a common word."""
    secrets = ["--client-secret", f"cs-{uuid.uuid4().hex}", "--vendor-secret", f"vs-{uuid.uuid4().hex}"]
    return SandboxProcess(api="1.2", preset="tiny", extra_args=secrets, **kwargs)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def as_utc(value: Any) -> datetime:
    stamp = pd.Timestamp(value)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).to_pydatetime()


def changed_between(sb: SandboxProcess, entity: str, since: datetime, until: datetime | None = None) -> set[str]:
    """The sandbox records of ``entity`` whose dateLastModified is in (since, until]."""
    return {
        r["sourcedId"] for r in sb.admin.records(entity)
        if parse_time(r["dateLastModified"]) > since and (until is None or parse_time(r["dateLastModified"]) <= until)
    }


def snapshot(integ: Integration) -> dict[str, Any]:
    tables = {name: integ.warehouse.read_table(name, integ.name) for name in (*ENTITIES, "result_history")}
    marks = {name: integ.warehouse.get_watermark(integ.name, name) for name in ENTITIES}
    return {"tables": tables, "watermarks": marks}


# ------------------------------------------------------------------------------------------------
# What a failed run must say, and must not say
# ------------------------------------------------------------------------------------------------


def closing_line(log: TaskLog) -> str:
    """The last thing a task said: its last record that is not one of Airflow's ``::group::`` markers,
    or, when that record is the task's exception, the exception's message."""
    for record in reversed(log.records):
        event = str(record.get("event", ""))
        if not event.strip() or event.startswith("::"):
            continue
        details = record.get("error_detail")
        if details:
            return str(details[-1].get("exc_value", ""))
        return event
    return ""


def secret_values(sb: SandboxProcess, conn: dict[str, Any]) -> list[str]:
    import base64

    password = conn.get("password") or ""
    extra = conn.get("extra") or {}
    values = [password, sb.client_secret, sb.vendor_secret, extra.get("vendor_secret"),
              f"{extra.get('vendor_key')}:{extra.get('vendor_secret')}",
              base64.b64encode(f"{conn.get('login')}:{password}".encode()).decode()]
    return [v for v in values if v]


def fetch_token(sb: SandboxProcess) -> str:
    response = requests.post(sb.token_url, data={"grant_type": "client_credentials"},
                             auth=(sb.client_id, sb.client_secret), timeout=10)
    response.raise_for_status()
    return response.json()["access_token"]


def live_tokens(sb: SandboxProcess, texts: list[str], exclude: set[str]) -> list[str]:
    """Token-shaped strings in ``texts`` that the (running) sandbox accepts as bearer tokens."""
    candidates = {m for text in texts for m in TOKEN_SHAPE.findall(text)} - exclude
    accepted = []
    for candidate in sorted(candidates)[:500]:
        response = requests.get(f"{sb.gradebook_url}/categories", params={"limit": 1}, timeout=10, headers={
            "Authorization": f"Bearer {candidate}",
            "x-vendor-authorization": f"{sb.vendor_key}:{sb.vendor_secret}",
        })
        if response.status_code == 200:
            accepted.append(candidate[:4] + "…")
    return accepted


BEARER_IN_TEXT = re.compile(r"Bearer\s+(?!\*\*\*)[A-Za-z0-9._~+/-]{16,}|access_token\W{1,4}(?!\*\*\*)[A-Za-z0-9._~+/-]{16,}")


def run_texts(airflow: AirflowDeployment, integ: Integration, run: RunResult) -> dict[str, str]:
    """Everything the run left to read: its task log files, the REST log view, every XCom, service logs."""
    texts = {str(p): p.read_text(errors="replace") for p in airflow.run_log_files(integ.dag_id, run.run_id)}
    assert texts, f"no task log files for {run.run_id}"
    for (task_id, map_index), state in run.tasks.items():
        if state in ("success", "failed"):
            log = airflow.task_log(integ.dag_id, run.run_id, task_id, map_index=map_index)
            texts[f"REST log {task_id}[{map_index}]"] = log.text
    xcoms = airflow.xcoms(integ.dag_id, run.run_id)
    texts["xcoms"] = json.dumps({repr(k): v for k, v in xcoms.items()}, default=str)
    for service in ("scheduler", "api-server", "dag-processor"):
        texts[f"service log {service}"] = airflow.service_log(service)
    return texts


def assert_no_secrets(airflow: AirflowDeployment, integ: Integration, run: RunResult, sb: SandboxProcess,
                      conn: dict[str, Any], *, own_token: str | None = None) -> None:
    texts = run_texts(airflow, integ, run)
    names = list(texts)
    found = find_secrets(texts.values(), secret_values(sb, conn))
    assert not found, {k: [names[int(h.split('#')[1])] for h in v] for k, v in found.items()}
    bearer = {name: BEARER_IN_TEXT.findall(text)[:3] for name, text in texts.items() if BEARER_IN_TEXT.search(text)}
    assert not bearer, f"bearer tokens in {bearer}"
    if sb.process is not None:
        leaked = live_tokens(sb, list(texts.values()), {own_token} if own_token else set())
        assert not leaked, f"tokens the sandbox accepts appear in the run's logs or XComs: {leaked}"


# ------------------------------------------------------------------------------------------------
# The backfill's changes, made in the background while the other tests run
# ------------------------------------------------------------------------------------------------


def next_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


class Cancelled(Exception):
    pass


def sleep_until(moment: datetime, cancel: threading.Event) -> None:
    delay = (moment - datetime.now(timezone.utc)).total_seconds()
    if delay > 0 and cancel.wait(delay):
        raise Cancelled("the module ended before the backfill changes were made")


class BackfillChanges(threading.Thread):
    """Load the backfill integration once, then change IC in three consecutive one-minute intervals."""

    BATCHES = (
        (("modify", "results", 3),),
        (("add", "results", 2), ("modify", "line_items", 1)),
        (("delete", "results", 2), ("modify", "categories", 1)),
    )

    def __init__(self, integ: Integration) -> None:
        super().__init__(name="backfill-changes", daemon=True)
        self.integ = integ
        self.sandbox = sandbox(seed=13)
        self.conn: dict[str, Any] = {}
        self.initial: RunResult | None = None
        self.intervals: list[tuple[datetime, datetime]] = []
        self.changed: list[dict[str, list[str]]] = []
        self.error: BaseException | None = None
        self.cancel = threading.Event()

    def apply(self, batch: tuple[tuple[str, str, int], ...]) -> dict[str, list[str]]:
        done: dict[str, list[str]] = {}
        for action, entity, count in batch:
            if action == "modify":
                ids = self.sandbox.admin.modify(entity, count=count)
            elif action == "add":
                ids = self.sandbox.admin.add(entity, count=count)
            else:
                ids = self.sandbox.admin.delete(entity, count=count, mode="tombstone")
            done.setdefault(entity, []).extend(ids)
        return done

    def run(self) -> None:
        try:
            self.sandbox.start()
            self.conn = self.integ.connect(self.sandbox)
            self.initial = self.integ.airflow.trigger_and_wait(self.integ.dag_id, {}, timeout=RUN_TIMEOUT)
            if self.initial.state != "success":
                raise AssertionError(f"the initial load of {self.integ.dag_id} ended {self.initial.state}: "
                                     f"{self.initial.tasks}\n{self.integ.failure_report(self.initial)}")
            boundary = next_minute(datetime.now(timezone.utc))
            if (boundary - datetime.now(timezone.utc)).total_seconds() < 3:
                sleep_until(boundary + timedelta(seconds=0.5), self.cancel)
                boundary = next_minute(boundary)
            starts = [boundary - timedelta(minutes=1), boundary, boundary + timedelta(minutes=1)]
            for start, batch in zip(starts, self.BATCHES, strict=True):
                sleep_until(start + timedelta(seconds=0.5), self.cancel)
                self.changed.append(self.apply(batch))
                self.intervals.append((start, start + timedelta(minutes=1)))
            sleep_until(self.intervals[-1][1] + timedelta(seconds=1), self.cancel)  # Airflow backfills ended intervals only
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def stop(self) -> None:
        self.cancel.set()
        self.join(timeout=RUN_TIMEOUT + 30)
        self.sandbox.stop()


@pytest.fixture(scope="module", autouse=True)
def backfill_changes(airflow: AirflowDeployment, request: pytest.FixtureRequest) -> Iterator[BackfillChanges | None]:
    """Started with the module (when the backfill test is selected) so its minutes of waiting overlap
    the other tests."""
    if not any(item.name.startswith("test_backfill") for item in request.session.items):
        yield None
        return
    changes = BackfillChanges(Integration(airflow, "ops_backfill"))
    changes.start()
    yield changes
    changes.stop()


# ------------------------------------------------------------------------------------------------
# Params
# ------------------------------------------------------------------------------------------------


def test_leak_scan_finds_what_it_looks_for() -> None:
    """The secret scan of the failure tests can fail: it finds a real token and encoded secrets."""
    with sandbox(seed=1) as sb:
        token = fetch_token(sb)
        assert TOKEN_SHAPE.fullmatch(token), "the sandbox's bearer tokens changed shape: update TOKEN_SHAPE"
        noise = "x" * 43
        assert live_tokens(sb, [f"refresh ok token={token} other={noise}"], set()) == [token[:4] + "…"]
        assert live_tokens(sb, [f"other={noise}"], set()) == []
        assert BEARER_IN_TEXT.search(f"headers={{'Authorization': 'Bearer {token}'}}")
        assert not BEARER_IN_TEXT.search("headers={'Authorization': 'Bearer ***'}")
        conn = sb.airflow_connection()
        leaked = f"password=%s body=client_secret={quote_plus(sb.client_secret or '')}"
        assert find_secrets([leaked], secret_values(sb, conn)), "a URL-encoded client secret went unnoticed"
        assert not find_secrets(["nothing to see"], secret_values(sb, conn))


def test_full_refresh_marks_vanished_records_deleted(airflow: AirflowDeployment) -> None:
    integ = Integration(airflow, "ops_full")
    with sandbox(seed=5) as sb:
        conn = integ.connect(sb)
        first = integ.run()
        assert all(row["full_sync"] for row in integ.sync_runs(first.run_id).values())

        modified = sb.admin.modify("results", count=2)
        added = sb.admin.add("results", count=1)
        vanished = set(sb.admin.delete("results", count=2, mode="vanish"))

        own_token = fetch_token(sb)
        full = integ.run({"full_refresh": True})
        runs = integ.sync_runs(full.run_id)
        assert set(runs) == set(ENTITIES)
        assert all(row["full_sync"] for row in runs.values()), runs
        assert {w["reason"] for w in integ.windows(full.run_id).values()} == {"full_refresh requested"}
        results = runs["results"]
        assert (results["inserted"], results["updated"], results["deleted"]) == (len(added), len(modified),
                                                                                len(vanished)), results
        assert results["extracted"] == len(sb.admin.records("results"))
        assert_warehouse_matches_sandbox(integ.warehouse, integ.config, sb, vanished={"results": vanished})
        table = integ.warehouse.read_table("results", integ.name).set_index("sourced_id")
        assert table.loc[sorted(vanished), "deleted_at"].notna().all()
        assert set(table.loc[sorted(vanished), "deleted_reason"]) == {"vanished"}
        live = {r["sourcedId"] for r in sb.admin.records("results") if r["status"] == "active"}
        assert set(table.index[table["deleted_at"].isna()]) == live
        assert integ.report(full.run_id)["entities"]["results"]["deleted"] == len(vanished)
        # A successful run used real tokens: none of them, nor any secret, reached a log or an XCom.
        assert sb.admin.stats()["tokens_issued"] >= 2
        assert_no_secrets(airflow, integ, full, sb, conn, own_token=own_token)


def test_entities_param_syncs_only_those_entities(airflow: AirflowDeployment) -> None:
    integ = Integration(airflow, "ops_entities")
    chosen = ["categories", "line_items"]
    with sandbox(seed=6) as sb:
        integ.connect(sb)
        run = integ.run({"entities": chosen})
        runs = integ.sync_runs(run.run_id)
        assert sorted(runs) == sorted(chosen), runs
        assert integ.windows(run.run_id)["results"] == {"skipped": True}
        assert set(integ.report(run.run_id)["entities"]) == set(chosen)
        assert integ.warehouse.read_table("results", integ.name).empty
        assert integ.warehouse.get_watermark(integ.name, "results") is None
        assert all(integ.warehouse.get_watermark(integ.name, e) is not None for e in chosen)
        assert_warehouse_matches_sandbox(integ.warehouse, integ.config, sb, entities=chosen)


def test_since_param_extracts_only_records_changed_after_it(airflow: AirflowDeployment) -> None:
    integ = Integration(airflow, "ops_since")
    since = datetime(2026, 11, 16, tzinfo=timezone.utc)  # inside the sandbox's generated history
    with sandbox(seed=4) as sb:
        integ.connect(sb)
        integ.run()  # first load: full; the watermark is now the newest record
        modified = sb.admin.modify("results", count=2)

        run = integ.run({"since": since.isoformat().replace("+00:00", "Z")})
        runs = integ.sync_runs(run.run_id)
        windows = integ.windows(run.run_id)
        for entity in ENTITIES:
            expected = changed_between(sb, entity, since)
            assert runs[entity]["extracted"] == len(expected), (entity, runs[entity], len(expected))
            assert not runs[entity]["full_sync"]
            assert parse_time(windows[entity]["since"]) == since and windows[entity]["reason"] == "since requested"
        total = sum(len(sb.admin.records(e)) for e in ENTITIES)
        assert 0 < sum(r["extracted"] for r in runs.values()) < total, "since chose all or nothing: pick another"
        # since reaches back past the watermark: older changes are read again (and are unchanged)
        assert runs["results"]["extracted"] > len(modified)
        assert runs["results"]["updated"] == len(modified)
        assert_warehouse_matches_sandbox(integ.warehouse, integ.config, sb)


def test_dry_run_loads_nothing_and_reports_what_would_change(airflow: AirflowDeployment) -> None:
    integ = Integration(airflow, "ops_dry")
    with sandbox(seed=8) as sb:
        integ.connect(sb)
        integ.run()
        modified = sb.admin.modify("results", count=3)
        added = sb.admin.add("results", count=2)
        tombstoned = sb.admin.delete("results", count=1, mode="tombstone")
        before = snapshot(integ)

        run = integ.run({"dry_run": True})
        report = integ.report(run.run_id)
        assert report.get("dry_run") is True, report
        results = report["entities"]["results"]
        assert results["extracted"] == len(modified) + len(added) + len(tombstoned), results
        assert results["inserted"] == len(added), results
        assert results["updated"] == len(modified) + len(tombstoned), results  # a tombstone updates the row
        assert results["deleted"] == len(tombstoned), results

        after = snapshot(integ)
        assert after["watermarks"] == before["watermarks"], "dry_run moved the watermarks"
        for name, table in before["tables"].items():
            changed = after["tables"][name]
            assert len(changed) == len(table) and changed.equals(table), (
                f"dry_run changed the warehouse table {name}: {len(table)} rows before, {len(changed)} after")


def test_invalid_param_fails_the_run_with_a_clear_message(airflow: AirflowDeployment) -> None:
    integ = Integration(airflow, "ops_invalid")
    with sandbox(seed=9) as sb:
        integ.connect(sb)
        try:
            run_id = airflow.trigger(integ.dag_id, {"since": "yesterday"})
        except AirflowApiError as exc:
            pytest.fail(f"the REST API refused the trigger instead of creating a run that fails with a message "
                        f"in its task log: HTTP {exc.status}: {exc.detail}", pytrace=False)
        run = airflow.wait_for_run(integ.dag_id, run_id, timeout=RUN_TIMEOUT)
        assert run.state == "failed", run.tasks
        failed = [k for k, v in run.tasks.items() if v == "failed"]
        assert len(failed) == 1, run.tasks
        task_id, map_index = failed[0]
        assert task_id in ("validate_config", "refresh_token"), f"Params must be checked before extracting: {failed}"
        line = closing_line(airflow.task_log(integ.dag_id, run_id, task_id, map_index=map_index))
        assert "since" in line and "'yesterday'" in line and "ISO 8601" in line, line
        assert line.startswith(f"Grade sync {integ.name} failed:"), line
        assert sb.admin.stats()["api_requests"] == 0, "an invalid run reached IC"


# ------------------------------------------------------------------------------------------------
# Failed runs: what the log says, and that it says no secret
# ------------------------------------------------------------------------------------------------


def assert_failed_at_refresh_token(integ: Integration, run: RunResult) -> str:
    assert run.state == "failed", run.tasks
    assert run.task_state("validate_config") == "success", run.tasks
    assert run.failed_tasks and run.task_state("refresh_token") == "failed", run.tasks
    assert [k for k, v in run.tasks.items() if v == "failed"] == [("refresh_token", -1)], run.tasks
    log = integ.airflow.task_log(integ.dag_id, run.run_id, "refresh_token")
    line = closing_line(log)
    assert "\n" not in line and line, log.text[-3000:]
    return line


def test_bad_client_secret_fails_at_refresh_token_with_a_fix_and_no_secret(airflow: AirflowDeployment) -> None:
    integ = Integration(airflow, "ops_badsecret")
    with sandbox(seed=10) as sb:
        conn = integ.connect(sb, password=f"wrong-{uuid.uuid4().hex}")
        run = integ.run(expect="failed")
        line = assert_failed_at_refresh_token(integ, run)
        assert sb.admin.stats()["tokens_issued"] == 0  # so no bearer token exists that could leak
        assert_no_secrets(airflow, integ, run, sb, conn)
        assert integ.config.connection_id in line and "client id/secret" in line, line
        assert line.startswith(f"Grade sync {integ.name} failed:"), line
        assert "Admin → Connections" in line, line


def test_ic_down_fails_at_refresh_token_with_a_fix_and_no_secret(airflow: AirflowDeployment) -> None:
    integ = Integration(airflow, "ops_down")
    sb = sandbox(seed=11).start()
    conn = integ.connect(sb)
    sb.stop()  # IC is down: nothing listens on the connection's port any more
    run = integ.run(expect="failed")
    line = assert_failed_at_refresh_token(integ, run)
    assert_no_secrets(airflow, integ, run, sb, conn)
    assert line.startswith(f"Grade sync {integ.name} failed:"), line
    assert integ.config.connection_id in line and "could not be reached" in line, line
    assert "Service URL" in line, line


# ------------------------------------------------------------------------------------------------
# Backfill (keep last: it waits for the background changes)
# ------------------------------------------------------------------------------------------------


def test_backfill_runs_each_interval_and_ends_like_a_full_sync(
    airflow: AirflowDeployment, backfill_changes: BackfillChanges | None
) -> None:
    assert backfill_changes is not None
    backfill_changes.join(timeout=400)
    assert not backfill_changes.is_alive(), "the background changes did not finish"
    if backfill_changes.error is not None:
        raise backfill_changes.error
    integ, sb, intervals = backfill_changes.integ, backfill_changes.sandbox, backfill_changes.intervals
    assert backfill_changes.initial is not None
    first = integ.sync_runs(backfill_changes.initial.run_id)
    assert all(row["full_sync"] for row in first.values()), first

    backfill = airflow.backfill(integ.dag_id, intervals[0][0], intervals[-1][0], max_active_runs=1)
    runs = airflow.wait_for_backfill(backfill, timeout=240)
    assert [r.state for r in runs] == ["success"] * 3, [(r.run_id, r.state, r.tasks) for r in runs]
    assert all(r.run_type == "backfill" for r in runs)
    assert [(parse_time(r.data_interval_start or ""), parse_time(r.data_interval_end or "")) for r in runs] == intervals

    for run, (start, end), changed in zip(runs, intervals, backfill_changes.changed, strict=True):
        rows = integ.sync_runs(run.run_id)
        windows = integ.windows(run.run_id)
        assert set(rows) == set(ENTITIES), rows
        for entity in ENTITIES:
            expected = changed_between(sb, entity, start, end)
            assert set(changed.get(entity, [])) <= expected, (entity, start, changed)
            row, window = rows[entity], windows[entity]
            assert not row["full_sync"], (run.run_id, entity, row)
            assert row["extracted"] == len(expected), (run.run_id, entity, row["extracted"], len(expected))
            assert (parse_time(window["since"]), parse_time(window["until"])) == (start, end), window
            assert window["reason"] == "data interval", window
            assert as_utc(row["watermark"]) == end, (run.run_id, entity, row["watermark"], end)
    # every change landed in exactly one interval, and every interval had changes
    assert all(sum(r["extracted"] for r in integ.sync_runs(run.run_id).values()) for run in runs)
    assert_warehouse_matches_sandbox(integ.warehouse, integ.config, sb)
