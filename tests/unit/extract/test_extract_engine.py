"""The extraction engine against the scripted IC double: exactness under drift, paging, manifests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from fake_ic import BASE_TIME, FakeIC, iso, make_client, result_record

from gradesync.extract import ExtractManifest, default_overlap, extract_entity
from gradesync.oneroster import ExtractionError, UnsupportedEntityError


def staged_ids(manifest: ExtractManifest) -> list[str]:
    ids: list[str] = []
    for name in manifest.files:
        ids.extend(pq.read_table(name.removeprefix("file://")).column("sourced_id").to_pylist())
    return ids


def truth(fake: FakeIC, name: str = "results") -> list[str]:
    return sorted(r["sourcedId"] for r in fake.collections[name])


def test_full_extract_stages_every_record_once(results_fake: FakeIC, tmp_path: Path) -> None:
    client = make_client(results_fake, max_concurrency=4)
    manifest = extract_entity(client, "results", tmp_path / "results", page_size=100, chunk_rows=700)
    ids = staged_ids(manifest)
    assert sorted(ids) == truth(results_fake)
    assert len(ids) == len(set(ids)) == 2500
    counts = manifest.counts
    assert counts["received"] == counts["staged"] == counts["total_reported"] == 2500
    assert counts["rejected"] == counts["duplicates_in_scan"] == 0
    assert counts["scans"] == 1
    assert len(manifest.files) == 4  # 2500 rows in chunks of ≥700
    assert manifest.full is True
    assert manifest.max_date_last_modified == "2026-11-02T17:40:00Z"  # record 2500
    assert 1 < results_fake.peak <= 4
    json.dumps(manifest.to_dict())  # XCom-safe
    saved = json.loads((tmp_path / "results" / "_manifest.json").read_text())
    assert saved["counts"] == counts


def test_requests_are_sorted_limited_and_strided(results_fake: FakeIC, tmp_path: Path) -> None:
    client = make_client(results_fake, max_concurrency=2)
    extract_entity(client, "results", tmp_path, page_size=500)
    main = [e for e in results_fake.log if "filter" not in e["params"]]
    catch_up = [e for e in results_fake.log if "filter" in e["params"]]
    offsets = sorted(int(entry["params"]["offset"]) for entry in main)
    stride = 500 - default_overlap(500)
    assert offsets == list(range(0, 2500, stride))
    for entry in results_fake.log:
        assert entry["params"]["sort"] == "sourcedId" and entry["params"]["orderBy"] == "asc"
        assert entry["params"]["limit"] == "500"
    # one catch-up request for what changed while the scan ran (nothing here)
    assert len(catch_up) == 1 and catch_up[0]["params"]["filter"].startswith("dateLastModified>'")


def test_a_single_page_scan_needs_no_catch_up(results_fake: FakeIC, tmp_path: Path) -> None:
    client = make_client(results_fake)
    manifest = extract_entity(client, "results", tmp_path, page_size=5000)
    assert len(staged_ids(manifest)) == 2500
    assert len(results_fake.log) == 1, "one response is one consistent state: no catch-up request"
    assert manifest.counts["requests"] == 1 and manifest.counts["catchup_records"] == 0


def test_delta_window_filter_is_encoded_and_applied(results_fake: FakeIC, tmp_path: Path) -> None:
    client = make_client(results_fake)
    since, until = BASE_TIME + timedelta(minutes=100), BASE_TIME + timedelta(minutes=250)
    manifest = extract_entity(client, "results", tmp_path, since=since, until=until, page_size=40)
    assert sorted(staged_ids(manifest)) == [f"res-{n:07d}" for n in range(101, 251)]
    query = results_fake.log[0]["query"]
    assert "filter=dateLastModified%3E%272026-11-01T01%3A40%3A00.000Z%27%20AND%20dateLastModified%3C%3D" in query
    assert manifest.full is False
    assert manifest.max_date_last_modified == "2026-11-01T04:10:00Z"


def test_unsupported_entity_fails_before_any_request(results_fake: FakeIC, tmp_path: Path) -> None:
    client = make_client(results_fake, api="1.1")
    with pytest.raises(UnsupportedEntityError, match="assessment_results is not part of OneRoster 1.1"):
        extract_entity(client, "assessment_results", tmp_path)
    assert results_fake.api_requests == 0 and results_fake.token_requests == 0


def test_inserts_during_scan_are_caught_up_exactly(tmp_path: Path) -> None:
    fake = FakeIC({"results": [result_record(n * 10) for n in range(1, 1001)]})
    inserted: list[str] = []

    def insert_before(fake: FakeIC, offset: int) -> None:
        # every page request with offset > 0 inserts a record (modified now) that sorts before
        # everything already read: pages shift forward, and the new record is behind the read front
        if offset == 0:
            return
        with fake.lock:
            n = len(inserted) + 1
            record = result_record(n * 10 - 5, modified=datetime.now(timezone.utc))
            record["sourcedId"] = f"res-0000000-{n:03d}"
            fake.collections["results"].append(record)
            inserted.append(record["sourcedId"])

    fake.on_page = insert_before
    client = make_client(fake, max_concurrency=3)
    manifest = extract_entity(client, "results", tmp_path, page_size=50)
    ids = staged_ids(manifest)
    assert len(ids) == len(set(ids)), "a record was staged twice"
    assert sorted(ids) == truth(fake), "staged set differs from the server's final state"
    assert manifest.counts["duplicates_in_scan"] > 0
    assert manifest.counts["catchup_records"] >= len(inserted) > 10


def test_catch_up_replaces_records_modified_during_the_scan(tmp_path: Path) -> None:
    fake = FakeIC({"results": [result_record(n) for n in range(1, 501)]})
    changed = []

    def modify_first(fake: FakeIC, offset: int) -> None:
        if offset >= 300 and not changed:
            with fake.lock:
                record = fake.collections["results"][0]  # already read with the old score
                record.update(score=99.5, dateLastModified=iso(datetime.now(timezone.utc)))
                changed.append(record["sourcedId"])

    fake.on_page = modify_first
    manifest = extract_entity(make_client(fake, max_concurrency=1), "results", tmp_path, page_size=100)
    rows = {r["sourced_id"]: r for name in manifest.files for r in pq.read_table(name.removeprefix("file://")).to_pylist()}
    assert len(rows) == 500 and manifest.counts["staged"] == 500
    assert rows["res-0000001"]["score"] == 99.5
    assert manifest.counts["replaced"] == 1
    assert manifest.max_date_last_modified > "2026-11-02"


def test_deletes_during_scan_are_bridged(tmp_path: Path) -> None:
    fake = FakeIC({"results": [result_record(n) for n in range(1, 1201)]})
    deleted: list[str] = []

    def delete_front(fake: FakeIC, offset: int) -> None:
        # after the first pages, delete 30 already-read records at the front: everything shifts
        # back by more than the overlap, so later pages would silently skip records
        if offset >= 200 and not deleted:
            with fake.lock:
                for record in fake.collections["results"][:30]:
                    deleted.append(record["sourcedId"])
                fake.collections["results"] = fake.collections["results"][30:]

    fake.on_page = delete_front
    client = make_client(fake, max_concurrency=1)
    manifest = extract_entity(client, "results", tmp_path, page_size=100)
    ids = staged_ids(manifest)
    assert len(ids) == len(set(ids))
    assert set(truth(fake)) <= set(ids)
    assert manifest.counts["bridge_pages"] > 0
    assert manifest.counts["scans"] == 1


def test_overlap_zero_cannot_see_the_gap(tmp_path: Path) -> None:
    """The same deletes with overlap disabled lose records: proof the overlap check is what saves them."""
    fake = FakeIC({"results": [result_record(n) for n in range(1, 1201)]})
    done = []

    def delete_front(fake: FakeIC, offset: int) -> None:
        if offset >= 200 and not done:
            done.append(1)
            fake.collections["results"] = fake.collections["results"][30:]

    fake.on_page = delete_front
    manifest = extract_entity(make_client(fake, max_concurrency=1), "results", tmp_path, page_size=100, overlap=0)
    assert not set(truth(fake)) <= set(staged_ids(manifest))


def test_unexplained_short_count_rescans_then_fails_loudly(tmp_path: Path) -> None:
    fake = FakeIC({"results": [result_record(n) for n in range(1, 301)]})
    original = fake._collection

    def lying_total(request, path, params):  # noqa: ANN001
        response = original(request, path, params)
        response.headers["X-Total-Count"] = "301"
        return response

    fake._collection = lying_total  # type: ignore[method-assign]
    with pytest.raises(ExtractionError, match=r"could not read a consistent copy.*X-Total-Count was 301"):
        extract_entity(make_client(fake), "results", tmp_path / "r", page_size=100, max_scans=2)
    assert not list((tmp_path / "r").glob("*.parquet")), "a failed extraction must not leave staged parts"


def test_server_page_cap_is_detected(tmp_path: Path) -> None:
    fake = FakeIC({"results": [result_record(n) for n in range(1, 901)]}, max_page=100)
    manifest = extract_entity(make_client(fake), "results", tmp_path, page_size=1000)
    assert sorted(staged_ids(manifest)) == truth(fake)


def test_without_total_header_reads_sequentially_to_the_end(tmp_path: Path) -> None:
    fake = FakeIC({"results": [result_record(n) for n in range(1, 451)]}, total_header=False)
    manifest = extract_entity(make_client(fake), "results", tmp_path, page_size=100)
    assert sorted(staged_ids(manifest)) == truth(fake)
    assert manifest.counts["total_reported"] == -1


def test_empty_collection(tmp_path: Path) -> None:
    fake = FakeIC({"results": []})
    manifest = extract_entity(make_client(fake), "results", tmp_path, page_size=100)
    assert manifest.files == [] and manifest.counts["received"] == 0
    assert manifest.max_date_last_modified is None


def test_bad_records_become_rejects_and_are_counted(tmp_path: Path) -> None:
    records = [result_record(n) for n in range(1, 201)]
    records[5]["score"] = "high"
    del records[17]["student"]
    records[42]["dateLastModified"] = "yesterday"
    fake = FakeIC({"results": records})
    manifest = extract_entity(make_client(fake), "results", tmp_path, page_size=50)
    assert manifest.counts["rejected"] == 3 and manifest.counts["staged"] == 197
    assert manifest.counts["received"] == 200
    rejects = pq.read_table(manifest.rejects_file.removeprefix("file://")).to_pylist()
    assert {r["sourced_id"] for r in rejects} == {"res-0000006", "res-0000018", "res-0000043"}
    assert any("missing required field student" in r["reason"] for r in rejects)


def test_flaky_transport_is_retried_without_loss(tmp_path: Path) -> None:
    fake = FakeIC({"results": [result_record(n) for n in range(1, 601)]})
    fake.script[2] = lambda request: requests.ConnectionError("connection reset")
    fake.script[3] = lambda request: FakeIC.response(request, 503, {"imsx_codeMajor": "failure"})
    fake.script[4] = lambda request: FakeIC.response(request, 200, b'{"results": [{"sourcedId": "res-00')
    fake.script[5] = lambda request: requests.Timeout("read timed out")
    manifest = extract_entity(make_client(fake, max_concurrency=1), "results", tmp_path, page_size=100)
    assert sorted(staged_ids(manifest)) == truth(fake)
    assert manifest.counts["retries"] == 4
    assert manifest.retry_reasons == {"connection": 1, "503": 1, "bad_body": 1, "timeout": 1}


def test_rerun_replaces_previous_files(results_fake: FakeIC, tmp_path: Path) -> None:
    client = make_client(results_fake)
    extract_entity(client, "results", tmp_path, page_size=100, chunk_rows=500)
    (tmp_path / "stray.parquet").write_bytes(b"old")
    manifest = extract_entity(client, "results", tmp_path, page_size=1000, chunk_rows=100_000)
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == ["part-00000.parquet"]
    assert len(staged_ids(manifest)) == 2500


def test_manifest_round_trip(results_fake: FakeIC, tmp_path: Path) -> None:
    manifest = extract_entity(make_client(results_fake), "results", tmp_path, page_size=1000)
    again = ExtractManifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again == manifest


def test_progress_is_logged_with_totals_rate_eta_and_retry_reasons(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeIC({"results": [result_record(n) for n in range(1, 801)]}, latency=0.002)
    fake.script[3] = lambda request: FakeIC.response(request, 503, {"imsx_codeMajor": "failure"})
    caplog.set_level("INFO", logger="gradesync")
    extract_entity(make_client(fake, max_concurrency=2), "results", tmp_path, page_size=100, progress_every=0)
    lines = [r.getMessage() for r in caplog.records if r.name == "gradesync.extract" and "records/s" in r.getMessage()]
    assert lines, caplog.text
    middle = next(line for line in lines if "(100%)" not in line)
    assert "/800 records (" in middle and "records/s" in middle and "ETA" in middle, middle
    assert lines[-1].startswith("results: 9/9 pages, 800/800 records (100%)"), lines[-1]
    assert "retries 1 (503×1)" in lines[-1], lines[-1]
    retry_logs = [r.getMessage() for r in caplog.records if r.name == "gradesync.oneroster.client"]
    assert any("HTTP 503" in m and "retry 1 in" in m for m in retry_logs), retry_logs
