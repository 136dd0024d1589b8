"""Each fault, switched on through the admin API, seen from a real HTTP client."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from sandbox_client import OneRosterClient

from gradesync.sandbox import SandboxProcess


def test_latency_is_added_to_every_api_request(faulty12: SandboxProcess) -> None:
    client = OneRosterClient(faulty12)
    faulty12.admin.set_faults({"latency_ms": 300})
    started = time.perf_counter()
    assert client.get("categories").status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_throttling_every_nth_request_answers_429_with_retry_after(faulty12: SandboxProcess) -> None:
    client = OneRosterClient(faulty12)
    faulty12.admin.set_faults({"throttle_every": 2, "retry_after_s": 3})
    first, second = client.get("categories"), client.get("categories")
    assert first.status_code == 200 and second.status_code == 429
    assert second.headers["Retry-After"] == "3"
    assert second.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == "server_busy"
    assert faulty12.admin.stats()["faults"]["429:throttle"] >= 1


def test_more_than_the_allowed_concurrent_requests_get_429(faulty12: SandboxProcess) -> None:
    faulty12.admin.set_faults({"max_concurrency": 2, "latency_ms": 400})
    faulty12.admin.reset_stats()
    statuses: list[int] = []
    clients = [OneRosterClient(faulty12) for _ in range(5)]
    threads = [threading.Thread(target=lambda c=c: statuses.append(c.get("categories").status_code)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses).count(429) >= 1 and 200 in statuses
    assert faulty12.admin.stats()["max_concurrency"] >= 3


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors(faulty12: SandboxProcess, status: int) -> None:
    client = OneRosterClient(faulty12)
    faulty12.admin.set_faults({"error_every": 1, "error_status": status})
    response = client.get("results")
    assert response.status_code == status
    assert response.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == \
        "internal_server_error"


def test_error_rate_is_reproducible(faulty12: SandboxProcess) -> None:
    client = OneRosterClient(faulty12)
    runs = []
    for _ in range(2):
        faulty12.admin.set_faults({"error_rate": 0.5, "seed": 3})
        runs.append([client.get("categories").status_code for _ in range(12)])
    assert runs[0] == runs[1] and {200, 500} == set(runs[0])


def test_dropped_connections_close_without_an_answer(faulty12: SandboxProcess) -> None:
    client = OneRosterClient(faulty12)
    faulty12.admin.set_faults({"drop_every": 1})
    with pytest.raises(requests.ConnectionError):
        client.get("results")
    faulty12.admin.set_faults({})
    assert client.get("results").status_code == 200  # the client's pool recovers


def test_truncated_body_shorter_than_its_content_length(faulty12: SandboxProcess) -> None:
    client = OneRosterClient(faulty12)
    faulty12.admin.set_faults({"truncate_every": 1, "truncate_mode": "length"})
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        client.get("results", limit=50)


def test_truncated_json_with_a_consistent_content_length(faulty12: SandboxProcess) -> None:
    client = OneRosterClient(faulty12)
    faulty12.admin.set_faults({"truncate_every": 1, "truncate_mode": "json"})
    response = client.get("results", limit=50)
    assert response.status_code == 200 and len(response.content) == int(response.headers["Content-Length"])
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_tokens_are_revoked_mid_run(faulty12: SandboxProcess) -> None:
    client = OneRosterClient(faulty12)
    faulty12.admin.set_faults({"revoke_after": 2})
    assert [client.get("categories").status_code for _ in range(3)] == [200, 200, 401]
    client.authenticate()
    assert client.get("categories").status_code == 200  # only once per configuration


def test_page_drift_inserts_records_before_the_offset(fresh12: SandboxProcess) -> None:
    client = OneRosterClient(fresh12)
    first = client.get("results", limit=10)
    fresh12.admin.set_faults({"drift_every": 1, "drift_count": 3})
    second = client.get("results", limit=10, offset=10)
    assert int(second.headers["X-Total-Count"]) == int(first.headers["X-Total-Count"]) + 3
    page1, page2 = first.json()["results"], second.json()["results"]
    assert page2[:3] == page1[-3:]  # an offset scan now sees repeats (and would miss the new records)
    assert fresh12.admin.stats()["faults"]["drift"] == 3
    assert [r["sourcedId"] for r in fresh12.admin.records("results")[:3]] not in ([r["sourcedId"] for r in page1[:3]],)


def test_faults_come_from_the_command_line_too() -> None:
    with SandboxProcess(api="1.2", preset="tiny", faults={"error_every": 2}, latency_ms=50) as sandbox:
        client = OneRosterClient(sandbox)
        assert [client.get("categories").status_code for _ in range(2)] == [200, 500]
        assert sandbox.admin.faults()["latency_ms"] == 50
