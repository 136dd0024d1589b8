"""Alerts of a grade sync: failures, runs that succeed with warnings, late nightly runs, expiring keys.

Everything is configured per integration (``alerts:`` in its YAML) and delivered through Airflow
notifiers, so the same channels serve task callbacks, the report task and Deadline Alerts:

- ``WebhookNotifier`` posts a small JSON document to the URL of an HTTP connection (``text`` is a
  one-line summary, so a Slack or Teams incoming webhook shows something useful as is);
- ``EmailNotifier`` sends mail through the SMTP provider's ``SmtpNotifier`` and an SMTP connection.

Every alert carries the dag id, run id, the task and one actionable sentence (``logs.failure_line``)
and is redacted against the secrets of the IC connection and of the channel itself. Alerting never
fails a sync: a broken channel is logged, the run's own outcome stands.
"""

from __future__ import annotations

import asyncio
import html
import importlib.util
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from airflow.sdk import BaseNotifier

from gradesync.logs import failure_kind, failure_line, redact, secret_values_of

log = logging.getLogger("gradesync.alerts")

SLACK_PROVIDER = "airflow.providers.slack"
WEBHOOK_TIMEOUT_S = 10.0
_REF_DAY = date(2026, 3, 4)  # a Wednesday far from DST changes; used to measure cron schedules


class AlertDeliveryError(RuntimeError):
    """A channel did not accept an alert; the message names the connection, never its secrets."""


# ---------------------------------------------------------------------------------------------
# What an alert says
# ---------------------------------------------------------------------------------------------


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    try:
        return getattr(obj, name, default)
    except Exception:  # noqa: BLE001 - a lazy attribute that needs a server is simply unknown
        return default


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, (datetime, date)) else str(value)


