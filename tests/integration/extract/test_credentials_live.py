"""Credentials against the live sandbox: fail fast with the setting to fix, and never leak a secret."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from live_ic import FAST_RETRIES, connection, staged

from gradesync.extract import extract_entity
from gradesync.oneroster import (
    CredentialsError,
    ICConnectionSettings,
    OneRosterClient,
    OneRosterHook,
    check_credentials,
)
from gradesync.oneroster import auth as auth_module
from gradesync.oneroster.secrets import Secret
from gradesync.sandbox import SandboxProcess


def settings_for(sb: SandboxProcess, **overrides: Any) -> ICConnectionSettings:
    return ICConnectionSettings.from_connection(connection(sb, **overrides), "1.2")


def test_check_credentials_returns_safe_facts(school12: SandboxProcess) -> None:
    info = check_credentials(settings_for(school12))
    assert info["expires_in"] == 3600 and info["gradebook_reachable"] is True and info["vendor_header"] is True
    assert any(scope.endswith("gradebook.readonly") for scope in info["scopes"])
    text = json.dumps(info)  # what goes to XCom
    assert school12.client_secret not in text and school12.vendor_secret not in text


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"password": "wrong-secret"}, r"IC rejected the client id/secret of connection ic_sandbox \(invalid_client\)"),
        ({"login": "nobody"}, r"client id/secret of connection ic_sandbox"),
        ({"extra": {"vendor_secret": "wrong-vendor"}}, r"vendor key/secret \(extra vendor_key/vendor_secret"),
        ({"extra": {"vendor_key": "wrong-key"}}, r"vendor key/secret"),
        ({"extra": {"token_url": "{base}/campus/oauth2/nothing?appName=sandbox"}}, r"set extra token_url"),
        ({"extra": {"token_url": "{base}/campus/oauth2/token?appName=other"}}, r"invalid_request.*token_url"),
        ({"host": "{base}/campus/api/ims/oneroster/rostering/v9p9/x/rostering/v1p2"}, r"Service URL"),
    ],
)
def test_bad_settings_fail_fast_naming_the_setting(school12: SandboxProcess, overrides: dict[str, Any],
                                                   expected: str) -> None:
    base = school12.base_url
    resolved = json.loads(json.dumps(overrides).replace("{base}", base))
    settings = settings_for(school12, **resolved)
    started = time.monotonic()
    with pytest.raises(CredentialsError, match=expected) as caught:
        check_credentials(settings)
    assert time.monotonic() - started < 3, "a wrong setting must fail at once, not after retries"
    message = str(caught.value)
    for secret in (school12.client_secret, school12.vendor_secret, "wrong-secret", "wrong-vendor"):
        assert secret not in message


def test_missing_vendor_key_is_a_settings_error(school12: SandboxProcess) -> None:
    conn = connection(school12)
    conn.extra = json.dumps({"token_url": school12.token_url})
    with pytest.raises(CredentialsError, match="extra vendor_key and vendor_secret missing"):
        ICConnectionSettings.from_connection(conn, "1.2")


def test_no_secret_reaches_logs_errors_xcom_or_staging(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    issued: list[str] = []

    class RecordingSecret(Secret):
        def __init__(self, value: str):
            super().__init__(value)
            issued.append(value)

    monkeypatch.setattr(auth_module, "Secret", RecordingSecret)
    caplog.set_level(logging.DEBUG)
    faults = {"revoke_after": 3, "error_every": 5, "throttle_every": 7, "retry_after_s": 0}
    with SandboxProcess(api="1.2", preset="tiny", seed=4, faults=faults, token_lifetime=2) as sb:
        monkeypatch.setenv("AIRFLOW_CONN_IC_LEAK", json.dumps(sb.airflow_connection()))
        hook = OneRosterHook(ic_conn_id="ic_leak", api_version="1.2")
        client = OneRosterClient(hook.settings, max_concurrency=3, retry_policy=FAST_RETRIES)
        manifest = extract_entity(client, "results", tmp_path / "results", page_size=20)
        assert staged(manifest).num_rows == manifest.counts["staged"] > 0
        assert manifest.retry_reasons.get("401"), "the run should have met revoked tokens"
        errors = []
        for overrides in ({"extra": {"vendor_secret": "leak-vendor-secret"}}, {"password": "leak-client-secret"}):
            bad = OneRosterClient(settings_for(sb, **overrides), retry_policy=FAST_RETRIES)
            with pytest.raises(CredentialsError) as caught:
                extract_entity(bad, "categories", tmp_path / "bad")
            errors.append(str(caught.value))
        secrets = [sb.client_secret, sb.vendor_secret, f"{sb.vendor_key}:{sb.vendor_secret}",
                   base64.b64encode(f"{sb.client_id}:{sb.client_secret}".encode()).decode(),
                   "leak-vendor-secret", "leak-client-secret", *issued]
        places = {
            "logs": "\n".join(r.getMessage() for r in caplog.records),
            "output": "".join(capfd.readouterr()),
            "errors": "\n".join(errors),
            "xcom": json.dumps(manifest.to_dict()),
            "reprs": repr(hook.settings) + repr(client) + repr(hook) + repr(client.tokens) + repr(
                client.tokens.current()),
            "staging": b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()).decode("latin-1"),
        }
    assert len(issued) >= 2
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"
    assert "vendor key/secret" in errors[0] and "client id/secret" in errors[1]
    with pytest.raises(TypeError):
        json.dumps(hook.settings.client_secret)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(hook.settings)
