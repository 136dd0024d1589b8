"""Client and token manager against the scripted IC double: auth flow, status handling, headers."""

from __future__ import annotations

import threading
import time

import pytest
from fake_ic import (
    CLIENT_SECRET,
    SERVICE_11,
    TOKEN_URL,
    VENDOR_SECRET,
    FakeConnection,
    FakeIC,
    make_client,
    result_record,
)
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session

from gradesync.oneroster import (
    CredentialsError,
    HTTPStatusError,
    ICConnectionSettings,
    RetryPolicy,
    TokenManager,
    check_credentials,
)


def fake_with_results(n: int = 30, **kwargs: object) -> FakeIC:
    return FakeIC({"results": [result_record(i) for i in range(1, n + 1)],
                   "categories": [{"sourcedId": "cat-1", "status": "active", "title": "HW",
                                   "dateLastModified": "2026-11-01T00:00:00Z"}]}, **kwargs)  # type: ignore[arg-type]


def test_revoked_token_is_refetched_once() -> None:
    fake = fake_with_results()
    client = make_client(fake)
    assert len(client.get_page("results", limit=10).data) == 10
    fake.revoke()
    assert len(client.get_page("results", offset=10, limit=10).data) == 10
    assert fake.token_requests == 2
    assert client.stats.snapshot()["reasons"] == {"401": 1}


def test_persistent_401_with_vendor_header_blames_the_vendor_key() -> None:
    fake = fake_with_results()
    fake.vendor = "vendor-key-1:something-else"
    client = make_client(fake)
    with pytest.raises(CredentialsError, match=r"vendor key/secret \(extra vendor_key/vendor_secret") as caught:
        client.get_page("results")
    assert fake.api_requests == 2 and fake.token_requests == 2
    assert VENDOR_SECRET not in str(caught.value)


def test_vendor_header_only_for_12() -> None:
    fake12 = fake_with_results()
    make_client(fake12).get_page("results")
    assert fake12.log[0]["headers"]["x-vendor-authorization"] == f"vendor-key-1:{VENDOR_SECRET}"
    fake11 = fake_with_results(api="1.1")
    conn = FakeConnection(host=SERVICE_11, extra={"token_url": TOKEN_URL, "vendor_key": "k", "vendor_secret": "s"})
    make_client(fake11, api="1.1", conn=conn).get_page("results")
    assert "x-vendor-authorization" not in fake11.log[0]["headers"]
    assert fake11.log[0]["path"].endswith("/rostering/v1p1/results")


def test_retry_after_is_waited_out() -> None:
    fake = fake_with_results()
    fake.script[1] = lambda r: FakeIC.response(r, 429, {"imsx_codeMajor": "failure"}, {"Retry-After": "1"})
    client = make_client(fake)
    started = time.monotonic()
    assert len(client.get_page("results", limit=5).data) == 5
    assert time.monotonic() - started >= 1.0
    assert client.throttle.limit == client.max_concurrency - 1


def test_non_retryable_statuses() -> None:
    fake = fake_with_results()
    body = {"imsx_codeMajor": "failure", "imsx_description": "bad filter",
            "imsx_CodeMinor": {"imsx_codeMinorField": [{"imsx_codeMinorFieldName": "x",
                                                        "imsx_codeMinorFieldValue": "invalid_filter_field"}]}}
    fake.script[1] = lambda r: FakeIC.response(r, 400, body)
    fake.script[2] = lambda r: FakeIC.response(r, 403, {"imsx_description": "no"})
    fake.script[3] = lambda r: FakeIC.response(r, 302, b"", {"Location": "https://elsewhere.example/x"})
    client = make_client(fake)
    with pytest.raises(HTTPStatusError, match="invalid_filter_field: bad filter") as caught:
        client.get_page("results")
    assert caught.value.status == 400 and caught.value.code_minor == "invalid_filter_field"
    with pytest.raises(CredentialsError, match="HTTP 403"):
        client.get_page("results")
    with pytest.raises(HTTPStatusError, match="redirected"):
        client.get_page("results")
    assert fake.api_requests == 3, "no retries for 4xx, and a redirect is not followed (it would carry the vendor secret)"