def _run_facts(context: Mapping[str, Any]) -> dict[str, Any]:
    """Dag id, run id, task and dates from a task or dag callback context (whatever it holds)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    map_index = _get(ti, "map_index")
    facts = {
        "dag_id": _get(ti, "dag_id") or _get(dag_run, "dag_id") or _get(dag, "dag_id"),
        "run_id": context.get("run_id") or _get(ti, "run_id") or _get(dag_run, "run_id"),
        "task_id": _get(ti, "task_id"),
        "map_index": map_index if isinstance(map_index, int) and map_index >= 0 else None,
        "try_number": _get(ti, "try_number"),
        "logical_date": _iso(context.get("logical_date") or _get(dag_run, "logical_date")),
        "run_type": _iso(_get(dag_run, "run_type")),
        "log_url": None,
    }
    if ti is not None:
        try:
            facts["log_url"] = ti.log_url
        except Exception:  # noqa: BLE001 - no API base URL configured: no link
            pass
    return facts


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value


def _connection_secrets(*conn_ids: str | None) -> list[str]:
    """Secret values of the named connections, to redact alerts with; unknown connections add nothing."""
    from airflow.sdk import BaseHook

    values: list[str] = []
    for conn_id in conn_ids:
        if not conn_id:
            continue
        try:
            values.extend(secret_values_of(BaseHook.get_connection(conn_id)))
        except Exception:  # noqa: BLE001 - a missing connection has no secrets to hide
            continue
    return values


async def _aconnection_secrets(*conn_ids: str | None) -> list[str]:
    """``_connection_secrets`` for the triggerer, where connections must be fetched asynchronously."""
    from airflow.sdk import BaseHook

    values: list[str] = []
    for conn_id in conn_ids:
        if not conn_id:
            continue
        try:
            values.extend(secret_values_of(await BaseHook.aget_connection(conn_id)))
        except Exception:  # noqa: BLE001 - a missing connection has no secrets to hide
            continue
    return values


def failure_alert(
    context: Mapping[str, Any],
    *,
    integration: str,
    connection_id: str,
    warehouse_connection_id: str | None = None,
    secrets: Iterable[str | None] = (),
) -> dict[str, Any] | None:
    """The alert for a failed task (task callback) or run (dag callback); ``None`` when nothing to say.

    A dag-level callback with reason ``task_failure`` returns ``None``: the task callback already
    alerted, with the exception in hand.
    """
    facts = _run_facts(context)
    reason = context.get("reason")
    exc = context.get("exception")
    if isinstance(exc, BaseException):
        cause = failure_line(exc, integration=integration, connection_id=connection_id,
                             warehouse_connection_id=warehouse_connection_id)
        kind = failure_kind(exc)
    elif isinstance(exc, str) and exc:
        cause = f"Grade sync {integration} failed: {' '.join(exc.split())[:300]}"
        kind = "unexpected"
    elif reason == "task_failure" and "exception" not in context:
        return None
    elif reason == "timed_out":
        cause = (f"Grade sync {integration} failed: the run passed its dagrun_timeout and was stopped; IC was "
                 "slow or the run waited behind another; clear the run to retry off-peak")
        kind = "run_timeout"
    else:
        cause = (f"Grade sync {integration} failed: the task stopped without a Python error (killed, out of "
                 "memory or its worker was lost); check the worker's logs and clear the task")
        kind = "task_lost"
    where = facts["task_id"] if facts["task_id"] and kind != "run_timeout" else "the run"
    if facts["map_index"] is not None and where != "the run":
        where += f"[{facts['map_index']}]"
    alert = {
        "event": "run_failed" if where == "the run" else "task_failed",
        "integration": integration,
        **facts,
        "kind": kind,
        "cause": cause,
        "title": f"[gradesync] {integration}: {where} failed",
        "text": f"{facts['dag_id']} run {facts['run_id']} failed at {where}. {cause}",
    }
    return _scrub(alert, [s for s in secrets if s])


def warnings_alert(integration: str, summary: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The alert for a run that loaded its data but reported warnings."""
    facts = _run_facts(context)
    warnings = [" ".join(str(w).split()) for w in summary.get("warnings") or []]
    count = f"{len(warnings)} warning" + ("" if len(warnings) == 1 else "s")
    return {
        "event": "run_warnings",
        "integration": integration,
        **facts,
        "run_id": summary.get("run_id") or facts["run_id"],
        "kind": "warnings",
        "warnings": warnings,
        "totals": dict(summary.get("totals") or {}),
        "title": f"[gradesync] {integration}: run succeeded with {count}",
        "text": f"{facts['dag_id']} run {summary.get('run_id') or facts['run_id']} succeeded with {count}: "
        + "; ".join(warnings),
    }


# ---------------------------------------------------------------------------------------------
# Channels
# ---------------------------------------------------------------------------------------------


def webhook_url(conn: Any) -> str:
    """The URL an HTTP connection points at, read the way ``HttpHook`` reads it.

    A full URL in ``host`` (or in extra ``webhook_url``, which Airflow masks in logs: use it when the
    URL itself is the secret, as with Slack) wins; otherwise ``schema`` (http/https, default https),
    ``host``, ``port`` and extra ``endpoint``.
    """
    extra = conn.extra_dejson or {}
    if extra.get("webhook_url"):
        return str(extra["webhook_url"])
    host = (conn.host or "").strip()
    if not host:
        raise AlertDeliveryError(f"webhook connection {conn.conn_id} has no host: set host to the webhook's URL")
    if "://" in host:
        url = host
    else:
        scheme = conn.schema if conn.schema in ("http", "https") else "https"
        url = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
    endpoint = str(extra.get("endpoint") or "")
    if endpoint:
        url = url.rstrip("/") + "/" + endpoint.lstrip("/")
    return url


