"""The sandbox HTTP server: IC's OneRoster 1.1/1.2 gradebook API, OAuth token endpoint and admin API.

Built on the standard library's ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive: one thread per
connection gives real concurrency for the pipeline's parallel extractors, and owning the socket lets
the fault injector drop connections and truncate bodies, which ASGI servers do not allow. Records
are stored pre-encoded, so a page of 1,000 results is a ``b",".join`` of slices.
"""

from __future__ import annotations

import base64
import gc
import json
import secrets
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import msgspec

from gradesync.entities import ENTITIES
from gradesync.sandbox.catalog import (
    ALL_SCOPES,
    ASSESSMENT,
    ENVELOPES,
    GRADEBOOK_11,
    GRADEBOOK_12,
    ROSTERING,
    SCOPE_PREFIX,
    known_fields,
)
from gradesync.sandbox.faults import FaultConfig, FaultDecision, FaultInjector
from gradesync.sandbox.generator import HREF_MARKER, Dataset, encode_json, expand_hrefs, generate, href_root
from gradesync.sandbox.query import (
    ApiError,
    ListParams,
    Predicate,
    check_field,
    error_body,
    parse_list_params,
)
from gradesync.sandbox.store import Scope, Store
from gradesync.sandbox.writes import WriteRules

_DECODER = msgspec.json.Decoder()

@dataclass
class SandboxConfig:
    """Everything that shapes one sandbox; the CLI flags map one to one onto these fields."""

    api: str = "1.2"
    preset: str = "tiny"
    seed: int = 42
    host: str = "127.0.0.1"
    port: int = 0
    public_url: str | None = None  # base URL clients use (hrefs, Link headers); default http://host:port
    app_name: str = "sandbox"
    client_id: str = "sandbox-client"
    client_secret: str = "sandbox-secret"
    vendor_key: str = "sandbox-vendor"
    vendor_secret: str = "sandbox-vendor-secret"
    token_lifetime: int = 3600
    max_limit: int = 50_000
    default_limit: int = 100
    api_delete_mode: str = "vanish"  # what an API DELETE does: "vanish" or "tombstone"
    url_form: str = "campus"  # which Service URL to advertise: "campus" or "app"
    faults: FaultConfig = field(default_factory=FaultConfig)


class TokenStore:
    """Bearer tokens with expiry; ``revoke_all`` simulates IC locking a credential out."""

    def __init__(self, lifetime: int) -> None:
        self.lifetime = lifetime
        self._tokens: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()
        self.issued = 0

    def issue(self, scopes: frozenset[str]) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (time.monotonic() + self.lifetime, scopes)
            self.issued += 1
        return token

    def scopes(self, token: str) -> frozenset[str] | None:
        """The token's scopes, or None when unknown, expired or revoked."""
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None:
                return None
            if time.monotonic() >= entry[0]:
                del self._tokens[token]
                return None
            return entry[1]

    def revoke_all(self) -> int:
        with self._lock:
            count = len(self._tokens)
            self._tokens.clear()
            return count


