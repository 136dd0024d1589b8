"""Alert wiring and wording: which callbacks a config asks for, what an alert says, when it fires."""

from __future__ import annotations

import asyncio
from datetime import date, time, timedelta
from types import SimpleNamespace

import pytest

from gradesync import alerts
from gradesync.config import parse_config
from gradesync.oneroster import CredentialsError

BASE = {"name": "district_a", "api_version": "1.2", "connection_id": "ic_district_a"}


def config(**alert_fields):
    return parse_config({**BASE, "alerts": alert_fields})


def test_no_alerts_configured_means_only_the_closing_log_line() -> None:
    cfg = config()
    assert alerts.dag_callbacks(cfg) == {}
    callbacks = alerts.task_callbacks(cfg)
    assert [type(c).__name__ for c in callbacks["on_failure_callback"]] == ["FailureLogger"]
    assert [type(c).__name__ for c in callbacks["on_retry_callback"]] == ["FailureLogger"]


def test_channels_from_config() -> None:
    cfg = config(email=["data@district.org"], smtp_connection_id="smtp_district", webhook_connection_id="hook")
    failure = alerts.task_callbacks(cfg)["on_failure_callback"]
    assert [type(c).__name__ for c in failure] == ["WebhookNotifier", "EmailNotifier", "FailureLogger"]
    webhook, email, _ = failure
    assert webhook.webhook_conn_id == "hook" and webhook.connection_id == "ic_district_a"
    assert email.to == ["data@district.org"] and email.smtp_conn_id == "smtp_district"
    assert [type(c).__name__ for c in alerts.dag_callbacks(cfg)["on_failure_callback"]] == [
        "WebhookNotifier", "EmailNotifier"]


def test_slack_without_its_provider_says_what_to_do(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(slack_connection_id="slack_alerts")
    assert alerts.dag_callbacks(cfg) == {}
    assert "apache-airflow-providers-slack" in caplog.text
    assert "webhook_connection_id" in caplog.text


def test_failure_alert_from_a_task_context() -> None:
    ti = SimpleNamespace(dag_id="grade_sync_district_a", run_id="scheduled__2026-11-01T02:00:00+00:00",
                         task_id="extract", map_index=2, try_number=3, log_url="http://airflow/log")
    exc = CredentialsError("IC rejected the client id/secret of connection ic_district_a (HTTP 401 from the "
                           "token URL): renew the secret or fix login/password in Admin → Connections")
    alert = alerts.failure_alert({"ti": ti, "exception": exc, "run_id": ti.run_id},
                                 integration="district_a", connection_id="ic_district_a")
    assert alert is not None
    assert alert["event"] == "task_failed" and alert["kind"] == "credentials"
    assert (alert["dag_id"], alert["task_id"], alert["map_index"], alert["try_number"]) == (
        "grade_sync_district_a", "extract", 2, 3)
    assert alert["title"] == "[gradesync] district_a: extract[2] failed"
    assert alert["text"].startswith("grade_sync_district_a run scheduled__2026-11-01T02:00:00+00:00 failed at "
                                    "extract[2]. Grade sync district_a failed: IC rejected")


def test_dag_level_failure_after_a_task_failure_stays_quiet_but_a_timeout_speaks() -> None:
    dag = SimpleNamespace(dag_id="grade_sync_district_a")
    assert alerts.failure_alert({"dag": dag, "run_id": "r1", "reason": "task_failure"},
                                integration="district_a", connection_id="ic") is None
    alert = alerts.failure_alert({"dag": dag, "run_id": "r1", "reason": "timed_out"},
                                 integration="district_a", connection_id="ic")
    assert alert is not None and alert["event"] == "run_failed" and "dagrun_timeout" in alert["cause"]


def test_a_task_killed_without_exception_still_alerts() -> None:
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="load", map_index=-1, try_number=1)
    alert = alerts.failure_alert({"ti": ti}, integration="district_a", connection_id="ic")
    assert alert is not None and alert["kind"] == "task_lost" and alert["map_index"] is None


def test_failure_alert_is_redacted() -> None:
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=1)
    alert = alerts.failure_alert({"ti": ti, "exception": RuntimeError("boom with Pa55word-XYZ")},
                                 integration="i", connection_id="c", secrets=["Pa55word-XYZ"])
    assert alert is not None and "Pa55word-XYZ" not in str(alert)


def test_warnings_alert_lists_the_warnings() -> None:
    summary = {"run_id": "r1", "warnings": ["results: 10 extracted but 9 accounted for"], "totals": {"x": 1}}
    alert = alerts.warnings_alert("district_a", summary, {"dag": SimpleNamespace(dag_id="grade_sync_district_a")})
    assert alert["title"] == "[gradesync] district_a: run succeeded with 1 warning"
    assert alert["text"] == ("grade_sync_district_a run r1 succeeded with 1 warning: "
                             "results: 10 extracted but 9 accounted for")


