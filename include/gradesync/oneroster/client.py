"""OneRoster gradebook client for Infinite Campus: authenticated, throttled, retried page reads.

One ``OneRosterClient`` serves one task. Its ``get_page`` is safe to call from several threads: a
``RequestThrottle`` caps requests in flight, one ``TokenManager`` supplies bearer tokens, and every
page is fetched, fully read and decoded inside one attempt of the retry loop, so a dropped
connection or a truncated/non-JSON body is fetched again and never half-parsed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

import msgspec
import requests
import urllib3
from requests.adapters import HTTPAdapter

from gradesync.entities import get_entity
from gradesync.oneroster.auth import TokenManager, _retry_after, shared_token_manager
from gradesync.oneroster.errors import (
    CredentialsError,
    ExtractionError,
    HTTPStatusError,
    RetryableError,
)
from gradesync.oneroster.retry import RetryPolicy, call_with_retries
from gradesync.oneroster.secrets import redact
from gradesync.oneroster.settings import ICConnectionSettings
from gradesync.oneroster.throttle import RequestThrottle

log = logging.getLogger(__name__)

T = TypeVar("T")
_FIX = "in Admin → Connections"
_RETRYABLE_STATUS = {408, 425, 500, 502, 503, 504}
_USER_AGENT = "gradesync-oneroster/0.1"


@dataclass(frozen=True)
class Page(Generic[T]):
    """One decoded page of a collection and what IC said about the whole collection."""

    collection: str
    offset: int
    limit: int
    total: int | None  # X-Total-Count
    data: T
    size: int  # bytes of the body


class ClientStats:
    """Thread-safe counters: requests sent, retries and why, token fetches, bytes read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.reasons: Counter[str] = Counter()
        self.bytes = 0

    def add_request(self) -> None:
        with self._lock:
            self.requests += 1

    def add_retry(self, reason: str) -> None:
        with self._lock:
            self.retries += 1
            self.reasons[reason] += 1

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests, "retries": self.retries, "reasons": dict(self.reasons),
                    "bytes": self.bytes}


def _imsx_detail(body: bytes) -> tuple[str | None, str]:
    """IC's ``imsx_CodeMinor`` and description from a 1.2 ``imsx_StatusInfo`` or 1.1 ``statusInfoSet``."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None, ""
    minors: list[str] = []
    descriptions: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                lowered = key.lower()
                if lowered == "imsx_codeminorfieldvalue" and isinstance(value, str):
                    minors.append(value)
                elif lowered == "imsx_description" and isinstance(value, str):
                    descriptions.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)
    description = redact("; ".join(descriptions))[:300]
    return (redact(minors[0])[:80] if minors else None), description


def envelope_records(body: bytes, collection: str, decoder: msgspec.json.Decoder | None = None) -> list[Any]:
    """The list under a collection's envelope key; a truncated or foreign body is fetched again."""
    try:
        data = (decoder or _GENERIC_JSON).decode(body)
    except msgspec.DecodeError:
        raise RetryableError("truncated or invalid JSON body", kind="bad_body") from None
    records = data.get(collection) if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise RetryableError(f"body has no {collection!r} list", kind="bad_body")
    return records


_GENERIC_JSON = msgspec.json.Decoder()


def json_envelope(collection: str) -> Callable[[bytes], list[Any]]:
    """Default decoder: the body must be JSON with a list under the collection's envelope key."""

    def decode(body: bytes) -> list[Any]:
        return envelope_records(body, collection)

    return decode


