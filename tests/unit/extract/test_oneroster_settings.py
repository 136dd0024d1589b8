"""Connection settings: URL forms, version rules, setting-specific errors, secrets kept out of reprs."""

from __future__ import annotations

import json
import pickle

import pytest
from airflow.sdk import Connection
from fake_ic import CLIENT_SECRET, SERVICE_11, SERVICE_12, TOKEN_URL, VENDOR_SECRET, FakeConnection

from gradesync.oneroster import CredentialsError, ICConnectionSettings, UnsupportedEntityError
from gradesync.oneroster.secrets import Secret, redact


@pytest.mark.parametrize(
    ("service_url", "gradebook"),
    [
        (SERVICE_12, "https://ic.example.org/campus/api/ims/oneroster/gradebook/v1p2"),
        (
            "https://ic.example.org/campus/api/oneroster/v1p2/demo/ims/oneroster/rostering/v1p2/",
            "https://ic.example.org/campus/api/oneroster/v1p2/demo/ims/oneroster/gradebook/v1p2",
        ),
    ],
)
def test_v12_gradebook_base_from_both_url_forms(service_url: str, gradebook: str) -> None:
    settings = ICConnectionSettings.from_connection(FakeConnection(host=service_url), "1.2")
    assert settings.gradebook_base == gradebook
    assert settings.collection_url("line_items") == gradebook + "/lineItems"
    assert settings.vendor_header == f"vendor-key-1:{VENDOR_SECRET}"


def test_v11_uses_the_service_url_and_no_vendor_header() -> None:
    settings = ICConnectionSettings.from_connection(FakeConnection(host=SERVICE_11, extra={"token_url": TOKEN_URL}),
                                                    "1.1")
    assert settings.gradebook_base == SERVICE_11
    assert settings.collection_url("results") == SERVICE_11 + "/results"
    assert settings.vendor_header is None
    with pytest.raises(UnsupportedEntityError, match=r"assessment_line_items is not part of OneRoster 1\.1"):
        settings.collection_url("assessment_line_items")
    with pytest.raises(UnsupportedEntityError, match="score_scales"):
        settings.collection_url("score_scales")


def test_gradebook_url_extra_overrides_both() -> None:
    extra = {"token_url": TOKEN_URL, "vendor_key": "k", "vendor_secret": "v-secret", "gradebook_url": "https://gb/x/"}
    settings = ICConnectionSettings.from_connection(FakeConnection(extra=extra), "1.2")
    assert settings.gradebook_base == "https://gb/x"


def test_version_is_inferred_from_the_service_url() -> None:
    assert ICConnectionSettings.from_connection(FakeConnection()).api_version == "1.2"
    conn = FakeConnection(host=SERVICE_11, extra={"token_url": TOKEN_URL})
    assert ICConnectionSettings.from_connection(conn).api_version == "1.1"


@pytest.mark.parametrize(
    ("conn", "version", "message"),
    [
        (FakeConnection(host=None), "1.2", "host is empty; set it to IC's Service URL"),
        (FakeConnection(login=""), "1.2", "login \\(the OAuth client id\\) is empty"),
        (FakeConnection(password=None), "1.2", "password \\(the OAuth client secret\\) is empty"),
        (FakeConnection(extra={"vendor_key": "k", "vendor_secret": "s"}), "1.2", "extra token_url is missing"),
        (FakeConnection(extra={"token_url": "ftp://x"}), "1.2", "token_url .* must be an http\\(s\\) URL"),
        (FakeConnection(extra={"token_url": TOKEN_URL, "vendor_key": "k"}), "1.2", "extra vendor_secret missing"),
        (FakeConnection(), "1.1", "ends with /v1p2 but the integration uses OneRoster 1.1"),
        (FakeConnection(), "2.0", "unknown OneRoster version"),
        (FakeConnection(host="https://ic/x"), None, "cannot tell the OneRoster version"),
    ],
)
def test_setting_errors_name_the_setting(conn: FakeConnection, version: str | None, message: str) -> None:
    with pytest.raises(CredentialsError, match=message) as caught:
        ICConnectionSettings.from_connection(conn, version)
    assert "ic_test" in str(caught.value)
    assert CLIENT_SECRET not in str(caught.value)


def test_host_without_scheme_uses_schema_and_port() -> None:
    conn = FakeConnection(host="ic.example.org/campus/api/ims/oneroster/rostering/v1p2", schema="https", port=8443)
    settings = ICConnectionSettings.from_connection(conn, "1.2")
    assert settings.service_url == "https://ic.example.org:8443/campus/api/ims/oneroster/rostering/v1p2"


def test_secrets_stay_out_of_repr_str_and_pickles() -> None:
    settings = ICConnectionSettings.from_connection(FakeConnection(), "1.2")
    text = repr(settings) + str(settings) + f"{settings}" + json.dumps(settings.describe())
    assert CLIENT_SECRET not in text and VENDOR_SECRET not in text
    assert f"{settings.client_secret}" == "***"
    with pytest.raises(TypeError):
        pickle.dumps(settings)
    assert redact(f"oops {CLIENT_SECRET} and {VENDOR_SECRET}") == "oops *** and ***"
    assert Secret("abcdef") == Secret("abcdef") and not Secret("")


def test_airflow_connection_json_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """The AIRFLOW_CONN_<ID> JSON form; extras are never used as HTTP headers."""
    from gradesync.oneroster import OneRosterHook

    monkeypatch.setenv("AIRFLOW_CONN_IC_JSON", json.dumps({
        "conn_type": "http", "host": SERVICE_12, "login": "cid", "password": "csecret-123",
        "extra": {"token_url": TOKEN_URL, "vendor_key": "vk", "vendor_secret": "vsecret-123", "timeout": 30},
    }))
    hook = OneRosterHook(ic_conn_id="ic_json")
    assert hook._settings is None, "the connection is read lazily, not in __init__"
    settings = hook.settings
    assert settings.client_id == "cid" and settings.client_secret.reveal() == "csecret-123"
    assert settings.timeout == (10.0, 30.0)
    client = hook.get_client(max_concurrency=3)
    assert client.max_concurrency == 3 and "vsecret-123" not in str(dict(client.session.headers))
    assert hook.get_conn() is hook.get_conn()
    behaviour = OneRosterHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["host"] == "Service URL"
    assert (OneRosterHook.conn_name_attr, OneRosterHook.default_conn_name) == ("ic_conn_id", "ic_default")
    assert isinstance(Connection(conn_id="x"), Connection)
