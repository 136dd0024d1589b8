"""IC-style OAuth 2 client credentials, bearer tokens and the 1.2 vendor header."""

from __future__ import annotations

import time

import requests
from sandbox_client import OneRosterClient

from gradesync.sandbox import SandboxProcess


def test_token_by_basic_auth_or_form_body(sandbox12: SandboxProcess) -> None:
    basic = requests.post(sandbox12.token_url, data={"grant_type": "client_credentials"},
                          auth=(sandbox12.client_id, sandbox12.client_secret), timeout=10)
    form = requests.post(sandbox12.token_url, data={
        "grant_type": "client_credentials", "client_id": sandbox12.client_id,
        "client_secret": sandbox12.client_secret}, timeout=10)
    for response in (basic, form):
        assert response.status_code == 200
        token = response.json()
        assert token["token_type"] == "bearer" and token["expires_in"] == 3600 and token["access_token"]
        assert "https://purl.imsglobal.org/spec/or/v1p2/scope/gradebook.readonly" in token["scope"].split()
    assert basic.json()["access_token"] != form.json()["access_token"]


def test_bad_client_credentials_and_requests(sandbox12: SandboxProcess) -> None:
    wrong = requests.post(sandbox12.token_url, data={"grant_type": "client_credentials"},
                          auth=(sandbox12.client_id, "not-the-secret"), timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    grant = requests.post(sandbox12.token_url, data={"grant_type": "password"},
                          auth=(sandbox12.client_id, sandbox12.client_secret), timeout=10)
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    app = requests.post(sandbox12.token_url.replace("appName=sandbox", "appName=other"),
                        data={"grant_type": "client_credentials"},
                        auth=(sandbox12.client_id, sandbox12.client_secret), timeout=10)
    assert app.status_code == 400


def test_missing_wrong_or_revoked_bearer_is_401_with_a_oneroster_body(sandbox12: SandboxProcess) -> None:
    client = OneRosterClient(sandbox12)
    assert client.get("lineItems").status_code == 200
    for header in ({}, {"Authorization": "Bearer nope"}):
        response = requests.get(f"{client.gradebook}/lineItems", headers={
            **header, "x-vendor-authorization": client.session.headers["x-vendor-authorization"]}, timeout=10)
        assert response.status_code == 401
        assert response.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == \
            "unauthorisedrequest"
    assert sandbox12.admin.revoke_tokens() >= 1
    assert client.get("lineItems").status_code == 401
    client.authenticate()
    assert client.get("lineItems").status_code == 200


def test_gradebook_needs_the_vendor_header_rostering_does_not(sandbox12: SandboxProcess) -> None:
    client = OneRosterClient(sandbox12)
    del client.session.headers["x-vendor-authorization"]
    assert client.get("classes", base=client.rostering).status_code == 200
    for path in ("lineItems", "results", "categories", "scoreScales", "assessmentResults"):
        response = client.get(path)
        assert response.status_code == 401 and "x-vendor-authorization" in response.json()["imsx_description"]
    client.session.headers["x-vendor-authorization"] = f"{sandbox12.vendor_key}:wrong"
    assert client.get("results").status_code == 401


def test_tokens_expire_after_their_lifetime() -> None:
    with SandboxProcess(api="1.1", preset="tiny", token_lifetime=1) as sandbox:
        client = OneRosterClient(sandbox)
        assert client.get("lineItems").status_code == 200
        time.sleep(1.2)
        expired = client.get("lineItems")
        assert expired.status_code == 401 and "statusInfoSet" in expired.json()


def test_a_token_only_does_what_its_scopes_allow(sandbox12: SandboxProcess) -> None:
    client = OneRosterClient(sandbox12)
    client.authenticate(scope="https://purl.imsglobal.org/spec/or/v1p2/scope/gradebook.readonly")
    assert client.get("lineItems").status_code == 200
    denied = client.session.delete(f"{client.gradebook}/lineItems/whatever", timeout=10)
    assert denied.status_code == 403
    assert client.get("assessmentLineItems").status_code == 403
    assert client.get("classes", base=client.rostering).status_code == 403