def test_missing_collection_is_a_clear_404() -> None:
    client = make_client(FakeIC({}))
    with pytest.raises(HTTPStatusError, match="HTTP 404.*check the Service URL"):
        client.get_page("line_items")


def test_token_refreshed_before_expiry_and_fetched_once_for_many_threads() -> None:
    fake = fake_with_results(token_lifetime=100)
    now = [0.0]
    settings = ICConnectionSettings.from_connection(FakeConnection(), "1.2")

    def session() -> OAuth2Session:
        s = OAuth2Session(client=BackendApplicationClient(client_id=settings.client_id))
        s.mount("https://", fake)
        time.sleep(0.05)  # a slow token endpoint: concurrent callers must share this fetch
        return s

    manager = TokenManager(settings, clock=lambda: now[0], session_factory=session)
    tokens = []
    threads = [threading.Thread(target=lambda: tokens.append(manager.current())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fake.token_requests == 1 and len({t.generation for t in tokens}) == 1
    now[0] = 79.0  # 21 s left of 100: not yet (margin is 20 s)
    assert manager.current().generation == 1
    now[0] = 81.0
    assert manager.current().generation == 2 and fake.token_requests == 2
    stale = manager.current()
    manager.invalidate(stale)
    manager.invalidate(stale)  # a second thread with the same rejected token: no extra fetch
    assert manager.current().generation == 3 and fake.token_requests == 3
    assert "x" * 24 not in repr(manager) + repr(stale)


@pytest.mark.parametrize(
    ("status", "body", "content_type", "message"),
    [
        (401, '{"error": "invalid_client"}', "application/json", r"client id/secret of connection ic_test \(invalid_client\)"),
        (400, '{"error": "invalid_scope"}', "application/json", "extra scope"),
        (404, "<html>not found</html>", "text/html", "answered HTTP 404 .*set extra token_url"),
        (200, "<html>login</html>", "text/html", "not an OAuth token"),
        (401, "denied", "text/plain", "client id/secret"),
    ],
)
def test_token_endpoint_errors_name_the_setting(status: int, body: str, content_type: str, message: str) -> None:
    fake = fake_with_results()
    original = fake._token
    fake._token = lambda r: FakeIC.response(r, status, body, {"Content-Type": content_type})  # type: ignore[method-assign]
    client = make_client(fake)
    with pytest.raises(CredentialsError, match=message) as caught:
        client.get_page("results")
    assert CLIENT_SECRET not in str(caught.value)
    fake._token = original  # type: ignore[method-assign]


def test_token_endpoint_outage_is_retried() -> None:
    fake = fake_with_results()
    original = fake._token
    calls = []

    def flaky(request):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) < 3:
            return FakeIC.response(request, 503, "busy", {"Content-Type": "text/plain"})
        return original(request)

    fake._token = flaky  # type: ignore[method-assign]
    client = make_client(fake)
    assert len(client.get_page("results", limit=3).data) == 3
    assert client.stats.snapshot()["reasons"] == {"503": 2}


def test_check_credentials_with_the_double(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_with_results()
    settings = ICConnectionSettings.from_connection(FakeConnection(), "1.2")

    class Patched(OAuth2Session):
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, **k)  # type: ignore[arg-type]
            self.mount("https://", fake)

    from gradesync.oneroster import auth
    from gradesync.oneroster import client as client_module

    monkeypatch.setattr(auth, "OAuth2Session", Patched)
    monkeypatch.setattr(client_module, "HTTPAdapter", lambda **kwargs: fake)
    info = check_credentials(settings, retry_policy=RetryPolicy(max_attempts=2, backoff_initial=0.001))
    assert info["expires_in"] == 3600 and info["probe_total"] == 1 and info["vendor_header"] is True
    assert fake.log[0]["params"] == {"limit": "1", "offset": "0"}
    fake.vendor = "nope:nope"
    with pytest.raises(CredentialsError, match="vendor key/secret"):
        check_credentials(settings, retry_policy=RetryPolicy(max_attempts=2, backoff_initial=0.001))