class Stats:
    """Counters the admin API reports: what clients did and what faults they met."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.api_requests = 0
            self.in_flight = 0
            self.max_concurrency = 0
            self.by_status: Counter[int] = Counter()
            self.by_operation: Counter[str] = Counter()
            self.faults: Counter[str] = Counter()
            self.records_served = 0

    def enter(self) -> int:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_concurrency = max(self.max_concurrency, self.in_flight)
            return self.in_flight

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def count(self, counter: str, key: Any, amount: int = 1) -> None:
        with self._lock:
            getattr(self, counter)[key] += amount

    def count_api_request(self) -> None:
        with self._lock:
            self.api_requests += 1

    def add_records(self, n: int) -> None:
        with self._lock:
            self.records_served += n

    def snapshot(self, tokens_issued: int) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "api_requests": self.api_requests,
                "in_flight": self.in_flight,
                "max_concurrency": self.max_concurrency,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_operation": dict(sorted(self.by_operation.items())),
                "faults": dict(sorted(self.faults.items())),
                "records_served": self.records_served,
                "tokens_issued": tokens_issued,
            }


@dataclass
class Route:
    """A resolved API path: which version/base, then the path segments after the base."""

    api: str
    base: str  # "rostering" | "gradebook"
    segments: list[str]


_API_PREFIXES = ("/campus/api/ims/oneroster/", "/ims/oneroster/")


def resolve(path: str) -> Route | None:
    """Map either IC URL form onto (api, base, segments); None when the path is not OneRoster."""
    rest = None
    for prefix in _API_PREFIXES:
        if path.startswith(prefix):
            rest = path[len(prefix):]
            break
    if rest is None and path.startswith("/campus/api/oneroster/"):
        # /campus/api/oneroster/v1p2/<appName>/ims/oneroster/...
        parts = path.split("/", 6)
        if len(parts) == 7 and parts[6].startswith("ims/oneroster/"):
            rest = parts[6][len("ims/oneroster/"):]
    if rest is None:
        return None
    segments = [unquote(s) for s in rest.strip("/").split("/") if s]
    if len(segments) >= 2 and segments[0] in ("rostering", "gradebook") and segments[1] in ("v1p1", "v1p2"):
        return Route("1.1" if segments[1] == "v1p1" else "1.2", segments[0], segments[2:])
    if segments and segments[0] == "v1p1":  # the standard 1.1 base /ims/oneroster/v1p1
        return Route("1.1", "rostering", segments[1:])
    return None


class SandboxApp:
    """Request handling independent of the socket layer: state, auth, faults, routing."""

    def __init__(self, config: SandboxConfig, base_url: str, dataset: Dataset | None = None) -> None:
        self.config = config
        self.base_url = base_url.rstrip("/")
        collecting = gc.isenabled()
        gc.disable()
        try:
            self.dataset = dataset or generate(config.preset, config.seed, config.api)
            self.store = Store(self.dataset)
        finally:
            if collecting:
                gc.enable()
        gc.collect()
        gc.freeze()  # a million long-lived records: keep them out of every later collection's scan
        self.tokens = TokenStore(config.token_lifetime)
        self.faults = FaultInjector(config.faults)
        self.stats = Stats()
        self.rules = WriteRules(self.store)

    # -- URLs and credentials -------------------------------------------------------------------------
    @property
    def api_tag(self) -> str:
        return "v1p2" if self.config.api == "1.2" else "v1p1"

    def service_url(self, url_form: str | None = None, base_url: str | None = None) -> str:
        """The IC Service URL to configure, in either of IC's two URL forms."""
        base = base_url or self.base_url
        form = url_form or self.config.url_form
        if form == "app":
            return (f"{base}/campus/api/oneroster/{self.api_tag}/{self.config.app_name}"
                    f"/ims/oneroster/rostering/{self.api_tag}")
        return f"{base}/campus/api/ims/oneroster/rostering/{self.api_tag}"

    def connection_info(self, base_url: str | None = None) -> dict[str, Any]:
        """URLs and credentials a client needs (what the CLI prints and ``/_sandbox/config`` returns)."""
        c = self.config
        v12 = c.api == "1.2"
        base = base_url or self.base_url
        service = self.service_url(base_url=base)
        return {
            "api": c.api,
            "preset": c.preset,
            "seed": c.seed,
            "base_url": base,
            "service_url": service,
            "gradebook_url": service.replace("/rostering/", "/gradebook/") if v12 else service,
            "token_url": f"{base}/campus/oauth2/token?appName={quote(c.app_name)}",
            "client_id": c.client_id,
            "client_secret": c.client_secret,
            "vendor_key": c.vendor_key if v12 else None,
            "vendor_secret": c.vendor_secret if v12 else None,
            "admin_url": f"{base}/_sandbox",
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gradesync-sandbox"
    sys_version = ""
    app: SandboxApp  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet by default; the admin stats say what happened

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    # -- plumbing ---------------------------------------------------------------------------------------
    def _public_base(self) -> str:
        """The base URL this client used (``Host`` header), unless ``--public-url`` fixes one.

        Inside docker-compose the server binds 0.0.0.0 but clients call it ``ic-sandbox:8000``:
        hrefs and Link headers must use the name the client used.
        """
        if self.app.config.public_url:
            return self.app.base_url
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.app.base_url

    def _href_root(self) -> str:
        return href_root(self._public_base())

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", truncate: str | None = None) -> None:
        self.app.stats.count("by_status", status)
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if truncate == "length":
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        if truncate == "json":
            body = body[: len(body) // 2]
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _send_records(self, blobs: list[bytes], chunk_records: int = 20_000) -> None:
        """A JSON array of records, streamed in chunks: a district dump never exists twice in memory."""
        self.app.stats.count("by_status", 200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        root = self._href_root()
        for start in range(0, max(len(blobs), 1), chunk_records):
            part = b",".join(blobs[start : start + chunk_records])
            piece = (b"[" if start == 0 else b",") + expand_hrefs(part, root)
            if start + chunk_records >= len(blobs):
                piece += b"]"
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _error(self, api: str, err: ApiError, truncate: str | None = None) -> None:
        self._send(err.status, error_body(api, err.code_minor, err.description), err.headers, truncate=truncate)

    def _handle(self, method: str) -> None:
        app = self.app
        in_flight = app.stats.enter()
        try:
            url = urlsplit(self.path)
            path = url.path
            query = parse_qs(url.query, keep_blank_values=True)
            if path.startswith("/_sandbox/") or path == "/_sandbox":
                self._admin(method, path, query)
            elif path.rstrip("/") == "/campus/oauth2/token":
                self._token(method, query)
            else:
                self._api(method, path, url.query, query, in_flight)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            app.stats.leave()

    # -- OAuth ------------------------------------------------------------------------------------------
    def _token(self, method: str, query: dict[str, list[str]]) -> None:
        c = self.app.config
        body = self._read_body()

        def oauth_error(status: int, code: str, description: str) -> None:
            headers = {"Cache-Control": "no-store"}
            if status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="oauth2"'
            self._send(status, encode_json({"error": code, "error_description": description}), headers)

        if method != "POST":
            return oauth_error(405, "invalid_request", "the token endpoint takes POST")
        if query.get("appName", [""])[-1] != c.app_name:
            return oauth_error(400, "invalid_request", f"unknown appName; this sandbox serves appName={c.app_name}")
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        client_id = form.get("client_id", [None])[-1]
        client_secret = form.get("client_secret", [None])[-1]
        authorization = self.headers.get("Authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode()
                user, _, password = decoded.partition(":")
                client_id, client_secret = unquote(user), unquote(password)
            except (ValueError, UnicodeDecodeError):
                return oauth_error(401, "invalid_client", "malformed Basic credentials")
        if form.get("grant_type", [None])[-1] != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
        if client_id != c.client_id or client_secret != c.client_secret:
            return oauth_error(401, "invalid_client", "client authentication failed")
        requested = form.get("scope", [""])[-1].split()
        if requested:
            unknown = [s for s in requested if s not in ALL_SCOPES]
            if unknown:
                return oauth_error(400, "invalid_scope", f"unknown scope {unknown[0]}")
            scopes = frozenset(requested)
        else:
            scopes = frozenset(ALL_SCOPES) if c.api == "1.2" else frozenset()
        token = self.app.tokens.issue(scopes)
        payload = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": c.token_lifetime,
            "scope": " ".join(sorted(scopes)),
        }
        self._send(200, encode_json(payload), {"Cache-Control": "no-store", "Pragma": "no-cache"})

    # -- OneRoster API -----------------------------------------------------------------------------------
    def _api(self, method: str, path: str, raw_query: str, query: dict[str, list[str]], in_flight: int) -> None:
        app = self.app
        api = app.config.api
        route = resolve(path)
        app.stats.count_api_request()
        if route is None or route.api != api:
            self._read_body()  # keep the connection usable for the next request
            return self._error(api, ApiError(404, "unknownobject", f"no OneRoster {api} endpoint at {path}"))
        decision = app.faults.decide(in_flight)
        if app.faults.config.latency_ms:
            time.sleep(app.faults.config.latency_ms / 1000)
        if decision.revoke_now:
            app.tokens.revoke_all()
            app.stats.count("faults", "revoke")
        if decision.status:
            self._read_body()
            return self._fault_status(api, decision)
        if decision.drop:
            app.stats.count("faults", "drop")
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        truncate = app.faults.config.truncate_mode if decision.truncate else None
        if truncate:
            app.stats.count("faults", "truncate")
        try:
            body = self._read_body() if method in ("PUT", "POST") else b""
            self._authorize(route, method)
            self._dispatch(route, method, raw_query, query, body, truncate)
        except ApiError as err:
            self._error(api, err, truncate)

    def _fault_status(self, api: str, decision: FaultDecision) -> None:
        self.app.stats.count("faults", f"{decision.status}:{decision.reason}")
        if decision.status == 429:
            err = ApiError(429, "server_busy", "too many requests; retry later",
                           {"Retry-After": str(self.app.faults.config.retry_after_s)})
        else:
            err = ApiError(decision.status or 500, "internal_server_error", "injected server error")
        self._error(api, err)

    def _authorize(self, route: Route, method: str) -> None:
        app = self.app
        header = self.headers.get("Authorization", "")
        challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        if not header.lower().startswith("bearer "):
            raise ApiError(401, "unauthorisedrequest", "missing bearer token", challenge)
        scopes = app.tokens.scopes(header[7:].strip())
        if scopes is None:
            raise ApiError(401, "unauthorisedrequest", "invalid, expired or revoked access token", challenge)
        if route.api != "1.2" or route.base != "gradebook":
            if route.api == "1.2" and not scopes & {SCOPE_PREFIX + "roster.readonly", SCOPE_PREFIX + "roster-core.readonly"}:
                raise ApiError(403, "forbidden", "token lacks a roster scope")
            return
        vendor = self.headers.get("x-vendor-authorization", "")
        if vendor != f"{app.config.vendor_key}:{app.config.vendor_secret}":
            raise ApiError(401, "unauthorisedrequest",
                           "missing or wrong x-vendor-authorization header (vendorKey:vendorSecret)")
        family = "assessment" if route.segments and route.segments[0] in ASSESSMENT else "gradebook"
        needed = {
            "GET": {f"{family}.readonly", f"{family}-core.readonly"},
            "PUT": {f"{family}.createput"},
            "DELETE": {f"{family}.delete"},
            "POST": {f"{family}.createpost"},
        }.get(method, set())
        if needed and not scopes & {SCOPE_PREFIX + s for s in needed}:
            raise ApiError(403, "forbidden", f"token lacks scope {sorted(needed)[0]}")

    def _collections_for(self, route: Route) -> tuple[str, ...]:
        if route.api == "1.1":
            return ROSTERING + GRADEBOOK_11
        return GRADEBOOK_12 if route.base == "gradebook" else ROSTERING

    def _dispatch(self, route: Route, method: str, raw_query: str, query: dict[str, list[str]], body: bytes,
                  truncate: str | None) -> None:
        segments = route.segments
        served = self._collections_for(route)
        scoped = len(segments) >= 3 and segments[0] in ("classes", "schools", "lineItems")
        if not segments or (segments[0] not in served and not scoped):
            raise ApiError(404, "unknownobject", f"unknown collection {'/'.join(segments) or '(none)'}")
        collection = segments[0]
        if len(segments) == 1:
            if method != "GET":
                raise ApiError(405, "unsupported", f"{method} is not allowed on /{collection}")
            return self._list(route, collection, collection, (), raw_query, query, truncate)
        if len(segments) == 2:
            sourced_id = segments[1]
            if method == "GET":
                return self._single(route, collection, sourced_id, query, truncate)
            if method == "PUT" and collection in served and collection not in ROSTERING:
                return self._put(route, collection, sourced_id, body)
            if method == "DELETE" and collection not in ROSTERING:
                return self._delete(route, collection, sourced_id)
            raise ApiError(405, "unsupported", f"{method} is not allowed on /{collection}/{{id}}")
        target, scopes = self._scoped(route, segments)
        if method == "POST":
            return self._bulk_post(route, segments, target, body)
        if method != "GET":
            raise ApiError(405, "unsupported", f"{method} is not allowed here")
        self._list(route, target, target, scopes, raw_query, query, truncate)

    # -- scoped reads ----------------------------------------------------------------------------------
    def _require(self, collection: str, sourced_id: str) -> None:
        if self.app.store.collection(collection).get(sourced_id) is None:
            raise ApiError(404, "unknownobject", f"unknown {ENVELOPES[collection][1]} {sourced_id!r}")

    def _class_line_items(self, class_id: str) -> frozenset[str]:
        store = self.app.store
        line_items = store.collection("lineItems")
        slots = store.select("lineItems", (Scope("class.sourcedId", frozenset({class_id})),))
        return frozenset(line_items.ids[s] for s in slots)

    def _scoped(self, route: Route, segments: list[str]) -> tuple[str, tuple[Scope, ...]]:
        """Resolve ``/parent/{id}/child[/...]`` to (target collection, scopes); 404 on unknown parents."""
        f = self.app.dataset.factory
        parent, parent_id, *rest = segments
        tail = "/".join(x if i % 2 == 0 else "{id}" for i, x in enumerate(rest))
        shape = f"{parent}/{tail}"
        served = self._collections_for(route)
        gradebook = route.api == "1.1" or route.base == "gradebook"  # 1.1 serves both under one base
        rostering = route.base == "rostering"
        if parent == "classes" and (gradebook or rostering):
            self._require("classes", parent_id)
        if parent == "classes" and gradebook:
            if shape == "classes/lineItems":
                return "lineItems", (Scope("class.sourcedId", frozenset({parent_id})),)
            if shape == "classes/results":
                return "results", (Scope("lineItem.sourcedId", self._class_line_items(parent_id)),)
            if shape == "classes/categories":
                items = self.app.store.select("lineItems", (Scope("class.sourcedId", frozenset({parent_id})),))
                column = self.app.store.collection("lineItems").column("category.sourcedId")
                return "categories", (Scope("sourcedId", frozenset(column[s] for s in items)),)
            if shape == "classes/scoreScales" and route.api == "1.2":
                return "scoreScales", (Scope("class.sourcedId", frozenset({parent_id})),)
            if shape == "classes/lineItems/{id}/results":
                if rest[1] not in self._class_line_items(parent_id):
                    raise ApiError(404, "unknownobject", f"unknown lineItem {rest[1]!r} in class {parent_id!r}")
                return "results", (Scope("lineItem.sourcedId", frozenset({rest[1]})),)
            if shape == "classes/students/{id}/results":
                self._require("users", rest[1])
                return "results", (
                    Scope("lineItem.sourcedId", self._class_line_items(parent_id)),
                    Scope("student.sourcedId", frozenset({rest[1]})),
                )
            if shape == "classes/academicSessions/{id}/results":  # the 1.2 bulk POST's path
                self._require("academicSessions", rest[1])
                return "results", (Scope("lineItem.sourcedId", self._class_line_items(parent_id)),)
        if parent == "classes" and rostering and shape == "classes/students":
            return "users", (Scope("sourcedId", frozenset(f.class_students.get(parent_id, ()))),)
        if parent == "lineItems" and shape == "lineItems/results" and "lineItems" in served:
            self._require("lineItems", parent_id)
            return "results", (Scope("lineItem.sourcedId", frozenset({parent_id})),)
        if parent == "schools":
            self._require("schools", parent_id)
            classes = frozenset(f.school_classes.get(parent_id, ()))
            if shape == "schools/lineItems" and gradebook:
                return "lineItems", (Scope("class.sourcedId", classes),)
            if shape == "schools/scoreScales" and gradebook and route.api == "1.2":
                return "scoreScales", (Scope("class.sourcedId", classes),)
            if shape == "schools/classes" and rostering:
                return "classes", (Scope("school.sourcedId", frozenset({parent_id})),)
            if shape == "schools/students" and rostering:
                return "users", (Scope("sourcedId", frozenset(f.school_students.get(parent_id, ()))),)
        raise ApiError(404, "unknownobject", f"unknown endpoint /{'/'.join(segments)}")

    # -- reads -------------------------------------------------------------------------------------------
    def _list(self, route: Route, collection: str, target: str, scopes: tuple[Scope, ...], raw_query: str,
              query: dict[str, list[str]], truncate: str | None) -> None:
        app = self.app
        params = parse_list_params(query, app.config.max_limit, app.config.default_limit)
        known, refs = known_fields(collection, route.api)
        if params.filter:
            for p in params.filter.predicates:
                check_field(p.field, known, refs, "invalid_filter_field", "filter")
        if params.sort:
            check_field(params.sort, known, refs, "invalid_selection_field", "sort")
        if params.fields:
            for name in params.fields:
                check_field(name, known, frozenset(), "invalid_selection_field", "selection")
        app.stats.count("by_operation", f"list:{target}")
        if app.faults.drift_now(params.offset) and target in GRADEBOOK_12:
            try:
                added = app.store.add(target, app.faults.config.drift_count, position=0)
            except KeyError:
                added = []
            app.stats.count("faults", "drift", len(added))
        store = app.store
        with store.lock:
            slots = store.select(
                target,
                scopes,
                self._stored_form(params.filter.predicates) if params.filter else (),
                params.filter.joiner if params.filter else "AND",
                params.sort,
                params.order_by == "desc",
            )
            total = len(slots)
            page = slots[params.offset: params.offset + params.limit]
            blobs = store.collection(target).blobs
            records = [blobs[s] for s in page]
        app.stats.add_records(len(records))
        if params.fields:
            records = [_select_fields(b, params.fields) for b in records]  # type: ignore[arg-type]
        envelope = ENVELOPES[target][0].encode()
        body = expand_hrefs(b'{"' + envelope + b'":[' + b",".join(records) + b"]}", self._href_root())  # type: ignore[arg-type]
        headers = {"X-Total-Count": str(total)}
        link = self._link_header(raw_query, params, total)
        if link:
            headers["Link"] = link
        self._send(200, body, headers, truncate=truncate)

    def _stored_form(self, predicates: tuple[Predicate, ...]) -> tuple[Predicate, ...]:
        """Filters on hrefs compare against the stored (marker) form of the URL."""
        root = self._href_root()
        return tuple(
            Predicate(p.field, p.op, p.value.replace(root, HREF_MARKER)) if p.field.endswith(".href") else p
            for p in predicates
        )

    def _link_header(self, raw_query: str, params: ListParams, total: int) -> str:
        """RFC 8288 links (next/last/first/prev) keeping every other query parameter, URL-encoded."""
        pairs = [(k, v) for k, v in _ordered_pairs(raw_query) if k not in ("limit", "offset")]
        base = self._public_base() + urlsplit(self.path).path

        def url(offset: int) -> str:
            query = urlencode([*pairs, ("limit", str(params.limit)), ("offset", str(offset))], quote_via=quote)
            return f"<{base}?{query}>"

        links = []
        last_offset = max(0, ((total - 1) // params.limit) * params.limit) if total else 0
        if params.offset + params.limit < total:
            links.append(f'{url(params.offset + params.limit)}; rel="next"')
        links.append(f'{url(last_offset)}; rel="last"')
        links.append(f'{url(0)}; rel="first"')
        if params.offset > 0:
            links.append(f'{url(max(0, params.offset - params.limit))}; rel="prev"')
        return ", ".join(links)

    def _single(self, route: Route, collection: str, sourced_id: str, query: dict[str, list[str]],
                truncate: str | None) -> None:
        app = self.app
        blob = app.store.collection(collection).get(sourced_id)
        app.stats.count("by_operation", f"get:{collection}")
        if blob is None:
            raise ApiError(404, "unknownobject", f"unknown {ENVELOPES[collection][1]} {sourced_id!r}")
        fields_wanted = tuple(f.strip() for raw in query.get("fields", []) for f in raw.split(",") if f.strip())
        if fields_wanted:
            known, _ = known_fields(collection, route.api)
            for name in fields_wanted:
                check_field(name, known, frozenset(), "invalid_selection_field", "selection")
            blob = _select_fields(blob, fields_wanted)
        app.stats.add_records(1)
        body = expand_hrefs(b'{"' + ENVELOPES[collection][1].encode() + b'":' + blob + b"}", self._href_root())
        self._send(200, body, truncate=truncate)

    # -- writes ------------------------------------------------------------------------------------------
    def _parse_record(self, collection: str, body: bytes) -> dict[str, Any]:
        singular = ENVELOPES[collection][1]
        return _enveloped_body(body, singular, dict, f'{{"{singular}": {{...}}}}')

    def _put(self, route: Route, collection: str, sourced_id: str, body: bytes) -> None:
        app = self.app
        record = self._parse_record(collection, body)
        app.stats.count("by_operation", f"put:{collection}")
        created = app.rules.put(collection, sourced_id, record)
        self._send(201 if created else 200, b"")

    def _delete(self, route: Route, collection: str, sourced_id: str) -> None:
        app = self.app
        app.stats.count("by_operation", f"delete:{collection}")
        blob = app.store.collection(collection).get(sourced_id)
        if blob is None:
            raise ApiError(404, "unknownobject", f"unknown {ENVELOPES[collection][1]} {sourced_id!r}")
        app.store.delete(collection, sourced_id, app.config.api_delete_mode)
        self._send(204)

    def _bulk_post(self, route: Route, segments: list[str], target: str, body: bytes) -> None:
        """1.2 bulk creates: the server allocates sourcedIds and answers ``sourcedIdPairs``."""
        if route.api != "1.2" or route.base != "gradebook":
            raise ApiError(405, "unsupported", "POST is not supported here")
        plural = ENVELOPES[target][0]
        items = _enveloped_body(body, plural, list, f'{{"{plural}": [...]}}')
        parent, parent_id = segments[0], segments[1]
        pairs = []
        for record in items:
            if not isinstance(record, dict):
                raise ApiError(400, "invaliddata", f"each of {plural} must be an object")
            record = dict(record)
            if target == "lineItems" and parent == "classes":
                record["class"] = self.app.dataset.factory.ref("class", parent_id)
            if target == "lineItems" and parent == "schools":
                record["school"] = self.app.dataset.factory.ref("org", parent_id)
            if target == "results" and parent == "lineItems":
                record["lineItem"] = self.app.dataset.factory.ref("lineItem", parent_id)
            supplied = str(record.pop("sourcedId", ""))
            allocated = str(uuid.uuid4())
            self.app.rules.put(target, allocated, record)
            pairs.append({"suppliedSourcedId": supplied, "allocatedSourcedId": allocated})
        self.app.stats.count("by_operation", f"post:{target}")
        self._send(201, encode_json({"sourcedIdPairs": pairs}))

    # -- admin --------------------------------------------------------------------------------------------
    def _admin(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        app = self.app
        body = self._read_body()
        parts = [p for p in path.split("/") if p][1:]
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return self._send(400, encode_json({"error": "body is not JSON"}))

        def ok(value: Any, status: int = 200) -> None:
            self._send(status, encode_json(value))

        def collection_of(name: str) -> str:
            for entity in ENTITIES.values():
                if name in (entity.name, entity.collection):
                    if entity.collection not in app.store.collections:
                        raise KeyError(f"{name} is not served by OneRoster {app.config.api}")
                    return entity.collection
            if name in app.store.collections:
                return name
            raise KeyError(f"unknown entity {name!r}")

        try:
            if parts == ["health"]:
                return ok({"ok": True})
            if parts == ["config"]:
                return ok(app.connection_info(self._public_base()))
            if parts == ["stats"] and method == "GET":
                return ok(app.stats.snapshot(app.tokens.issued))
            if parts == ["stats", "reset"] and method == "POST":
                app.stats.reset()
                return ok({"ok": True})
            if parts == ["faults"]:
                if method in ("PUT", "POST"):
                    base = None if payload.pop("_replace", True) else app.faults.config
                    app.faults.configure(FaultConfig.from_mapping(payload, base))
                return ok(app.faults.config.as_dict())
            if parts == ["revoke-tokens"] and method == "POST":
                return ok({"revoked": app.tokens.revoke_all()})
            if parts == ["clock"]:
                return ok({"now": app.store.clock.now_text()})
            if len(parts) == 2 and parts[0] == "records" and method == "GET":
                collection = collection_of(parts[1])
                store = app.store
                with store.lock:
                    coll = store.collection(collection)
                    blobs = [coll.blobs[s] for s in coll.order]
                return self._send_records(blobs)  # type: ignore[arg-type]
            if len(parts) == 2 and parts[0] in ("modify", "add", "delete") and method == "POST":
                collection = collection_of(parts[1])
                count = int(payload.get("count", 1))
                ids = payload.get("ids")
                if parts[0] == "modify":
                    changed = app.store.modify(collection, count, ids)
                elif parts[0] == "add":
                    changed = app.store.add(collection, count, payload.get("position"))
                else:
                    mode = payload.get("mode", "tombstone")
                    targets = ids if ids is not None else app.store.pick(collection, count)
                    changed = [sid for sid in targets if app.store.delete(collection, sid, mode)]
                return ok({"sourcedIds": changed})
        except (KeyError, ValueError) as exc:
            return self._send(400, encode_json({"error": str(exc).strip("'\"")}))
        self._send(404, encode_json({"error": f"unknown admin endpoint {path}"}))


def _ordered_pairs(raw_query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(raw_query, keep_blank_values=True)


def _select_fields(blob: bytes, wanted: tuple[str, ...]) -> bytes:
    record = _DECODER.decode(blob)
    return encode_json({k: v for k, v in record.items() if k in wanted})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class SandboxServer:
    """The sandbox in this process, serving from a background thread (tests, notebooks)."""

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        self.config = config or SandboxConfig()
        for key, value in overrides.items():
            if key == "faults" and isinstance(value, dict):
                value = FaultConfig.from_mapping(value)
            setattr(self.config, key, value)
        if self.config.faults is None:
            self.config.faults = FaultConfig()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.app: SandboxApp | None = None

    def bind(self) -> SandboxApp:
        """Bind the socket (so ``port=0`` resolves) and generate the data for that base URL."""
        httpd = _Server((self.config.host, self.config.port), _Handler, bind_and_activate=True)
        host, port = httpd.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        base_url = self.config.public_url or f"http://{shown}:{port}"
        app = SandboxApp(self.config, base_url)
        httpd.RequestHandlerClass = type("Handler", (_Handler,), {"app": app})
        self._httpd = httpd
        self.app = app
        return app

    def start(self) -> SandboxServer:
        if self._httpd is None:
            self.bind()
        assert self._httpd is not None
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sandbox", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        if self._httpd is None:
            self.bind()
        assert self._httpd is not None
        self._httpd.serve_forever()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self.app is not None, "start() first"
        return self.app.base_url

    def info(self) -> dict[str, Any]:
        assert self.app is not None, "start() first"
        return self.app.connection_info()


def _enveloped_body(body: bytes, key: str, kind: type, shape: str) -> Any:
    """The value under ``key`` of a JSON request body, or IC's 400 ``invaliddata`` naming the shape."""
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        raise ApiError(400, "invaliddata", "request body is not valid JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get(key), kind):
        raise ApiError(400, "invaliddata", f"request body must be {shape}")
    return payload[key]
