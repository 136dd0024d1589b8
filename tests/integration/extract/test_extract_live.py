"""Extraction against the live sandbox: exact staging per entity, faults, deltas, both API versions."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath
from live_ic import assert_exact, client_for, connection, staged

from gradesync.entities import entities_for
from gradesync.extract import extract_entity
from gradesync.oneroster import ICConnectionSettings, OneRosterHook, UnsupportedEntityError
from gradesync.records import parse_datetime
from gradesync.sandbox import SandboxProcess


def test_every_v12_entity_is_staged_exactly(school12: SandboxProcess, tmp_path: Path) -> None:
    client = client_for(school12)
    for name in entities_for("1.2"):
        manifest = extract_entity(client, name, tmp_path / name, page_size=700)
        assert_exact(school12, manifest)
        assert manifest.counts["total_reported"] == manifest.counts["staged"]
    assert school12.admin.stats()["max_concurrency"] <= 5


def test_every_v11_entity_is_staged_exactly_and_assessments_fail_clearly(tiny11: SandboxProcess,
                                                                         tmp_path: Path) -> None:
    client = client_for(tiny11)
    for name in entities_for("1.1"):
        assert_exact(tiny11, extract_entity(client, name, tmp_path / name, page_size=50))
    before = tiny11.admin.stats()["api_requests"]
    with pytest.raises(UnsupportedEntityError, match="not part of OneRoster 1.1"):
        extract_entity(client, "assessment_results", tmp_path / "ar")
    assert tiny11.admin.stats()["api_requests"] == before, "no request may be sent for an unsupported entity"


@pytest.mark.parametrize("truncate_mode", ["length", "json"])
def test_faults_end_with_exactly_the_served_records(tmp_path: Path, truncate_mode: str) -> None:
    faults = {
        "latency_ms": 15,
        "throttle_every": 20,
        "retry_after_s": 1,
        "max_concurrency": 3,  # the client runs 5: the extra requests meet 429 bursts
        "error_every": 11,
        "error_status": 503,
        "drop_every": 13,
        "truncate_every": 7,
        "truncate_mode": truncate_mode,
        "revoke_after": 25,
        "drift_every": 6,
        "drift_count": 2,
    }
    with SandboxProcess(api="1.2", preset="school", seed=3, faults=faults, token_lifetime=2) as sb:
        client = client_for(sb, max_concurrency=5)
        started = time.monotonic()
        manifests = {}
        for name in ("line_items", "results"):
            manifests[name] = extract_entity(client, name, tmp_path / name, page_size=500)
        elapsed = time.monotonic() - started
        sb.admin.set_faults({})  # read the truth without faults
        for manifest in manifests.values():
            assert_exact(sb, manifest)
        stats = sb.admin.stats()
    results = manifests["results"]
    reasons = results.retry_reasons
    for kind in ("429", "503", "connection", "401"):
        assert reasons.get(kind, 0) > 0, (kind, reasons)
    assert reasons.get("bad_body", 0) + reasons.get("connection", 0) > 0
    assert results.counts["duplicates_in_scan"] > 0, "drift should have shifted pages"
    assert results.counts["catchup_records"] > 0, "records inserted behind the read front must be caught up"
    assert stats["faults"].get("drift", 0) > 0 and stats["faults"].get("revoke", 0) == 1
    assert stats["tokens_issued"] >= 3, "tokens must be renewed as they expire (2 s lifetime)"
    assert elapsed > 3


def test_delta_stages_only_what_changed(tmp_path: Path) -> None:
    with SandboxProcess(api="1.2", preset="school", seed=5) as sb:
        client = client_for(sb)
        full = extract_entity(client, "results", tmp_path / "full", page_size=2000)
        assert_exact(sb, full)
        watermark = parse_datetime(full.max_date_last_modified)
        modified = set(sb.admin.modify("results", 7))
        added = set(sb.admin.add("results", 4))
        tombstoned = set(sb.admin.delete("results", 3, mode="tombstone"))
        vanished = set(sb.admin.delete("results", 2, mode="vanish"))
        delta = extract_entity(client, "results", tmp_path / "delta", since=watermark, page_size=2000)
        got = staged(delta)
        assert set(got.column("sourced_id").to_pylist()) == modified | added | tombstoned
        by_id = {r["sourced_id"]: r for r in got.to_pylist()}
        assert {i for i, r in by_id.items() if r["status"] == "tobedeleted"} == tombstoned
        assert delta.full is False and delta.counts["staged"] == 14
        assert parse_datetime(delta.max_date_last_modified) > watermark

        # a closed window (since, until] with until before the changes sees nothing new
        none = extract_entity(client, "results", tmp_path / "none", since=watermark, until=watermark, page_size=500)
        assert none.counts["staged"] == 0

        # the next delta from the new watermark is empty; a full sync no longer has the vanished ids
        again = extract_entity(client, "results", tmp_path / "again",
                               since=parse_datetime(delta.max_date_last_modified), page_size=500)
        assert again.counts["staged"] == 0
        weekly = extract_entity(client, "results", tmp_path / "weekly", page_size=2000)
        assert_exact(sb, weekly)
        assert not vanished & set(staged(weekly).column("sourced_id").to_pylist())


def test_hook_reads_an_airflow_connection_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    with SandboxProcess(api="1.2", preset="tiny", seed=9, url_form="app") as sb:
        assert "/api/oneroster/v1p2/" in sb.service_url, sb.service_url  # the app-name URL form
        monkeypatch.setenv("AIRFLOW_CONN_IC_SANDBOX_APP", json.dumps(sb.airflow_connection()))
        hook = OneRosterHook(ic_conn_id="ic_sandbox_app", api_version="1.2")
        assert hook.settings.gradebook_base == sb.gradebook_url
        ok, message = hook.test_connection()
        assert ok, message
        with hook.get_client(max_concurrency=2) as client:
            manifest = extract_entity(client, "categories", tmp_path / "c", page_size=10)
        assert_exact(sb, manifest)
        assert OneRosterHook(ic_conn_id="ic_sandbox_app").settings.api_version == "1.2"  # from the URL


def test_staging_on_an_fsspec_url(school12: SandboxProcess) -> None:
    import fsspec
    from airflow.sdk.io import attach

    attach(protocol="memory", fs=fsspec.filesystem("memory"))  # stands in for s3:// and friends
    target = ObjectStoragePath("memory://gradesync-test/run-1/extract/line_items")
    manifest = extract_entity(client_for(school12), "line_items", target, page_size=300, chunk_rows=1000)
    assert all(name.startswith("memory://") for name in manifest.files) and len(manifest.files) >= 1
    assert_exact(school12, manifest)
    assert json.loads((target / "_manifest.json").read_text())["counts"] == manifest.counts


def test_peak_window_makes_requests_serial(tmp_path: Path) -> None:
    from gradesync.oneroster import request_concurrency

    every_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    peak = {"start": "00:00", "end": "23:59:59", "timezone": "UTC", "weekdays": every_day}
    limit = request_concurrency(5, peak, datetime.now().astimezone())
    assert limit == 1
    with SandboxProcess(api="1.2", preset="tiny", seed=2, latency_ms=5) as sb:
        manifest = extract_entity(client_for(sb, max_concurrency=limit), "results", tmp_path, page_size=20)
        assert_exact(sb, manifest)
        assert manifest.counts["pages"] > 5
        assert sb.admin.stats()["max_concurrency"] == 1


def test_settings_from_sandbox_connection_hide_secrets(school12: SandboxProcess) -> None:
    settings = ICConnectionSettings.from_connection(connection(school12), "1.2")
    text = repr(settings) + str(settings) + json.dumps(settings.describe())
    assert school12.client_secret not in text and school12.vendor_secret not in text
