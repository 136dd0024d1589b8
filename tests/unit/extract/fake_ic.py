"""An in-process IC double at the requests transport level (no sockets), for exact, scripted cases.

The live sandbox (tests/integration/extract) is the real test of every path; this double exists
for what a live server cannot do on cue: change data between two given page requests, answer a
given request with a given failure, count exactly what the client sent.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from oauthlib.oauth2 import BackendApplicationClient
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests_oauthlib import OAuth2Session

from gradesync.oneroster import ICConnectionSettings, OneRosterClient, RetryPolicy, TokenManager

SERVICE_12 = "https://ic.example.org/campus/api/ims/oneroster/rostering/v1p2"
SERVICE_11 = "https://ic.example.org/campus/api/ims/oneroster/rostering/v1p1"
TOKEN_URL = "https://ic.example.org/campus/oauth2/token?appName=demo"
CLIENT_ID = "client-abc"
CLIENT_SECRET = "s3cret-client-value-XYZ"
VENDOR_KEY = "vendor-key-1"
VENDOR_SECRET = "vendor-secret-value-QRS"
BASE_TIME = datetime(2026, 11, 1, tzinfo=timezone.utc)


class FakeConnection:
    """Quacks like an Airflow Connection."""

    def __init__(self, conn_id: str = "ic_test", host: str | None = SERVICE_12, login: str | None = CLIENT_ID,
                 password: str | None = CLIENT_SECRET, extra: dict[str, Any] | None = None,
                 schema: str | None = None, port: int | None = None):
        self.conn_id = conn_id
        self.host = host
        self.login = login
        self.password = password
        self.schema = schema
        self.port = port
        self.extra_dejson = extra if extra is not None else {
            "token_url": TOKEN_URL, "vendor_key": VENDOR_KEY, "vendor_secret": VENDOR_SECRET,
        }


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def result_record(n: int, *, modified: datetime | None = None, **overrides: Any) -> dict[str, Any]:
    record = {
        "sourcedId": f"res-{n:07d}",
        "status": "active",
        "dateLastModified": iso(modified or BASE_TIME + timedelta(minutes=n)),
        "metadata": {"ic": {"legacysourceId": str(n)}},
        "lineItem": {"href": "x", "sourcedId": f"li-{n % 7}", "type": "lineItem"},
        "student": {"href": "x", "sourcedId": f"stu-{n % 31}", "type": "user"},
        "class": {"href": "x", "sourcedId": "cls-1", "type": "class"},
        "scoreStatus": "fully graded",
        "score": float(n % 100),
        "scoreDate": "2026-10-01",
        "late": "false",
    }
    record.update(overrides)
    return record


class FakeIC(BaseAdapter):
    """Token endpoint + gradebook collections with OneRoster paging, sorting and dateLastModified filters.

    ``on_page(fake, offset)`` runs before each page is served (to change data at an exact moment);
    ``script`` maps a request number (1-based, API requests only) to a response factory or exception.
    """

    def __init__(self, collections: dict[str, list[dict[str, Any]]] | None = None, *, api: str = "1.2",
                 token_lifetime: int = 3600, max_page: int | None = None, total_header: bool = True, latency: float = 0.0):
        super().__init__()
        self.collections = collections or {}
        self.api = api
        self.token_lifetime = token_lifetime
        self.max_page = max_page
        self.total_header = total_header
        self.latency = latency
        self.lock = threading.Lock()
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.api_requests = 0
        self.log: list[dict[str, Any]] = []
        self.script: dict[int, Callable[[requests.PreparedRequest], Any]] = {}
        self.on_page: Callable[[FakeIC, int], None] | None = None
        self.in_flight = 0
        self.peak = 0
        self.client_secret = CLIENT_SECRET
        self.vendor = f"{VENDOR_KEY}:{VENDOR_SECRET}"

    # -- helpers -------------------------------------------------------------------------------

    def revoke(self) -> None:
        with self.lock:
            self.tokens.clear()

    @staticmethod
    def response(request: requests.PreparedRequest, status: int, body: bytes | dict[str, Any] | str = b"",
                 headers: dict[str, str] | None = None) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        elif isinstance(body, str):
            body = body.encode()
        response._content = body
        response.headers = CaseInsensitiveDict(headers or {})
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response

    # -- transport -----------------------------------------------------------------------------

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        url = urlsplit(request.url or "")
        if url.path.endswith("/oauth2/token"):
            return self._token(request)
        with self.lock:
            self.api_requests += 1
            number = self.api_requests
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            self.log.append({"n": number, "path": url.path, "params": params, "query": url.query,
                             "headers": dict(request.headers)})
            scripted = self.script.pop(number, None)
            if scripted is not None:
                outcome = scripted(request)
                if isinstance(outcome, BaseException):
                    raise outcome
                if outcome is not None:
                    return outcome
            return self._collection(request, url.path, params)
        finally:
            with self.lock:
                self.in_flight -= 1

    def close(self) -> None:
        pass

    def _token(self, request: requests.PreparedRequest) -> requests.Response:
        self.token_requests += 1
        auth = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{self.client_secret}".encode()).decode()
        if auth != expected:
            return self.response(request, 401, {"error": "invalid_client"})
        token = f"tok-{self.token_requests:04d}-{'x' * 24}"
        with self.lock:
            self.tokens.add(token)
        return self.response(request, 200, {"access_token": token, "token_type": "Bearer",
                                            "expires_in": self.token_lifetime,
                                            "scope": "https://purl.imsglobal.org/spec/or/v1p2/scope/gradebook.readonly"})

    def _collection(self, request: requests.PreparedRequest, path: str, params: dict[str, str]) -> requests.Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self.tokens:
            return self.response(request, 401, {"imsx_codeMajor": "failure", "imsx_description": "token expired"})
        if self.api == "1.2" and request.headers.get("x-vendor-authorization") != self.vendor:
            return self.response(request, 401, {"imsx_codeMajor": "failure", "imsx_description": "vendor"})
        name = path.rsplit("/", 1)[-1]
        if name not in self.collections:
            return self.response(request, 404, {"imsx_codeMajor": "failure", "imsx_description": "unknown"})
        offset = int(params.get("offset", 0))
        limit = int(params.get("limit", 100))
        if self.max_page:
            limit = min(limit, self.max_page)
        if self.on_page is not None:
            self.on_page(self, offset)
        if self.latency:
            time.sleep(self.latency)
        with self.lock:
            records = list(self.collections[name])
        records = [r for r in records if _matches(r, params.get("filter"))]
        if params.get("sort"):
            records.sort(key=lambda r: r[params["sort"]])
        page = records[offset: offset + limit]
        headers = {"X-Total-Count": str(len(records))} if self.total_header else {}
        return self.response(request, 200, {name: page}, headers)


_PREDICATE = re.compile(r"^(\w+)(<=|>=|!=|=|<|>)'([^']*)'$")


def _matches(record: dict[str, Any], filter_text: str | None) -> bool:
    if not filter_text:
        return True
    for part in unquote(filter_text).split(" AND "):
        match = _PREDICATE.match(part.strip())
        assert match, part
        field, op, value = match.groups()
        have = record.get(field)
        if field == "dateLastModified":
            try:
                have = datetime.fromisoformat(str(have).replace("Z", "+00:00"))
            except ValueError:
                return False
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        ok = {">": have > value, ">=": have >= value, "<": have < value, "<=": have <= value,
              "=": have == value, "!=": have != value}[op]
        if not ok:
            return False
    return True


def make_client(fake: FakeIC, *, api: str = "1.2", max_concurrency: int = 5,
                policy: RetryPolicy | None = None, conn: FakeConnection | None = None) -> OneRosterClient:
    """A real OneRosterClient whose HTTP goes to ``fake``."""
    if conn is None:
        conn = FakeConnection(host=SERVICE_12 if api == "1.2" else SERVICE_11)
    settings = ICConnectionSettings.from_connection(conn, api)

    def oauth_session() -> OAuth2Session:
        session = OAuth2Session(client=BackendApplicationClient(client_id=settings.client_id))
        session.mount("https://", fake)
        return session

    session = requests.Session()
    session.mount("https://", fake)
    tokens = TokenManager(settings, session_factory=oauth_session)
    return OneRosterClient(settings, max_concurrency=max_concurrency, session=session, token_manager=tokens,
                           retry_policy=policy or RetryPolicy(backoff_initial=0.001, backoff_max=0.005))