def format_filter_time(value: datetime) -> str:
    """UTC, millisecond precision, truncated (a window start may only move earlier, never skip a record)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def date_filter(since: datetime | None, until: datetime | None) -> str | None:
    """``dateLastModified>'since' AND dateLastModified<='until'`` (either side optional)."""
    parts = []
    if since is not None:
        parts.append(f"dateLastModified>'{format_filter_time(since)}'")
    if until is not None:
        parts.append(f"dateLastModified<='{format_filter_time(until)}'")
    return " AND ".join(parts) or None


class OneRosterClient:
    """Reads gradebook collections of one IC integration; cheap to create, ``close()`` when done."""

    def __init__(
        self,
        settings: ICConnectionSettings,
        *,
        max_concurrency: int = 5,
        retry_policy: RetryPolicy | None = None,
        token_manager: TokenManager | None = None,
        session: requests.Session | None = None,
    ):
        self.settings = settings
        self.max_concurrency = max_concurrency
        self.retry_policy = retry_policy or RetryPolicy()
        self.tokens = token_manager or shared_token_manager(settings)
        self.throttle = RequestThrottle(max_concurrency)
        self.stats = ClientStats()
        self._session = session
        self._session_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"OneRosterClient(conn_id={self.settings.conn_id!r}, api_version={self.api_version!r}, "
                f"max_concurrency={self.max_concurrency})")

    @property
    def api_version(self) -> str:
        return self.settings.api_version

    @property
    def session(self) -> requests.Session:
        """Created on first use; one connection pool sized to the concurrency limit."""
        if self._session is None:
            with self._session_lock:
                if self._session is None:
                    session = requests.Session()
                    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=self.max_concurrency + 2, max_retries=0)
                    session.mount("https://", adapter)
                    session.mount("http://", adapter)
                    session.headers.update({"Accept": "application/json", "User-Agent": _USER_AGENT})
                    self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> OneRosterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- endpoints -----------------------------------------------------------------------------

    def collection_url(self, entity_name: str) -> str:
        """Raises ``UnsupportedEntityError`` (clear message) for entities the version lacks."""
        return self.settings.collection_url(entity_name)

    # -- requests ------------------------------------------------------------------------------

    def get_page(
        self,
        entity_name: str,
        *,
        offset: int = 0,
        limit: int = 100,
        filter: str | None = None,
        sort: str | None = "sourcedId",
        decode: Callable[[bytes], T] | None = None,
    ) -> Page[T]:
        """GET one page (``limit``/``offset``), sorted by ``sort`` ascending, optionally filtered.

        ``decode(body)`` turns the raw body into the caller's form inside the retry loop; it raises
        ``RetryableError`` for a body that must be fetched again.
        """
        entity = get_entity(entity_name)
        url = self.collection_url(entity_name)
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if sort:
            params["sort"] = sort
            params["orderBy"] = "asc"
        if filter:
            params["filter"] = filter
        full_url = f"{url}?{urlencode(params, quote_via=quote, safe='')}"
        decoder: Callable[[bytes], Any] = decode or json_envelope(entity.collection)
        what = f"GET {entity.collection} offset={offset} limit={limit}"
        reauthed = [False]

        def attempt() -> Page[T]:
            data, total, size = self._exchange(full_url, decoder, reauthed, what)
            return Page(entity.collection, offset, limit, total, data, size)

        return call_with_retries(attempt, what=what, policy=self.retry_policy, on_retry=self._on_retry(what))

    def _on_retry(self, what: str) -> Callable[[RetryableError, float, int], None]:
        def on_retry(error: RetryableError, wait: float, attempt: int) -> None:
            self.stats.add_retry(error.kind)
            log.warning("%s: %s; retry %d in %.1fs", what, error.reason, attempt, wait)

        return on_retry

    def _exchange(
        self, url: str, decode: Callable[[bytes], Any], reauthed: list[bool], what: str
    ) -> tuple[Any, int | None, int]:
        """One attempt: token, throttled GET, full read, status handling, decode."""
        with self.throttle.slot():
            # the token is taken once the slot is granted: a wait for Retry-After must not age it
            token = self.tokens.current()
            headers = {"Authorization": f"Bearer {token.access_token.reveal()}"}
            vendor = self.settings.vendor_header
            if vendor:
                headers["x-vendor-authorization"] = vendor
            self.stats.add_request()
            try:
                response = self.session.get(
                    url, headers=headers, timeout=self.settings.timeout, verify=self.settings.verify,
                    allow_redirects=False, stream=True,
                )
                body = _read_body(response)
            except requests.Timeout:
                raise RetryableError("timeout", kind="timeout") from None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError, urllib3.exceptions.HTTPError) as exc:
                raise RetryableError(f"connection dropped ({type(exc).__name__})", kind="connection") from None
        self.stats.add_bytes(len(body))
        status = response.status_code
        if status == 200:
            data = decode(body)
            self.throttle.succeeded()
            return data, _total_count(response), len(body)
        minor, description = _imsx_detail(body)
        detail = f" ({minor}{': ' if minor and description else ''}{description})" if minor or description else ""
        if status == 401:
            if not reauthed[0]:
                reauthed[0] = True
                self.tokens.invalidate(token)
                raise RetryableError("401: token rejected, fetching a new one", kind="401")
            raise CredentialsError(self._unauthorized_message(detail))
        if status == 429:
            retry_after = _retry_after(response)
            self.throttle.throttled(retry_after)
            raise RetryableError(f"429 throttled{detail}", retry_after=retry_after, kind="429")
        if status in _RETRYABLE_STATUS or status >= 500:
            raise RetryableError(f"HTTP {status}{detail}", kind=str(status))
        if status == 403:
            raise CredentialsError(
                f"IC refused {what} for connection {self.settings.conn_id} (HTTP 403{detail}): the "
                f"integration's client lacks permission for this collection; enable it (and Grade Sync) in "
                f"IC's OneRoster integration or request the gradebook scope"
            )
        if 300 <= status < 400:
            raise HTTPStatusError(
                f"{what}: IC redirected (HTTP {status}) to {response.headers.get('Location', '?')}; set the "
                f"Service URL/gradebook_url of connection {self.settings.conn_id} to the final address {_FIX}",
                status=status,
            )
        if status == 404:
            raise HTTPStatusError(
                f"{what}: HTTP 404{detail} at {url.split('?', 1)[0]}; check the Service URL (host) or extra "
                f"gradebook_url of connection {self.settings.conn_id} {_FIX}",
                status=status, code_minor=minor,
            )
        raise HTTPStatusError(f"{what}: IC answered HTTP {status}{detail}", status=status, code_minor=minor)

    def _unauthorized_message(self, detail: str) -> str:
        conn = self.settings.conn_id
        if self.settings.vendor_header:
            return (
                f"IC answered 401{detail} to a gradebook request of connection {conn} even with a freshly "
                f"fetched token: the vendor key/secret (extra vendor_key/vendor_secret, sent as "
                f"x-vendor-authorization) is wrong or not enabled for this integration, or the client "
                f"lacks gradebook access; fix it {_FIX}"
            )
        return (
            f"IC answered 401{detail} to a gradebook request of connection {conn} even with a freshly fetched "
            f"token: the client id/secret is not allowed to read the gradebook; check the integration in IC "
            f"and login/password {_FIX}"
        )


def _read_body(response: requests.Response) -> bytes:
    """The whole body in one read (not requests' 10 kB chunks).

    Every chunk is a return to Python that must win the GIL back from the thread decoding the
    previous page; one ``read()`` lets the socket loop run in C. A body shorter than its
    Content-Length raises (urllib3 enforces the length), so it is fetched again. A fully read
    response hands its connection back to the pool; a failed one closes it.
    """
    if response.raw is None or response._content_consumed:
        return response.content
    try:
        body = response.raw.read(decode_content=True)
    except urllib3.exceptions.ReadTimeoutError:
        response.close()
        raise requests.Timeout() from None
    except BaseException:
        response.close()
        raise
    response._content = body  # what .content/.text/.json() would have read
    response._content_consumed = True
    response.close()  # consumed: releases the connection to the pool instead of closing it
    return body


def _total_count(response: requests.Response) -> int | None:
    value = response.headers.get("X-Total-Count")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def check_credentials(settings: ICConnectionSettings, *, retry_policy: RetryPolicy | None = None) -> dict[str, Any]:
    """Prove client id/secret, token URL and vendor key with one fresh token and one gradebook GET.

    Returns secret-free facts (safe for XCom). Raises ``CredentialsError`` (do not retry the task) for
    a setting a person must fix, ``ExtractionError`` when IC is unreachable or failing.
    """
    policy = retry_policy or RetryPolicy(max_attempts=3, max_throttled=5, backoff_max=5.0)
    client = OneRosterClient(settings, max_concurrency=1, retry_policy=policy, token_manager=TokenManager(settings))
    started = time.monotonic()
    try:
        token = call_with_retries(client.tokens.fetch_new, what=f"token request of {settings.conn_id}",
                                  policy=policy)
        probe = "categories"
        try:
            page = client.get_page(probe, limit=1, sort=None)
        except HTTPStatusError as exc:
            if exc.status == 404 or 300 <= exc.status < 400:
                raise CredentialsError(
                    f"the gradebook base {settings.gradebook_base} of connection {settings.conn_id} is not a "
                    f"OneRoster {settings.api_version} gradebook service (HTTP {exc.status}): set host to IC's "
                    f"Service URL (…/rostering/v1p1 or …/rostering/v1p2) or fix extra gradebook_url {_FIX}"
                ) from None
            raise
    except ExtractionError as exc:
        raise ExtractionError(f"could not verify connection {settings.conn_id}: {exc}") from None
    finally:
        client.close()
    info = {
        "conn_id": settings.conn_id,
        "api_version": settings.api_version,
        "expires_in": token.expires_in,
        "scopes": list(token.scopes),
        "gradebook_base": settings.gradebook_base,
        "gradebook_reachable": True,
        "vendor_header": settings.vendor_header is not None,
        "probe": probe,
        "probe_total": page.total,
        "checked_at": datetime.now(timezone.utc).isoformat(),
        "seconds": round(time.monotonic() - started, 3),
    }
    if settings.api_version == "1.2" and token.scopes and not any("gradebook" in s for s in token.scopes):
        info["warning"] = "the token carries no gradebook scope"
    log.info("Credentials of %s verified: token valid %ss, gradebook reachable at %s", settings.conn_id,
             token.expires_in, settings.gradebook_base)
    return info
