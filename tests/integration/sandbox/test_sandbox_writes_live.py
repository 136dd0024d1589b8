"""PUT, DELETE and bulk POST over HTTP: persisted, visible to later reads, IC's rules enforced."""

from __future__ import annotations

from typing import Any

from sandbox_client import OneRosterClient

from gradesync.sandbox import SandboxProcess


def _open_line_item(sandbox: SandboxProcess) -> dict[str, Any]:
    periods = {s["sourcedId"]: s for s in sandbox.admin.records("academicSessions")}
    return next(
        li for li in sandbox.admin.records("line_items")
        if periods[li["gradingPeriod"]["sourcedId"]]["title"] != "Q1" and li["status"] == "active"
    )


def _student_of(client: OneRosterClient, class_id: str) -> str:
    return client.all(f"classes/{class_id}/students", "users", base=client.rostering)[0]["sourcedId"]


def test_put_line_item_then_results_and_read_them_back(fresh12: SandboxProcess) -> None:
    client = OneRosterClient(fresh12)
    template = _open_line_item(fresh12)
    class_id = template["class"]["sourcedId"]
    line_item = {"title": "Vendor quiz «1»", "assignDate": "2026-11-20T08:00:00Z", "dueDate": "2026-11-27T08:00:00Z",
                 "class": {"sourcedId": class_id}, "category": template["category"], "resultValueMin": 0.0,
                 "resultValueMax": 10.0}
    url = f"{client.gradebook}/lineItems/vendor-li-1"
    assert client.session.put(url, json={"lineItem": line_item}, timeout=10).status_code == 201
    line_item["title"] = "Vendor quiz «1» (edited)"
    assert client.session.put(url, json={"lineItem": line_item}, timeout=10).status_code == 200
    stored = client.get("lineItems/vendor-li-1").json()["lineItem"]
    assert stored["title"].endswith("(edited)") and stored["school"]["sourcedId"] == template["school"]["sourcedId"]
    result = {"lineItem": {"sourcedId": "vendor-li-1"}, "student": {"sourcedId": _student_of(client, class_id)},
              "scoreStatus": "fully graded", "score": 9.5, "scoreDate": "2026-11-21"}
    put = client.session.put(f"{client.gradebook}/results/vendor-r-1", json={"result": result}, timeout=10)
    assert put.status_code == 201
    assert [r["sourcedId"] for r in client.all("lineItems/vendor-li-1/results", "results")] == ["vendor-r-1"]
    assert client.all("results", "results", filter="sourcedId='vendor-r-1'")[0]["score"] == 9.5


def test_write_rules_answer_4xx_with_a_reason(fresh12: SandboxProcess) -> None:
    client = OneRosterClient(fresh12)
    line_item = _open_line_item(fresh12)
    student = _student_of(client, line_item["class"]["sourcedId"])
    base = {"lineItem": {"sourcedId": line_item["sourcedId"]}, "student": {"sourcedId": student},
            "scoreStatus": "fully graded", "scoreDate": "2026-11-21"}
    cases = [
        ({**base, "score": line_item["resultValueMax"] + 1}, 422, "outside"),
        ({**base, "student": {"sourcedId": "nobody"}, "score": 1.0}, 422, "unknown users"),
        ({**base, "score": "high"}, 422, "number"),
    ]
    for record, status, needle in cases:
        response = client.session.put(f"{client.gradebook}/results/bad", json={"result": record}, timeout=10)
        assert response.status_code == status and needle in response.json()["imsx_description"]
    periods = {s["sourcedId"]: s["title"] for s in fresh12.admin.records("academicSessions")}
    closed = next(li for li in fresh12.admin.records("line_items") if periods[li["gradingPeriod"]["sourcedId"]] == "Q1")
    closed_student = _student_of(client, closed["class"]["sourcedId"])
    response = client.session.put(f"{client.gradebook}/results/late", timeout=10, json={"result": {
        **base, "lineItem": {"sourcedId": closed["sourcedId"]}, "student": {"sourcedId": closed_student},
        "score": closed["resultValueMin"]}})
    assert response.status_code == 403 and "closed" in response.json()["imsx_description"]
    malformed = client.session.put(f"{client.gradebook}/results/x", data=b"{not json", timeout=10)
    assert malformed.status_code == 400
    assert client.get("results/bad").status_code == 404  # nothing was stored


def test_delete_then_gone(fresh12: SandboxProcess) -> None:
    client = OneRosterClient(fresh12)
    victim = fresh12.admin.records("categories")[0]["sourcedId"]
    assert client.session.delete(f"{client.gradebook}/categories/{victim}", timeout=10).status_code == 204
    assert client.get(f"categories/{victim}").status_code == 404
    assert client.session.delete(f"{client.gradebook}/categories/{victim}", timeout=10).status_code == 404


def test_bulk_post_allocates_ids(fresh12: SandboxProcess) -> None:
    client = OneRosterClient(fresh12)
    line_item = _open_line_item(fresh12)
    student = _student_of(client, line_item["class"]["sourcedId"])
    body = {"results": [{"sourcedId": "temp-1", "student": {"sourcedId": student}, "scoreStatus": "submitted",
                         "scoreDate": "2026-11-21"}]}
    response = client.session.post(f"{client.gradebook}/lineItems/{line_item['sourcedId']}/results", json=body,
                                   timeout=10)
    assert response.status_code == 201
    (pair,) = response.json()["sourcedIdPairs"]
    assert pair["suppliedSourcedId"] == "temp-1"
    assert client.get(f"results/{pair['allocatedSourcedId']}").json()["result"]["scoreStatus"] == "submitted"


def test_v11_writes_need_a_score(sandbox11: SandboxProcess) -> None:
    client = OneRosterClient(sandbox11)
    line_item = sandbox11.admin.records("line_items")[0]
    record = {"lineItem": {"sourcedId": line_item["sourcedId"]}, "student": {"sourcedId": "x"},
              "scoreStatus": "submitted", "scoreDate": "2026-11-21"}
    response = client.session.put(f"{client.gradebook}/results/v11-bad", json={"result": record}, timeout=10)
    assert response.status_code == 422 and "score" in response.json()["statusInfoSet"][0]["imsx_description"]
