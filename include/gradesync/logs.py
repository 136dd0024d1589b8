"""Logs a person can act on: secrets masked, and one closing line that says what broke and what to do.

A failed sync leaves a traceback that only an engineer reads; the district admin reads the last line
(and the alert, which carries the same line). ``failure_line`` maps the failures we know about to one
sentence naming the cause and the fix. ``redact``, ``SecretFilter`` and ``mask_connection`` keep
secret values out of whatever we log, in Airflow (by feeding Airflow's own secrets masker) and
outside it (the CLI, tests, scripts).

Exception classes come from modules that must stay importable without this one, so they are matched
by class name along the MRO and the ``__cause__``/``__context__`` chain rather than imported.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

log = logging.getLogger("gradesync.logs")

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values ("1", "yes") would mask half the log and protect nothing
CONNECTIONS_FIX = "Admin → Connections"
MAX_DETAIL = 300

# Connection extras whose values are secrets (Airflow's own list misses vendor_key and friends).
_SECRET_EXTRA_WORDS = ("secret", "password", "passwd", "token", "authorization", "api_key", "apikey",
                       "private_key", "access_key", "vendor_key", "dsn", "webhook_url")

_registry_lock = threading.Lock()
_registry: set[str] = set()


# ---------------------------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------------------------


def _variants(secret: str) -> Iterator[str]:
    """The forms a secret takes in logs: as is, and URL-encoded (query strings, form bodies)."""
    yield secret
    for encoded in (quote(secret, safe=""), quote_plus(secret, safe="")):
        if encoded != secret:
            yield encoded


def _known_secrets() -> list[str]:
    """Secrets registered here and by the OneRoster client (client secret, vendor header, tokens)."""
    with _registry_lock:
        values = set(_registry)
    try:
        from gradesync.oneroster import secrets as or_secrets

        with or_secrets._lock:
            values |= set(or_secrets._known)
    except Exception:  # noqa: BLE001 - the client package is optional for masking
        pass
    return list(values)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every given secret, and every registered one, replaced by ``***``.

    Longest first, so a secret that contains another is masked whole.
    """
    if not text:
        return text
    candidates = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH} | set(_known_secrets())
    forms = sorted({v for s in candidates for v in _variants(s)}, key=len, reverse=True)
    for value in forms:
        if value in text:
            text = text.replace(value, MASK)
    return text


def register_secret(value: str | None) -> None:
    """Mask ``value`` from now on: in ``redact``/``SecretFilter`` and in Airflow's task logs."""
    if not value or not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    with _registry_lock:
        if value in _registry:
            return
        _registry.add(value)
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    except Exception:  # noqa: BLE001 - masking is defence in depth, never a reason to fail a run
        pass


def secret_values_of(conn: Any) -> list[str]:
    """The secret values of an Airflow connection: password and the extras whose names look secret."""
    values: list[str] = []
    password = getattr(conn, "password", None)
    if password:
        values.append(str(password))
    try:
        extra = conn.extra_dejson or {}
    except Exception:  # noqa: BLE001 - an unparsable extra has no values we could name
        extra = {}

    def walk(obj: Any, key: str = "") -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, str(k))
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, key)
        elif isinstance(obj, str) and _is_secret_key(key):
            values.append(obj)

    walk(extra)
    return [v for v in values if len(v) >= MIN_SECRET_LENGTH]


def _is_secret_key(key: str) -> bool:
    name = key.lower().replace("-", "_")
    if name.endswith("_url") and name != "webhook_url":  # token_url, gradebook_url: addresses, not secrets
        return False
    return any(word in name for word in _SECRET_EXTRA_WORDS)


def mask_connection(conn: Any) -> list[str]:
    """Register every secret value of ``conn`` (see ``secret_values_of``); returns them for local use.

    Airflow masks a connection's password and its whole extra string when a task fetches it, but not
    a secret *inside* the extra JSON (``vendor_secret``, a webhook token); this does.
    """
    values = secret_values_of(conn)
    for value in values:
        register_secret(value)
    return values