def test_notify_warnings_without_warnings_sends_nothing() -> None:
    assert alerts.notify_warnings(config(webhook_connection_id="nowhere"), {"warnings": []}, {}) == []


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (date(2027, 6, 1), None),
        (date(2027, 7, 20), "IC credentials of connection ic_district_a expire on 2027-08-01 (12 days): renew "
                            "them in IC's OneRoster integration, update the connection in Admin → Connections "
                            "right away (the old secret stops working) and set alerts.credentials_expire_on to "
                            "the new date"),
        (date(2027, 7, 31), "(1 day)"),
        (date(2027, 8, 1), "expire today (2027-08-01)"),
        (date(2027, 8, 4), "expired on 2027-08-01 (3 days ago)"),
    ],
)
def test_credential_expiry_warning(today: date, expected: str | None) -> None:
    cfg = config(credentials_expire_on="2027-08-01", warn_days_before_expiry=30)
    warning = alerts.credential_expiry_warning(cfg, today)
    if expected is None:
        assert warning is None
    else:
        assert warning is not None and expected in warning


def test_expiry_warning_window_edges() -> None:
    cfg = config(credentials_expire_on="2027-08-01", warn_days_before_expiry=30)
    assert alerts.credential_expiry_warning(cfg, date(2027, 7, 2)) is not None  # 30 days: warn
    assert alerts.credential_expiry_warning(cfg, date(2027, 7, 1)) is None  # 31 days: not yet
    assert alerts.credential_expiry_warning(config(), date(2027, 7, 20)) is None


@pytest.mark.parametrize(
    ("schedule", "tz", "finish_by", "expected"),
    [
        ("0 2 * * *", "UTC", time(6, 0), timedelta(hours=4)),
        ("30 22 * * *", "America/Chicago", time(5, 0), timedelta(hours=6, minutes=30)),  # past midnight
        ("0 2 * * 0", "UTC", time(7, 0), timedelta(hours=5)),  # weekly
        ("0 2 * * *", "UTC", time(2, 0), timedelta(hours=24)),
        ("0 */6 * * *", "UTC", time(6, 0), None),  # several runs a day: no single finish-by
    ],
)
def test_finish_by_interval(schedule: str, tz: str, finish_by: time, expected: timedelta | None) -> None:
    assert alerts.finish_by_interval(schedule, tz, finish_by) == expected


def test_deadline_alert_from_queue_time_with_an_async_callback() -> None:
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    cfg = parse_config({**BASE, "schedule": "0 1 * * *", "timezone": "America/Chicago",
                        "alerts": {"finish_by": "05:30", "webhook_connection_id": "hook"}})
    alert = alerts.deadline_alert(cfg)
    assert isinstance(alert, DeadlineAlert)
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert alert.interval == timedelta(hours=4, minutes=30)
    assert isinstance(alert.callback, AsyncCallback)
    assert alert.callback.path == "gradesync.alerts.deadline_missed"
    assert alert.callback.kwargs["finish_by"] == "05:30"
    assert alerts.dag_callbacks(cfg)["deadline"] == alert
    assert alerts.deadline_alert(config()) is None
    assert alerts.deadline_alert(parse_config({**BASE, "schedule": None, "alerts": {"finish_by": "05:00"}})) is None


def test_dag_accepts_the_callbacks() -> None:
    from airflow.sdk import DAG

    cfg = parse_config({**BASE, "alerts": {"finish_by": "06:00", "webhook_connection_id": "hook"}})
    dag = DAG(dag_id=cfg.dag_id, schedule=None, **alerts.dag_callbacks(cfg))
    assert len(dag.deadline) == 1
    assert len(dag.on_failure_callback) == 1


def test_deadline_callback_ignores_manual_runs() -> None:
    result = asyncio.run(alerts.deadline_missed(
        integration="district_a", connection_id="ic", finish_by="06:00", timezone="UTC",
        webhook_connection_id="does_not_matter",
        context={"dag_run": {"dag_id": "grade_sync_district_a", "dag_run_id": "manual__x", "run_type": "manual"}},
    ))
    assert result == "not a scheduled run: no alert"


def test_deadline_alert_text() -> None:
    alert = alerts.deadline_missed_alert(
        integration="district_a", finish_by="06:00", timezone="America/Chicago",
        context={"dag_run": {"dag_id": "grade_sync_district_a", "dag_run_id": "scheduled__2026-11-01",
                             "run_type": "scheduled", "state": "running"}},
    )
    assert alert is not None
    assert alert["text"].startswith("Grade sync district_a is late: run scheduled__2026-11-01 has not finished "
                                    "by 06:00 America/Chicago (state running)")


def test_webhook_url_forms() -> None:
    def conn(**kw):
        base = {"conn_id": "hook", "host": None, "schema": None, "port": None, "extra_dejson": {}}
        return SimpleNamespace(**{**base, **kw})

    assert alerts.webhook_url(conn(host="https://hooks.example.org/services/abc")) == \
        "https://hooks.example.org/services/abc"
    assert alerts.webhook_url(conn(host="alerts.example.org", schema="http", port=8080,
                                   extra_dejson={"endpoint": "/gradesync"})) == \
        "http://alerts.example.org:8080/gradesync"
    assert alerts.webhook_url(conn(host="alerts.example.org")) == "https://alerts.example.org"
    assert alerts.webhook_url(conn(extra_dejson={"webhook_url": "https://x.example/y"})) == "https://x.example/y"
    with pytest.raises(alerts.AlertDeliveryError, match="has no host"):
        alerts.webhook_url(conn())


def test_email_html_escapes_error_text() -> None:
    body = alerts.email_html({"cause": "<script>x</script> {{ conf }}", "dag_id": "d"})
    assert "<script>" not in body and "&lt;script&gt;" in body
