"""IC connection settings: an ordinary Airflow connection read into one typed, secret-safe object.

Connection contract (see the README): host = the Service URL exactly as IC shows it, login/password
= OAuth client id/secret, extra ``token_url`` (IC's Authentication URL), for OneRoster 1.2 also
``vendor_key``/``vendor_secret``, optionally ``gradebook_url``, ``scope``, ``timeout`` (seconds, or
``[connect, read]``), ``verify`` (TLS verification, bool or CA bundle path) and ``token_auth``
(``basic``: client id/secret as HTTP Basic auth, the OAuth default; ``body``: in the form body).

Unlike Airflow's HttpHook this never turns extras into HTTP headers, so ``vendor_secret`` cannot
leak into a request to the wrong host or into logged headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from gradesync.entities import API_VERSIONS, entities_for, get_entity
from gradesync.oneroster.errors import CredentialsError, UnsupportedEntityError
from gradesync.oneroster.secrets import Secret, register_basic_auth, register_secret

_URL_VERSION = {"1.1": "v1p1", "1.2": "v1p2"}
_DEFAULT_TIMEOUT = (10.0, 120.0)
_FIX = "in Admin → Connections"


class ConnectionLike(Protocol):
    """What we read from an Airflow connection (``airflow.sdk.Connection`` or ``models.Connection``)."""

    conn_id: str
    host: str | None
    login: str | None
    password: str | None
    schema: str | None
    port: int | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


def infer_api_version(service_url: str) -> str | None:
    """``1.1``/``1.2`` from the ``v1p1``/``v1p2`` at the end of a Service URL, else ``None``."""
    match = re.search(r"/v1p([12])/?$", service_url)
    return f"1.{match.group(1)}" if match else None


def _parse_timeout(value: Any, conn_id: str) -> tuple[float, float]:
    if value is None or value == "":
        return _DEFAULT_TIMEOUT
    try:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return float(value[0]), float(value[1])
        seconds = float(value)
        return min(seconds, _DEFAULT_TIMEOUT[0]), seconds
    except (TypeError, ValueError):
        raise CredentialsError(
            f"connection {conn_id}: extra timeout must be seconds or [connect, read], got {value!r}; fix it {_FIX}"
        ) from None


def _parse_verify(value: Any) -> bool | str:
    if value is None:
        return True
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    return value if isinstance(value, (bool, str)) else bool(value)


@dataclass(frozen=True)
class ICConnectionSettings:
    """Everything the client needs to talk to one IC integration; ``repr`` shows no secret."""

    conn_id: str
    api_version: str
    service_url: str
    token_url: str
    client_id: str
    client_secret: Secret = field(repr=False)
    vendor_key: str | None = None
    vendor_secret: Secret | None = field(default=None, repr=False)
    gradebook_url: str | None = None
    scope: str | None = None
    token_auth: str = "basic"
    timeout: tuple[float, float] = _DEFAULT_TIMEOUT
    verify: bool | str = True

    def __post_init__(self) -> None:
        if self.api_version not in API_VERSIONS:
            raise CredentialsError(
                f"connection {self.conn_id}: unknown OneRoster version {self.api_version!r}; use 1.1 or 1.2"
            )
        register_basic_auth(self.client_id, self.client_secret.reveal())
        if self.vendor_header is not None:
            register_secret(self.vendor_header)

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_connection(cls, conn: ConnectionLike, api_version: str | None = None) -> ICConnectionSettings:
        """Read and check an Airflow connection; a missing or malformed setting raises ``CredentialsError``.

        ``api_version`` defaults to the connection's extra ``api_version``, else the ``v1p1``/``v1p2``
        the Service URL ends with.
        """
        conn_id = getattr(conn, "conn_id", None) or "<unnamed>"
        extra = dict(conn.extra_dejson or {})
        service_url = _service_url(conn, conn_id)
        version = api_version or extra.get("api_version") or infer_api_version(service_url)
        if version is None:
            raise CredentialsError(
                f"connection {conn_id}: cannot tell the OneRoster version; pass api_version or end the "
                f"Service URL (host) with /v1p1 or /v1p2 {_FIX}"
            )
        version = str(version)
        if version not in API_VERSIONS:
            raise CredentialsError(f"connection {conn_id}: unknown OneRoster version {version!r}; use 1.1 or 1.2")
        url_version = infer_api_version(service_url)
        if url_version is not None and url_version != version and not extra.get("gradebook_url"):
            raise CredentialsError(
                f"connection {conn_id}: the Service URL ends with /{_URL_VERSION[url_version]} but the "
                f"integration uses OneRoster {version}; use the {version} Service URL from IC {_FIX}"
            )
        if not conn.login:
            raise CredentialsError(f"connection {conn_id}: login (the OAuth client id) is empty; set it {_FIX}")
        if not conn.password:
            raise CredentialsError(
                f"connection {conn_id}: password (the OAuth client secret) is empty; set it {_FIX}"
            )
        token_url = str(extra.get("token_url") or "").strip()
        if not token_url:
            raise CredentialsError(
                f"connection {conn_id}: extra token_url is missing; set it to IC's Authentication URL "
                f"(https://<host>/campus/oauth2/token?appName=<appName>) {_FIX}"
            )
        _check_url(token_url, conn_id, "extra token_url (IC's Authentication URL)")
        vendor_key = str(extra.get("vendor_key") or "").strip() or None
        vendor_secret_text = str(extra.get("vendor_secret") or "")
        if version == "1.2" and (not vendor_key or not vendor_secret_text):
            missing = " and ".join(
                name for name, value in (("vendor_key", vendor_key), ("vendor_secret", vendor_secret_text)) if not value
            )
            raise CredentialsError(
                f"connection {conn_id}: extra {missing} missing; OneRoster 1.2 gradebook calls need IC's vendor "
                f"key and secret (x-vendor-authorization); set them {_FIX}"
            )
        gradebook_url = str(extra.get("gradebook_url") or "").strip().rstrip("/") or None
        if gradebook_url:
            _check_url(gradebook_url, conn_id, "extra gradebook_url")
        token_auth = str(extra.get("token_auth") or "basic").lower()
        if token_auth not in ("basic", "body"):
            raise CredentialsError(f"connection {conn_id}: extra token_auth must be 'basic' or 'body'")
        return cls(
            conn_id=conn_id,
            api_version=version,
            service_url=service_url,
            token_url=token_url,
            client_id=str(conn.login),
            client_secret=Secret(str(conn.password)),
            vendor_key=vendor_key if version == "1.2" else None,
            vendor_secret=Secret(vendor_secret_text) if version == "1.2" and vendor_secret_text else None,
            gradebook_url=gradebook_url,
            scope=str(extra["scope"]) if extra.get("scope") else None,
            token_auth=token_auth,
            timeout=_parse_timeout(extra.get("timeout"), conn_id),
            verify=_parse_verify(extra.get("verify", extra.get("verify_ssl"))),
        )

    # -- derived -------------------------------------------------------------------------------

    @property
    def gradebook_base(self) -> str:
        """Where gradebook collections live: ``gradebook_url``, else derived from the Service URL."""
        if self.gradebook_url:
            return self.gradebook_url
        if self.api_version == "1.1":
            return self.service_url
        head, sep, tail = self.service_url.rpartition("/rostering/")
        if not sep:
            return self.service_url
        return f"{head}/gradebook/{tail}"

    @property
    def vendor_header(self) -> str | None:
        """``key:secret`` for ``x-vendor-authorization`` (1.2 gradebook calls only)."""
        if self.api_version != "1.2" or not self.vendor_key or not self.vendor_secret:
            return None
        return f"{self.vendor_key}:{self.vendor_secret.reveal()}"

    def collection_url(self, entity_name: str) -> str:
        """Collection endpoint of an entity; an entity the version lacks raises a clear error, not a 404."""
        entity = get_entity(entity_name)
        if self.api_version not in entity.versions:
            raise UnsupportedEntityError(
                f"{entity_name} is not part of OneRoster {self.api_version} (connection {self.conn_id}); "
                f"it serves {', '.join(entities_for(self.api_version))}. Remove {entity_name} from the "
                f"integration's entities or move the integration to OneRoster "
                f"{', '.join(v for v in entity.versions)}."
            )
        return f"{self.gradebook_base}/{entity.collection}"

    def describe(self) -> dict[str, Any]:
        """Secret-free summary for logs and XCom."""
        return {
            "conn_id": self.conn_id,
            "api_version": self.api_version,
            "service_url": self.service_url,
            "gradebook_base": self.gradebook_base,
            "token_url": self.token_url,
            "client_id": self.client_id,
            "vendor_key": self.vendor_key,
        }


def _check_url(url: str, conn_id: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CredentialsError(f"connection {conn_id}: {what} must be an http(s) URL, got {url!r}; fix it {_FIX}")


def _service_url(conn: ConnectionLike, conn_id: str) -> str:
    host = (conn.host or "").strip()
    if not host:
        raise CredentialsError(
            f"connection {conn_id}: host is empty; set it to IC's Service URL "
            f"(https://<host>/campus/api/ims/oneroster/rostering/v1p2) {_FIX}"
        )
    if "://" not in host:
        scheme = (conn.schema or "https").strip() or "https"
        host = f"{scheme}://{host}"
        if conn.port:
            parts = urlsplit(host)
            host = parts._replace(netloc=f"{parts.hostname}:{conn.port}").geturl()
    url = host.rstrip("/")
    _check_url(url, conn_id, "host (IC's Service URL)")
    return url
