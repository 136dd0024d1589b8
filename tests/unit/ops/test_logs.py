"""Readable failure lines and secret masking in logs."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import pytest
import requests

from gradesync.config import ConfigError
from gradesync.logs import (
    SecretFilter,
    failure_kind,
    failure_line,
    install_secret_filter,
    mask_connection,
    redact,
    secret_values_of,
)
from gradesync.oneroster import CredentialsError, ExtractionError
from gradesync.run_params import InvalidRunParams

SECRET = "s3cr3t-Client-Secret-value"


def line(exc: BaseException) -> str:
    return failure_line(exc, integration="district_a", connection_id="ic_district_a",
                        warehouse_connection_id="gradesync_warehouse")


def test_redact_masks_plain_and_url_encoded_forms_longest_first() -> None:
    text = f"secret={SECRET}&q=a%2Fb%2Bc&short=abc token {SECRET}x"
    out = redact(text, [SECRET, "a/b+c", "abc", None])
    assert SECRET not in out and "a%2Fb%2Bc" not in out
    assert "short=abc" in out  # too short to be worth masking
    assert out.count("***") == 3


def test_secret_values_of_a_connection_include_sensitive_extras() -> None:
    conn = SimpleNamespace(
        password="client-secret-1",
        extra_dejson={"token_url": "https://ic.example/token", "vendor_key": "vendor-key-1",
                      "vendor_secret": "vendor-secret-1", "headers": {"Authorization": "Bearer abcdef"},
                      "timeout": 30},
    )
    assert sorted(secret_values_of(conn)) == ["Bearer abcdef", "client-secret-1", "vendor-key-1",
                                              "vendor-secret-1"]  # not token_url: an address


def test_masked_connection_never_reaches_a_log_handler() -> None:
    conn = SimpleNamespace(password="pw-connection-xyz", extra_dejson={"vendor_secret": "vs-connection-xyz"})
    mask_connection(conn)
    logger = logging.getLogger("gradesync.test_logs")
    logger.propagate = False
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        install_secret_filter(logger=logger)
        logger.error("token request with %s and %s", "pw-connection-xyz", "vs-connection-xyz")
        try:
            raise RuntimeError("IC said: bad secret vs-connection-xyz")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "pw-connection-xyz" not in output and "vs-connection-xyz" not in output
    assert output.startswith("token request with *** and ***\n")
    assert "RuntimeError: IC said: bad secret ***" in output


def test_secret_filter_with_its_own_secrets() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "posting %s", ("hunter2-hunter2",), None)
    assert SecretFilter(["hunter2-hunter2"]).filter(record)
    assert record.getMessage() == "posting ***"


def test_credentials_rejected_keeps_the_clients_actionable_message() -> None:
    exc = CredentialsError(
        "IC rejected the client id/secret of connection ic_district_a (HTTP 401 from the token URL): "
        "renew the secret or fix login/password in Admin → Connections"
    )
    assert line(exc) == (
        "Grade sync district_a failed: IC rejected the client id/secret of connection ic_district_a (HTTP 401 "
        "from the token URL): renew the secret or fix login/password in Admin → Connections"
    )
    assert failure_kind(exc) == "credentials"


def test_credentials_error_wrapped_by_airflow_fail_is_still_recognised() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    try:
        try:
            raise CredentialsError("connection ic_district_a: password (the OAuth client secret) is empty")
        except CredentialsError as inner:
            raise AirflowFailException(str(inner)) from None
    except AirflowFailException as exc:
        outer = exc
    result = line(outer)
    assert failure_kind(outer) == "credentials"
    assert result.endswith("fix connection ic_district_a in Admin → Connections")


def test_no_secret_in_a_failure_line() -> None:
    exc = CredentialsError(f"IC rejected secret {SECRET} for connection ic_district_a")
    out = failure_line(exc, integration="district_a", connection_id="ic_district_a", secrets=[SECRET])
    assert SECRET not in out and "***" in out


def test_ic_unreachable() -> None:
    try:
        requests.get("http://127.0.0.1:9/", timeout=2)
    except requests.ConnectionError as exc:
        out, kind = line(exc), failure_kind(exc)
    assert kind == "ic_unreachable"
    assert "IC could not be reached on connection ic_district_a" in out
    assert "check the Service URL (host) in Admin → Connections" in out
    refused = ExtractionError("GET lineItems: gave up after 8 attempts (8× error); last error: connection "
                              "dropped (ConnectionError)")
    assert failure_kind(refused) == "ic_unreachable"


def test_timeouts() -> None:
    assert failure_kind(requests.ReadTimeout("read timed out")) == "ic_timeout"
    assert failure_kind(TimeoutError("timed out")) == "ic_timeout"
    gave_up = ExtractionError("GET results: gave up after 8 attempts (8× error); last error: timeout")
    assert "IC did not answer in time" in line(gave_up)
    from airflow.sdk.exceptions import AirflowTaskTimeout

    assert "execution_timeout" in line(AirflowTaskTimeout("Timeout, PID: 12"))


def test_server_errors_after_retries() -> None:
    exc = ExtractionError("GET lineItems: gave up after 8 attempts (8× error); last error: HTTP 503 (server_busy)")
    assert failure_kind(exc) == "ic_server_error"
    assert "IC kept answering HTTP 503 after every retry on connection ic_district_a" in line(exc)


def test_throttled() -> None:
    exc = ExtractionError("GET results: gave up after 31 attempts (30× throttled); last error: 429 throttled")
    assert failure_kind(exc) == "ic_throttled"
    assert "max_concurrent_requests" in line(exc)


def test_config_error_names_the_file_and_the_check() -> None:
    exc = ConfigError("/dags/district_a.yaml", ["field 'schedule': bad cron"])
    out = line(exc)
    assert "/dags/district_a.yaml: field 'schedule': bad cron" in out
    assert "gradesync validate" in out


def test_reject_rate() -> None:
    class RejectRateExceeded(RuntimeError):  # lives in gradesync.merge or .pipeline; matched by name
        pass

    exc = RejectRateExceeded("120 of 1000 records were rejected (12.0% > reject_rate_threshold 5.0%)")
    assert failure_kind(exc) == "reject_rate"
    assert "rejects table" in line(exc) and "reject_rate_threshold" in line(exc)


def test_warehouse_lock_held_by_name() -> None:
    class IntegrationLocked(RuntimeError):  # the warehouse's class, matched by name
        pass

    exc = IntegrationLocked("integration 'district_a' is being loaded by run 'scheduled__2026-11-01'")
    assert failure_kind(exc) == "warehouse_locked"
    assert "another run holds the warehouse lock of this integration (integration 'district_a' is being " \
           "loaded by run 'scheduled__2026-11-01'): let that run finish, then clear this task" in line(exc)


def test_warehouse_unreachable() -> None:
    import sqlalchemy as sa

    engine = sa.create_engine("sqlite:////nonexistent-dir/x/warehouse.db")
    with pytest.raises(sa.exc.OperationalError) as caught:
        engine.connect()
    assert failure_kind(caught.value) == "warehouse"
    assert "check connection gradesync_warehouse" in line(caught.value)


def test_missing_connection() -> None:
    from airflow.sdk.exceptions import AirflowNotFoundException

    exc = AirflowNotFoundException("The conn_id `ic_district_b` isn't defined")
    assert line(exc) == (
        "Grade sync district_a failed: connection ic_district_b does not exist: create it in Admin → Connections "
        "(or your secrets backend) as described under 'Adding an integration' in the README"
    )


def test_invalid_params() -> None:
    exc = InvalidRunParams(["Param 'since' must be an ISO 8601 date-time such as 2026-11-01T00:00:00Z, got 'x'"])
    assert "trigger the DAG again with corrected Params" in line(exc)


def test_unknown_failure_is_one_line_and_bounded() -> None:
    exc = KeyError("line\nbreak " + "x" * 1000)
    out = line(exc)
    assert "\n" not in out and len(out) < 600
    assert out.startswith("Grade sync district_a failed: KeyError:")