class SecretFilter(logging.Filter):
    """A logging filter that rewrites records so no known secret reaches a handler.

    Install it on handlers (``install_secret_filter``): filters on a logger do not see the records of
    its child loggers.
    """

    def __init__(self, secrets: Iterable[str | None] = ()):
        super().__init__()
        self.secrets = {s for s in secrets if s}
        self._formatter = logging.Formatter()

    def add(self, secret: str | None) -> None:
        if secret:
            self.secrets.add(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logged as is
            return True
        cleaned = redact(message, self.secrets)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


def install_secret_filter(
    secrets: Iterable[str | None] = (), *, logger: logging.Logger | None = None
) -> SecretFilter:
    """Add one ``SecretFilter`` to every handler of ``logger`` (default: the root logger)."""
    target = logger or logging.getLogger()
    existing = next((f for h in target.handlers for f in h.filters if isinstance(f, SecretFilter)), None)
    flt = existing or SecretFilter()
    for secret in secrets:
        flt.add(secret)
    for handler in target.handlers:
        if flt not in handler.filters:
            handler.addFilter(flt)
    return flt


# ---------------------------------------------------------------------------------------------
# The closing line of a failed run
# ---------------------------------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first (``raise X from None`` still keeps ``__context__``)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _find(exc: BaseException, *names: str) -> BaseException | None:
    for item in _chain(exc):
        if _class_names(item) & set(names):
            return item
    return None


def _one_line(text: str, limit: int = MAX_DETAIL) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return _one_line(text)


_UNREACHABLE = re.compile(
    r"unreachable|connection (?:refused|dropped|reset|aborted)|name or service not known|"
    r"nodename nor servname|temporary failure in name resolution|no route to host|network is unreachable|"
    r"failed to establish a new connection|max retries exceeded|ConnectionError|NewConnectionError",
    re.IGNORECASE,
)
_TIMEOUT = re.compile(r"timed? ?out|timeout", re.IGNORECASE)
_SERVER_ERROR = re.compile(r"HTTP (5\d\d)|\b(5\d\d)\b(?: from| server)", re.IGNORECASE)
_THROTTLED = re.compile(r"\b429\b|throttl", re.IGNORECASE)
_MISSING_CONN = re.compile(r"conn(?:ection)?_?id [`'\"]?([\w.-]+)[`'\"]? (?:isn't|is not) defined", re.IGNORECASE)


def failure_kind(exc: BaseException) -> str:
    """A short, stable name for the kind of failure (``credentials``, ``ic_unreachable``, ...).

    Alerts carry it so a receiving system can route or group them without parsing sentences.
    """
    return _classify(exc)[0]


def failure_line(
    exc: BaseException,
    *,
    integration: str,
    connection_id: str,
    warehouse_connection_id: str | None = None,
    secrets: Iterable[str | None] = (),
) -> str:
    """One sentence, no secrets, no newlines: what broke and what to do about it.

    Example: ``Grade sync district_a failed: IC rejected the client id/secret of connection
    ic_district_a (HTTP 401 from the token URL): renew the secret or fix login/password in Admin →
    Connections``.
    """
    _, sentence = _classify(exc, connection_id=connection_id, warehouse_connection_id=warehouse_connection_id)
    return redact(f"Grade sync {integration} failed: {sentence}", secrets)


def _classify(
    exc: BaseException, *, connection_id: str = "the IC connection", warehouse_connection_id: str | None = None
) -> tuple[str, str]:
    conn = connection_id
    warehouse = warehouse_connection_id or "the warehouse connection"

    if (found := _find(exc, "InvalidRunParams")) is not None:
        return "invalid_params", (
            f"the run's Params are invalid: {_message(found)}; trigger the DAG again with corrected Params"
        )

    if (found := _find(exc, "ConfigError")) is not None:
        return "config", (
            f"the integration config is invalid: {_message(found)}; fix the YAML and check it with "
            "`gradesync validate`"
        )

    if (found := _find(exc, "CredentialsError")) is not None:
        text = _message(found)
        if CONNECTIONS_FIX not in text and "in IC" not in text:
            text += f"; fix connection {conn} in {CONNECTIONS_FIX}"
        return "credentials", text

    if (found := _find(exc, "RejectRateExceeded")) is not None:
        return "reject_rate", (
            f"too many records were rejected: {_message(found)}; read the reasons in the rejects table, fix "
            "the records in IC or the master_fields rules, or raise reject_rate_threshold if the rate is "
            "expected, then clear the run"
        )

    if (found := _find(exc, "AirflowNotFoundException")) is not None:
        match = _MISSING_CONN.search(str(found))
        missing = match.group(1) if match else conn
        return "connection_missing", (
            f"connection {missing} does not exist: create it in {CONNECTIONS_FIX} (or your secrets backend) "
            "as described under 'Adding an integration' in the README"
        )

    lock = next(
        (e for e in _chain(exc) if any("Lock" in n and ("Held" in n or "Busy" in n or "Locked" in n or "Timeout"
                                                       in n) for n in _class_names(e))),
        None,
    )
    if lock is not None:
        return "warehouse_locked", (
            f"another run holds the warehouse lock of this integration ({_message(lock)}): let that run finish, "
            "then clear this task; a dead run's lock is taken over automatically (see 'Warehouse lock' in "
            "docs/operations.md)"
        )

    if _find(exc, "AirflowTaskTimeout") is not None:
        return "task_timeout", (
            "the task ran past its execution_timeout: IC answered slowly or the district is large; clear it "
            "to rerun off-peak, and if it keeps happening raise extraction.page_size or the timeout"
        )

    found = _find(exc, "OperationalError", "InterfaceError", "DatabaseError")
    if found is not None and type(found).__module__.split(".")[0] in ("sqlalchemy", "psycopg", "psycopg2", "sqlite3"):
        return "warehouse", (
            f"the warehouse refused or dropped the connection ({_first_line(found)}): check connection "
            f"{warehouse} in {CONNECTIONS_FIX} and that the database is up, then clear the task"
        )

    chain_text = " | ".join(f"{type(e).__name__}: {e}" for e in _chain(exc))
    is_extraction = _find(exc, "ExtractionError", "RetryableError", "OneRosterError") is not None
    network = _network_kind(exc)

    if network == "timeout" or (network is None and is_extraction and _TIMEOUT.search(chain_text)):
        return "ic_timeout", (
            f"IC did not answer in time on connection {conn} ({_message(exc)}): IC is slow or overloaded; clear "
            "the task to retry, preferably off-peak, or raise the connection's extra timeout"
        )

    if network == "unreachable" or (is_extraction and _UNREACHABLE.search(chain_text)):
        return "ic_unreachable", (
            f"IC could not be reached on connection {conn} ({_message(exc)}): check the Service URL (host) in "
            f"{CONNECTIONS_FIX} and that IC is reachable from the Airflow workers (DNS, firewall, VPN), then "
            "clear the task"
        )

    if is_extraction and (server := _SERVER_ERROR.search(chain_text)):
        status = server.group(1) or server.group(2)
        return "ic_server_error", (
            f"IC kept answering HTTP {status} after every retry on connection {conn}: IC is having trouble; "
            "clear the task later, and ask the district's IC administrator if it lasts"
        )

    if is_extraction and _THROTTLED.search(chain_text):
        return "ic_throttled", (
            f"IC kept throttling requests (HTTP 429) on connection {conn}: lower "
            "extraction.max_concurrent_requests or move the schedule off-peak, then clear the task"
        )

    if is_extraction:
        return "extraction", f"{_message(exc)}; fix what it names, then clear the task"

    return "unexpected", (
        f"{type(exc).__name__}: {_message(exc)}; the traceback above shows where; clear the task to retry, "
        "and report it if it happens again"
    )


_TIMEOUT_CLASSES = {"Timeout", "ReadTimeout", "ConnectTimeout", "TimeoutError", "AsyncTimeoutError"}
_NETWORK_CLASSES = {"ConnectionError", "ConnectionRefusedError", "ConnectionResetError", "gaierror",
                    "NewConnectionError", "MaxRetryError", "ClientConnectorError"}


def _network_kind(exc: BaseException) -> str | None:
    """``timeout`` or ``unreachable`` as decided by the outermost network error in the chain.

    The outermost wins because libraries nest oddly: urllib3's NewConnectionError (connection
    refused) is a subclass of its TimeoutError, while the requests.ConnectionError around it is not.
    """
    for item in _chain(exc):
        names = _class_names(item)
        if names & _TIMEOUT_CLASSES:
            return "timeout"
        if names & _NETWORK_CLASSES:
            return "unreachable"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return _one_line(text[0] if text else type(exc).__name__, 160)
