"""Alerts delivered for real: JSON to a local webhook, mail to a local SMTP server, no secret in either."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from gradesync import alerts
from gradesync.config import parse_config
from gradesync.oneroster import CredentialsError

IC_SECRET = "IC-client-Secret-0042"
VENDOR_SECRET = "Vendor-Secret-7781"
HOOK_TOKEN = "hook-Token-5150"
RUN_ID = "scheduled__2026-11-01T02:00:00+00:00"


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch, webhook, smtp_sink) -> None:
    """The IC, webhook and SMTP connections as Airflow reads them from the environment."""
    monkeypatch.setenv("AIRFLOW_CONN_IC_DISTRICT_A", json.dumps({
        "conn_type": "http", "host": "https://ic.example.org/campus/api/ims/oneroster/rostering/v1p2",
        "login": "client-id", "password": IC_SECRET,
        "extra": {"token_url": "https://ic.example.org/campus/oauth2/token?appName=x", "vendor_key": "vkey-1234",
                  "vendor_secret": VENDOR_SECRET},
    }))
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_HOOK", json.dumps({
        "conn_type": "http", "host": webhook.url, "password": HOOK_TOKEN,
        "extra": {"headers": {"X-Source": "gradesync-test"}},
    }))
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_ALERTS", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": smtp_sink.port,
        "login": smtp_sink.login, "password": smtp_sink.password,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "gradesync@district.example"},
    }))


def config(**alert_fields):
    return parse_config({"name": "district_a", "api_version": "1.2", "connection_id": "ic_district_a",
                         "alerts": {"webhook_connection_id": "alerts_hook", "email": ["data@district.example"],
                                    "smtp_connection_id": "smtp_alerts", **alert_fields}})


def failed_task_context(exc: BaseException) -> dict:
    ti = SimpleNamespace(dag_id="grade_sync_district_a", run_id=RUN_ID, task_id="refresh_token", map_index=-1,
                         try_number=1, log_url="http://airflow.example/dags/grade_sync_district_a/runs/x")
    return {"ti": ti, "run_id": RUN_ID, "exception": exc}


def leaked(text: str) -> list[str]:
    return [s for s in (IC_SECRET, VENDOR_SECRET, HOOK_TOKEN, "smtp-Pass-4567") if s in text]


def test_task_failure_reaches_the_webhook_with_the_cause_and_no_secret(connections, webhook) -> None:
    # An error text that (wrongly) carries secrets: the alert must still not.
    exc = CredentialsError(f"IC rejected the client id/secret of connection ic_district_a (HTTP 401, sent "
                           f"{IC_SECRET} with vendor secret {VENDOR_SECRET}): renew the secret or fix "
                           "login/password in Admin → Connections")
    notifier = alerts.task_callbacks(config())["on_failure_callback"][0]
    notifier(failed_task_context(exc))  # the way Airflow calls a task callback

    [request] = webhook.requests
    assert request["path"] == "/hooks/gradesync"
    assert request["headers"]["Authorization"] == f"Bearer {HOOK_TOKEN}"
    assert request["headers"]["X-Source"] == "gradesync-test"
    assert leaked(request["body"]) == []
    body = json.loads(request["body"])
    assert body["event"] == "task_failed"
    assert body["dag_id"] == "grade_sync_district_a"
    assert body["run_id"] == RUN_ID
    assert body["task_id"] == "refresh_token"
    assert body["kind"] == "credentials"
    assert body["cause"].startswith("Grade sync district_a failed: IC rejected the client id/secret of "
                                    "connection ic_district_a (HTTP 401, sent *** with vendor secret ***)")
    assert body["cause"].endswith("in Admin → Connections")
    assert "\n" not in body["cause"]
    assert body["text"].startswith(f"grade_sync_district_a run {RUN_ID} failed at refresh_token.")


def test_webhook_refusal_names_the_connection_not_the_url(connections, webhook) -> None:
    webhook.status = 500
    notifier = alerts.WebhookNotifier("alerts_hook", integration="district_a", connection_id="ic_district_a")
    with pytest.raises(alerts.AlertDeliveryError) as caught:
        notifier.send({"event": "x", "text": "y"})
    assert str(caught.value).startswith("webhook connection alerts_hook: 127.0.0.1:")
    assert "answered HTTP 500" in str(caught.value) and "/hooks/" not in str(caught.value)


def test_task_failure_mail_through_smtp(connections, smtp_sink) -> None:
    exc = RuntimeError(f"unexpected reply mentioning {IC_SECRET}")
    notifier = alerts.task_callbacks(config())["on_failure_callback"][1]
    notifier(failed_task_context(exc))

    [message] = smtp_sink.messages
    assert smtp_sink.authenticated == ["alerts"]
    assert smtp_sink.envelopes == [{"from": "gradesync@district.example", "to": ["data@district.example"]}]
    assert message["Subject"] == "[gradesync] district_a: refresh_token failed"
    html = message.get_body(("html",)).get_content()
    assert "Grade sync district_a failed: RuntimeError: unexpected reply mentioning ***" in html
    assert RUN_ID in html and "grade_sync_district_a" in html
    assert leaked(message.as_string()) == []


def test_warnings_go_to_every_channel(connections, webhook, smtp_sink) -> None:
    summary = {"run_id": RUN_ID, "warnings": ["results: 10 extracted but 9 accounted for"],
               "totals": {"extracted": 10}}
    context = {"dag": SimpleNamespace(dag_id="grade_sync_district_a"), "run_id": RUN_ID}
    assert alerts.notify_warnings(config(), summary, context) == ["WebhookNotifier", "EmailNotifier"]
    [body] = webhook.bodies()
    assert body["event"] == "run_warnings" and body["warnings"] == summary["warnings"]
    assert body["run_id"] == RUN_ID and body["dag_id"] == "grade_sync_district_a"
    [message] = smtp_sink.messages
    assert message["Subject"] == "[gradesync] district_a: run succeeded with 1 warning"
    assert "results: 10 extracted but 9 accounted for" in message.get_body(("html",)).get_content()


def test_a_broken_channel_does_not_stop_the_others(connections, webhook, smtp_sink) -> None:
    webhook.status = 503
    summary = {"run_id": RUN_ID, "warnings": ["w"]}
    assert alerts.notify_warnings(config(), summary, {"run_id": RUN_ID}) == ["EmailNotifier"]
    assert len(smtp_sink.messages) == 1


def test_deadline_callback_delivers_asynchronously(connections, webhook, smtp_sink) -> None:
    """What the triggerer does when a nightly run misses ``finish_by``: the callback and kwargs as stored."""
    from airflow.sdk._shared.module_loading import import_string

    cfg = config(finish_by="06:00")
    deadline = alerts.deadline_alert(cfg)
    callback = import_string(deadline.callback.path)
    context = {"dag_run": {"dag_id": "grade_sync_district_a", "dag_run_id": RUN_ID, "run_type": "scheduled",
                           "state": "running", "logical_date": "2026-11-01T02:00:00Z"},
               "deadline": {"id": "d1", "deadline_time": "2026-11-02T06:00:00Z"}}
    result = asyncio.run(callback(**deadline.callback.kwargs, context=context))
    assert result == "sent via WebhookNotifier, EmailNotifier"
    [body] = webhook.bodies()
    assert body["event"] == "deadline_missed" and body["run_id"] == RUN_ID
    assert body["text"].startswith(f"Grade sync district_a is late: run {RUN_ID} has not finished by 06:00 UTC")
    [message] = smtp_sink.messages
    assert message["Subject"] == "[gradesync] district_a: nightly run not finished by 06:00"