class _PlainNotifier(BaseNotifier):
    """A notifier without Jinja: alerts are built from facts, and error text is never a template.

    Skipping the render step also keeps dag-level callbacks working where Airflow hands the notifier
    a serialized DAG without a template environment (``airflow dags test``).
    """

    template_fields = ()
    integration: str
    connection_id: str
    warehouse_connection_id: str | None

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        return None

    def send(self, alert: Mapping[str, Any]) -> None:
        raise NotImplementedError

    async def asend(self, alert: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def notify(self, context: Any) -> None:
        alert = failure_alert(
            context, integration=self.integration, connection_id=self.connection_id,
            warehouse_connection_id=self.warehouse_connection_id,
            secrets=_connection_secrets(self.connection_id, self.warehouse_connection_id),
        )
        if alert is not None:
            self.send(alert)

    async def async_notify(self, context: Any) -> None:
        secrets = await _aconnection_secrets(self.connection_id, self.warehouse_connection_id)
        alert = failure_alert(
            context, integration=self.integration, connection_id=self.connection_id,
            warehouse_connection_id=self.warehouse_connection_id, secrets=secrets,
        )
        if alert is not None:
            await self.asend(alert)


class WebhookNotifier(_PlainNotifier):
    """Post an alert as JSON to the URL of an Airflow HTTP connection.

    Authentication comes from the connection: login/password as Basic auth, a password alone as a
    Bearer token, extra ``headers`` as extra headers. As a task ``on_failure_callback`` it sends
    ``failure_alert``; ``send``/``asend`` deliver any prepared alert (warnings, deadlines).
    """

    def __init__(
        self,
        webhook_conn_id: str,
        *,
        integration: str,
        connection_id: str,
        warehouse_connection_id: str | None = None,
        timeout: float = WEBHOOK_TIMEOUT_S,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.webhook_conn_id = webhook_conn_id
        self.integration = integration
        self.connection_id = connection_id
        self.warehouse_connection_id = warehouse_connection_id
        self.timeout = timeout

    def send(self, alert: Mapping[str, Any]) -> None:
        """Post ``alert`` now (blocking); raises ``AlertDeliveryError`` when the webhook refuses it."""
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(self.webhook_conn_id)
        self._post(conn, alert, _connection_secrets(self.connection_id))

    async def asend(self, alert: Mapping[str, Any]) -> None:
        """``send`` for the triggerer (Deadline Alerts)."""
        from airflow.sdk import BaseHook

        conn = await BaseHook.aget_connection(self.webhook_conn_id)
        secrets = await _aconnection_secrets(self.connection_id)
        await asyncio.to_thread(self._post, conn, alert, secrets)

    def _post(self, conn: Any, alert: Mapping[str, Any], secrets: list[str]) -> None:
        import requests

        url = webhook_url(conn)
        body = _scrub(dict(alert), secret_values_of(conn) + secrets)
        extra = conn.extra_dejson or {}
        headers = {"Content-Type": "application/json", "User-Agent": "gradesync-alerts"}
        headers.update({str(k): str(v) for k, v in (extra.get("headers") or {}).items()})
        auth = None
        if conn.login and conn.password:
            auth = (conn.login, conn.password)
        elif conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        where = urlsplit(url).netloc or conn.conn_id
        try:
            response = requests.post(url, data=json.dumps(body, default=str), headers=headers, auth=auth,
                                     timeout=self.timeout)
        except requests.RequestException as exc:
            # requests puts the full URL (which may hold a token) in its messages: name the host only.
            raise AlertDeliveryError(
                f"webhook connection {conn.conn_id}: could not post to {where} ({type(exc).__name__})"
            ) from None
        if response.status_code >= 300:
            raise AlertDeliveryError(
                f"webhook connection {conn.conn_id}: {where} answered HTTP {response.status_code}"
            )
        log.info("Alert %s sent to webhook connection %s", body.get("event"), conn.conn_id)


class EmailNotifier(_PlainNotifier):
    """Mail an alert through the SMTP provider (``SmtpNotifier``) and an SMTP connection.

    The subject and body are built here from the alert, not from Jinja templates, so text from an
    error message can never be evaluated as a template. The sender is the connection's ``from_email``
    extra unless ``from_email`` is given.
    """

    def __init__(
        self,
        to: list[str],
        *,
        integration: str,
        connection_id: str,
        smtp_conn_id: str | None = None,
        from_email: str | None = None,
        warehouse_connection_id: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.to = list(to)
        self.integration = integration
        self.connection_id = connection_id
        self.smtp_conn_id = smtp_conn_id
        self.from_email = from_email
        self.warehouse_connection_id = warehouse_connection_id

    def _smtp(self, alert: Mapping[str, Any], secrets: list[str]) -> Any:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        body = _scrub(dict(alert), secrets)
        return SmtpNotifier(
            to=self.to, from_email=self.from_email, smtp_conn_id=self.smtp_conn_id,
            subject=body["title"], html_content=email_html(body),
        )

    def send(self, alert: Mapping[str, Any]) -> None:
        """Mail ``alert`` now (blocking); SMTP errors propagate."""
        self._smtp(alert, _connection_secrets(self.connection_id, self.smtp_conn_id)).notify({})
        log.info("Alert %s mailed to %s", alert.get("event"), ", ".join(self.to))

    async def asend(self, alert: Mapping[str, Any]) -> None:
        """``send`` for the triggerer (Deadline Alerts)."""
        secrets = await _aconnection_secrets(self.connection_id, self.smtp_conn_id)
        await self._smtp(alert, secrets).async_notify({})


def email_html(alert: Mapping[str, Any]) -> str:
    """A plain HTML body: the one-line summary first, then the facts as a table."""
    rows = [
        (label, alert.get(key))
        for label, key in (("Integration", "integration"), ("DAG", "dag_id"), ("Run", "run_id"),
                           ("Task", "task_id"), ("Map index", "map_index"), ("Try", "try_number"),
                           ("Logical date", "logical_date"), ("Kind", "kind"))
        if alert.get(key) is not None
    ]
    parts = [f"<p><b>{html.escape(str(alert.get('cause') or alert.get('text') or ''))}</b></p>"]
    if alert.get("warnings"):
        parts.append("<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in alert["warnings"]) + "</ul>")
    parts.append("<table>" + "".join(
        f"<tr><td>{html.escape(label)}</td><td>{html.escape(str(value))}</td></tr>" for label, value in rows
    ) + "</table>")
    if alert.get("log_url"):
        parts.append(f'<p><a href="{html.escape(str(alert["log_url"]), quote=True)}">Task log</a></p>')
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Wiring per integration
# ---------------------------------------------------------------------------------------------


def notifiers(config: Any) -> list[BaseNotifier]:
    """The notifiers ``config.alerts`` asks for (possibly none)."""
    alerts = config.alerts
    common = {"integration": config.name, "connection_id": config.connection_id,
              "warehouse_connection_id": config.warehouse_connection_id}
    found: list[BaseNotifier] = []
    if alerts.webhook_connection_id:
        found.append(WebhookNotifier(alerts.webhook_connection_id, **common))
    if alerts.email:
        found.append(EmailNotifier(list(alerts.email), smtp_conn_id=alerts.smtp_connection_id, **common))
    return found


def slack_unavailable_message(config: Any) -> str:
    """Why ``alerts.slack_connection_id`` sends nothing, and the two ways to get Slack alerts."""
    try:
        installed = importlib.util.find_spec(SLACK_PROVIDER) is not None
    except ModuleNotFoundError:
        installed = False
    state = "is installed but not wired in gradesync yet" if installed else "is not installed"
    return (
        f"integration {config.name}: alerts.slack_connection_id is set but the Slack provider "
        f"(apache-airflow-providers-slack) {state}; no Slack alerts are sent. Use alerts.webhook_connection_id "
        "with a Slack incoming-webhook URL instead (gradesync posts a Slack-compatible 'text' field)"
    )


def task_callbacks(config: Any) -> dict[str, list[Any]]:
    """``default_args`` entries: on task failure, alert every channel and end the log with the cause.

    Task-level, because only a task callback holds the exception that says what broke. The one-line
    cause is logged last, after the alerts, so it is the last line of a failed try (retries too).
    """
    closing = FailureLogger(config.name, config.connection_id, config.warehouse_connection_id)
    return {"on_failure_callback": [*notifiers(config), closing], "on_retry_callback": [closing]}


def dag_callbacks(config: Any) -> dict[str, Any]:
    """Keyword arguments for ``DAG(...)``: run-level failure alerts and the finish-by Deadline Alert.

    The run-level callback stays quiet for ordinary task failures (the task callbacks alerted
    already) and speaks for what no task sees: a run stopped by ``dagrun_timeout``.
    """
    kwargs: dict[str, Any] = {}
    if config.alerts.slack_connection_id:
        log.warning("%s", slack_unavailable_message(config))
    channels = notifiers(config)
    if channels:
        kwargs["on_failure_callback"] = channels
    deadline = deadline_alert(config)
    if deadline is not None:
        kwargs["deadline"] = deadline
    return kwargs


class FailureLogger:
    """Task callback that ends a failed task's log with the one-line cause (secrets masked)."""

    def __init__(self, integration: str, connection_id: str, warehouse_connection_id: str | None = None):
        self.integration = integration
        self.connection_id = connection_id
        self.warehouse_connection_id = warehouse_connection_id

    def __call__(self, context: Mapping[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, BaseException):
            line = failure_line(exc, integration=self.integration, connection_id=self.connection_id,
                                warehouse_connection_id=self.warehouse_connection_id,
                                secrets=_connection_secrets(self.connection_id, self.warehouse_connection_id))
            log.error("%s", line)


def notify_warnings(config: Any, summary: Mapping[str, Any], context: Mapping[str, Any]) -> list[str]:
    """Alert every channel that a run succeeded with warnings; returns the channels that accepted it.

    Called by the report task. A channel that fails is logged, never raised: the data is loaded and
    the run is a success; the warnings are in the log and the returned summary either way.
    """
    if not summary.get("warnings"):
        return []
    alert = warnings_alert(config.name, summary, context)
    alert = _scrub(alert, _connection_secrets(config.connection_id, config.warehouse_connection_id))
    log.warning("%s", alert["text"])
    delivered: list[str] = []
    for notifier in notifiers(config):
        name = type(notifier).__name__
        try:
            notifier.send(alert)  # type: ignore[attr-defined]
            delivered.append(name)
        except Exception as exc:  # noqa: BLE001 - see docstring
            log.error("Could not deliver the warnings alert through %s: %s", name, redact(str(exc)))
    return delivered


# ---------------------------------------------------------------------------------------------
# Deadline: a nightly run that has not finished by alerts.finish_by
# ---------------------------------------------------------------------------------------------


def finish_by_interval(schedule: str, timezone: str, finish_by: time) -> timedelta | None:
    """How long after a scheduled run starts it must be done to finish by ``finish_by`` (local time).

    Measured on a reference day away from DST changes. ``None`` for schedules that fire more than once
    a day: a single "finish by" time of day has no meaning for them.
    """
    from croniter import croniter

    zone = ZoneInfo(timezone)
    start = datetime.combine(_REF_DAY, time.min, tzinfo=zone)
    fires = croniter(schedule, start - timedelta(seconds=1))
    first = fires.get_next(datetime)
    second = fires.get_next(datetime)
    if second - first < timedelta(hours=23):
        return None
    target = datetime.combine(first.date(), finish_by, tzinfo=zone)
    if target <= first:
        target += timedelta(days=1)
    return target - first


def deadline_alert(config: Any) -> Any:
    """A ``DeadlineAlert`` firing when a scheduled run is still going at ``alerts.finish_by``; else ``None``.

    Measured from the run's queue time (``DAGRUN_QUEUED_AT``) rather than its logical date, so
    backfills and late manual runs are not born overdue. The callback runs in the triggerer and
    ignores manual and backfill runs: the promise "done by 06:00" is about the nightly run.
    """
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    alerts = config.alerts
    if alerts.finish_by is None or not config.schedule:
        return None
    interval = finish_by_interval(config.schedule, config.timezone, alerts.finish_by)
    if interval is None:
        log.warning("integration %s: alerts.finish_by ignored: schedule %r runs more than once a day",
                    config.name, config.schedule)
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback(
            deadline_missed,
            kwargs={
                "integration": config.name,
                "connection_id": config.connection_id,
                "finish_by": alerts.finish_by.strftime("%H:%M"),
                "timezone": config.timezone,
                "webhook_connection_id": alerts.webhook_connection_id,
                "email": list(alerts.email),
                "smtp_connection_id": alerts.smtp_connection_id,
            },
        ),
        name=f"{config.dag_id} finished by {alerts.finish_by.strftime('%H:%M')} {config.timezone}",
    )


def deadline_missed_alert(
    *, integration: str, finish_by: str, timezone: str, context: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The alert for a missed finish-by deadline; ``None`` for runs the promise does not cover."""
    dag_run = dict((context or {}).get("dag_run") or {})
    if dag_run.get("run_type") not in (None, "scheduled"):
        return None
    dag_id, run_id = dag_run.get("dag_id"), dag_run.get("dag_run_id") or dag_run.get("run_id")
    state = dag_run.get("state") or "running"
    cause = (f"Grade sync {integration} is late: run {run_id} has not finished by {finish_by} {timezone} "
             f"(state {state}); IC may be slow or the run waited behind another: watch it in the grid, and "
             "if it is stuck, clear the slow task")
    return {
        "event": "deadline_missed",
        "integration": integration,
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": None,
        "logical_date": dag_run.get("logical_date"),
        "run_type": dag_run.get("run_type"),
        "deadline": _iso(((context or {}).get("deadline") or {}).get("deadline_time")),
        "kind": "deadline_missed",
        "cause": cause,
        "title": f"[gradesync] {integration}: nightly run not finished by {finish_by}",
        "text": cause,
    }


async def deadline_missed(
    *,
    integration: str,
    connection_id: str,
    finish_by: str,
    timezone: str,
    webhook_connection_id: str | None = None,
    email: list[str] | None = None,
    smtp_connection_id: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> str:
    """Deadline Alert callback (runs in the triggerer): send the late-run alert to every channel."""
    alert = deadline_missed_alert(integration=integration, finish_by=finish_by, timezone=timezone,
                                  context=context)
    if alert is None:
        return "not a scheduled run: no alert"
    log.warning("%s", alert["text"])
    channels: list[Any] = []
    if webhook_connection_id:
        channels.append(WebhookNotifier(webhook_connection_id, integration=integration,
                                        connection_id=connection_id))
    if email:
        channels.append(EmailNotifier(list(email), integration=integration, connection_id=connection_id,
                                      smtp_conn_id=smtp_connection_id))
    sent = []
    for channel in channels:
        try:
            await channel.asend(alert)
            sent.append(type(channel).__name__)
        except Exception as exc:  # noqa: BLE001 - one broken channel must not silence the others
            log.error("Could not deliver the deadline alert through %s: %s", type(channel).__name__,
                      redact(str(exc)))
    return f"sent via {', '.join(sent) or 'no channel'}"


# ---------------------------------------------------------------------------------------------
# Credentials that are about to expire
# ---------------------------------------------------------------------------------------------


def credential_expiry_warning(config: Any, today: date) -> str | None:
    """A warning from ``warn_days_before_expiry`` days before ``credentials_expire_on``, and after it.

    IC credentials expire after a year and renewing them locks the old secret out, so the warning
    says both what to renew and what to update right after.
    """
    alerts = config.alerts
    expires = alerts.credentials_expire_on
    if expires is None:
        return None
    days = (expires - today).days
    conn = config.connection_id
    fix = ("renew them in IC's OneRoster integration, update the connection in Admin → Connections right "
           "away (the old secret stops working) and set alerts.credentials_expire_on to the new date")
    if days < 0:
        ago = -days
        return f"IC credentials of connection {conn} expired on {expires.isoformat()} " \
               f"({ago} day{'s' if ago != 1 else ''} ago): {fix}"
    if days == 0:
        return f"IC credentials of connection {conn} expire today ({expires.isoformat()}): {fix}"
    if days <= alerts.warn_days_before_expiry:
        return f"IC credentials of connection {conn} expire on {expires.isoformat()} " \
               f"({days} day{'s' if days != 1 else ''}): {fix}"
    return None
