"""The query protocol over HTTP: paging, Link headers, filters, sort, fields, scopes, errors."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from sandbox_client import OneRosterClient, links

from gradesync.sandbox import SandboxProcess


def test_paging_by_link_returns_exactly_the_served_truth(client12: OneRosterClient,
                                                         sandbox12: SandboxProcess) -> None:
    truth = sandbox12.admin.records("results")
    pages = list(client12.pages("results", limit=37))
    assert {p.headers["X-Total-Count"] for p in pages} == {str(len(truth))}
    assert [r for p in pages for r in p.json()["results"]] == truth
    assert len(pages) == -(-len(truth) // 37)
    assert "next" not in links(pages[-1]) and "prev" in links(pages[-1])


def test_link_header_keeps_other_parameters_url_encoded(client12: OneRosterClient) -> None:
    text = "scoreStatus='fully graded' AND dateLastModified>'2026-01-01T00:00:00Z'"
    response = client12.get("results", limit=5, filter=text, sort="score", orderBy="desc", fields="sourcedId,score")
    following = links(response)["next"]
    raw_query = urlsplit(following).query
    assert "%27fully%20graded%27" in raw_query and " " not in raw_query and "'" not in raw_query
    query = parse_qs(raw_query)
    assert query["filter"] == [text] and query["sort"] == ["score"] and query["offset"] == ["5"]
    assert query["fields"] == ["sourcedId,score"] and query["orderBy"] == ["desc"]
    total = int(response.headers["X-Total-Count"])
    assert parse_qs(urlsplit(links(response)["last"]).query)["offset"] == [str((total - 1) // 5 * 5)]
    assert client12.get(following).status_code == 200


def test_default_limit_and_clamping_to_the_maximum(client12: OneRosterClient) -> None:
    assert len(client12.get("results").json()["results"]) == 100
    clamped = client12.get("results", limit=100_000)  # this sandbox runs with max_limit=150
    assert len(clamped.json()["results"]) == 150
    assert "limit=150" in links(clamped)["next"]


@pytest.mark.parametrize(
    ("text", "keep"),
    [
        ("scoreStatus='exempt'", lambda r: r["scoreStatus"] == "exempt"),
        ("scoreStatus!='fully graded'", lambda r: r["scoreStatus"] != "fully graded"),
        ("score>='50'", lambda r: r.get("score") is not None and r["score"] >= 50),
        ("score<'20'", lambda r: r.get("score") is not None and r["score"] < 20),
        ("comment~'TRÈS'", lambda r: "très" in r.get("comment", "").lower()),
        ("status='tobedeleted' OR late='true'", lambda r: r["status"] == "tobedeleted" or r["late"] == "true"),
        ("scoreStatus~'ext:' AND score>'0'", lambda r: r["scoreStatus"].startswith("ext:") and r.get("score", 0) > 0),
        ("dateLastModified>'2026-11-01T02:00:00+02:00'", lambda r: r["dateLastModified"] > "2026-11-01T00:00:00.000Z"),
        ("dateLastModified<='2026-10-01'", lambda r: r["dateLastModified"] <= "2026-10-01T00:00:00.000Z"),
    ],
)
def test_filters_select_exactly_the_matching_records(client12: OneRosterClient, sandbox12: SandboxProcess,
                                                     text: str, keep: object) -> None:
    truth = [r for r in sandbox12.admin.records("results") if keep(r)]  # type: ignore[operator]
    got = client12.all("results", "results", filter=text, limit=500)
    assert got == truth and truth


def test_dotted_filter_and_quotes_in_values(client12: OneRosterClient, sandbox12: SandboxProcess) -> None:
    line_items = sandbox12.admin.records("line_items")
    class_id = line_items[0]["class"]["sourcedId"]
    got = client12.all("lineItems", "lineItems", filter=f"class.sourcedId='{class_id}'")
    assert got == [li for li in line_items if li["class"]["sourcedId"] == class_id]
    quoted = next(li for li in line_items if "'" in li["title"] or '"' in li["title"])
    escaped = quoted["title"].replace("'", "\\'")
    assert client12.all("lineItems", "lineItems", filter=f"title='{escaped}'") == \
        [li for li in line_items if li["title"] == quoted["title"]]
    legacy = line_items[1]["metadata"]["ic"]["legacysourceId"]
    by_legacy = client12.all("lineItems", "lineItems", filter=f"metadata.ic.legacysourceId='{legacy}'")
    assert [li["sourcedId"] for li in by_legacy] == [line_items[1]["sourcedId"]]


def test_sort_and_order_by(client12: OneRosterClient) -> None:
    ascending = client12.all("lineItems", "lineItems", sort="dueDate", limit=500)
    descending = client12.all("lineItems", "lineItems", sort="dueDate", orderBy="desc", limit=500)
    dues = [li["dueDate"] for li in ascending]
    assert dues == sorted(dues) and [li["dueDate"] for li in descending] == sorted(dues, reverse=True)
    titles = [c["title"] for c in client12.all("categories", "categories", sort="title")]
    assert titles == sorted(titles)


def test_fields_selects_keys(client12: OneRosterClient) -> None:
    records = client12.get("results", fields="sourcedId,score", limit=50).json()["results"]
    assert all(set(r) <= {"sourcedId", "score"} and "sourcedId" in r for r in records)
    single = client12.get(f"results/{records[0]['sourcedId']}", fields="sourcedId,status").json()["result"]
    assert set(single) == {"sourcedId", "status"}


@pytest.mark.parametrize(
    ("params", "code_minor"),
    [
        ({"filter": "nosuchfield='1'"}, "invalid_filter_field"),
        ({"filter": "title=unquoted"}, "invalid_filter_field"),
        ({"filter": "dateLastModified>'last tuesday'"}, "invalid_filter_field"),
        ({"sort": "nosuchfield"}, "invalid_selection_field"),
        ({"fields": "sourcedId,nosuchfield"}, "invalid_selection_field"),
        ({"limit": "0"}, "invalid_selection_field"),
        ({"offset": "minus"}, "invalid_selection_field"),
    ],
)
def test_bad_queries_are_400_with_imsx_status(client12: OneRosterClient, params: dict[str, str],
                                              code_minor: str) -> None:
    response = client12.get("results", **params)
    assert response.status_code == 400
    body = response.json()
    assert body["imsx_codeMajor"] == "failure" and body["imsx_severity"] == "error"
    assert body["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == code_minor


def test_unknown_objects_are_404(client12: OneRosterClient, client11: OneRosterClient) -> None:
    for path in ("lineItems/nope", "results/nope", "classes/nope/results", "nosuchcollection"):
        response = client12.get(path)
        assert response.status_code == 404, path
        assert response.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == "unknownobject"
    for path in ("assessmentLineItems", "assessmentResults", "scoreScales"):
        response = client11.get(path)
        assert response.status_code == 404 and "statusInfoSet" in response.json()
    assert client12.get("lineItems", base=client12.rostering).status_code == 404  # gradebook lives under /gradebook/


def test_single_objects_use_the_singular_envelope(client12: OneRosterClient, sandbox12: SandboxProcess) -> None:
    for entity, singular in (("categories", "category"), ("line_items", "lineItem"), ("results", "result"),
                             ("score_scales", "scoreScale"), ("assessment_line_items", "assessmentLineItem"),
                             ("assessment_results", "assessmentResult")):
        record = sandbox12.admin.records(entity)[0]
        collection = {"line_items": "lineItems", "score_scales": "scoreScales",
                      "assessment_line_items": "assessmentLineItems",
                      "assessment_results": "assessmentResults"}.get(entity, entity)
        assert client12.get(f"{collection}/{record['sourcedId']}").json() == {singular: record}


def test_class_and_school_scoped_reads(client12: OneRosterClient, sandbox12: SandboxProcess) -> None:
    admin = sandbox12.admin
    line_items, results = admin.records("line_items"), admin.records("results")
    class_id = line_items[0]["class"]["sourcedId"]
    class_items = [li for li in line_items if li["class"]["sourcedId"] == class_id]
    item_ids = {li["sourcedId"] for li in class_items}
    class_results = [r for r in results if r["lineItem"]["sourcedId"] in item_ids]
    assert client12.all(f"classes/{class_id}/lineItems", "lineItems") == class_items
    assert client12.all(f"classes/{class_id}/results", "results") == class_results
    category_ids = {li["category"]["sourcedId"] for li in class_items}
    assert {c["sourcedId"] for c in client12.all(f"classes/{class_id}/categories", "categories")} == category_ids
    scales = client12.all(f"classes/{class_id}/scoreScales", "scoreScales")
    assert scales and all(s["class"]["sourcedId"] == class_id for s in scales)
    one_item = class_items[0]["sourcedId"]
    expected = [r for r in results if r["lineItem"]["sourcedId"] == one_item]
    assert client12.all(f"classes/{class_id}/lineItems/{one_item}/results", "results") == expected
    assert client12.all(f"lineItems/{one_item}/results", "results") == expected
    student = class_results[0]["student"]["sourcedId"]
    assert client12.all(f"classes/{class_id}/students/{student}/results", "results") == \
        [r for r in class_results if r["student"]["sourcedId"] == student]
    school_id = class_items[0]["school"]["sourcedId"]
    assert len(client12.all(f"schools/{school_id}/lineItems", "lineItems")) == len(line_items)
    assert client12.all(f"schools/{school_id}/scoreScales", "scoreScales")
    other_class = next(li["class"]["sourcedId"] for li in line_items if li["class"]["sourcedId"] != class_id)
    assert client12.get(f"classes/{other_class}/lineItems/{one_item}/results").status_code == 404


def test_rostering_reads_partition_the_work(client12: OneRosterClient) -> None:
    schools = client12.all("schools", "orgs", base=client12.rostering)
    classes = client12.all("classes", "classes", base=client12.rostering)
    sessions = client12.all("academicSessions", "academicSessions", base=client12.rostering)
    assert schools and classes and {s["type"] for s in sessions} >= {"schoolYear", "gradingPeriod"}
    in_school = client12.all(f"schools/{schools[0]['sourcedId']}/classes", "classes", base=client12.rostering)
    assert in_school == classes
    roster = client12.all(f"classes/{classes[0]['sourcedId']}/students", "users", base=client12.rostering)
    assert roster and all(u["roles"][0]["role"] == "student" for u in roster)


def test_v11_serves_gradebook_under_the_service_url(client11: OneRosterClient, sandbox11: SandboxProcess) -> None:
    assert client11.gradebook == sandbox11.service_url
    assert client11.all("results", "results", limit=1000) == sandbox11.admin.records("results")
    class_id = sandbox11.admin.records("classes")[0]["sourcedId"]
    assert client11.all(f"classes/{class_id}/lineItems", "lineItems")
    standard = sandbox11.base_url + "/ims/oneroster/v1p1/lineItems"
    assert client11.session.get(standard, timeout=10).status_code == 200


def test_both_ic_url_forms_route(sandbox12: SandboxProcess, client12: OneRosterClient) -> None:
    app_form = f"{sandbox12.base_url}/campus/api/oneroster/v1p2/sandbox/ims/oneroster/gradebook/v1p2/lineItems"
    campus_form = f"{client12.gradebook}/lineItems"
    a, b = client12.get(app_form), client12.get(campus_form)
    assert a.status_code == b.status_code == 200 and a.json() == b.json()
    with SandboxProcess(api="1.2", preset="tiny", url_form="app") as app_sandbox:
        assert "/campus/api/oneroster/v1p2/sandbox/ims/oneroster/rostering/v1p2" in app_sandbox.service_url
        client = OneRosterClient(app_sandbox)
        assert client.get("lineItems").status_code == 200


def test_hrefs_follow_the_host_the_client_used(client12: OneRosterClient, sandbox12: SandboxProcess) -> None:
    record = client12.get("results", limit=1).json()["results"][0]
    assert record["lineItem"]["href"].startswith(sandbox12.base_url + "/campus/api/ims/oneroster/gradebook/v1p2/")
    other_host = client12.session.get(f"{client12.gradebook}/results", params={"limit": 1},
                                      headers={"Host": "ic-sandbox:8000"}, timeout=10)
    assert json.loads(other_host.content)["results"][0]["lineItem"]["href"].startswith("http://ic-sandbox:8000/")
    assert 'http://ic-sandbox:8000/' in other_host.headers["Link"]


def test_gradebook_paths_are_not_served_under_the_1p2_rostering_base(client12: OneRosterClient,
                                                                     sandbox12: SandboxProcess) -> None:
    class_id = sandbox12.admin.records("classes")[0]["sourcedId"]
    assert client12.get(f"classes/{class_id}/lineItems", base=client12.rostering).status_code == 404
    assert client12.get(f"classes/{class_id}/students", base=client12.rostering).status_code == 200
    assert client12.get(f"classes/{class_id}/students").status_code == 404  # rostering lives under /rostering/
