"""OAuth 2.0 client-credentials tokens for IC, fetched with requests-oauthlib and kept in memory only.

How tokens flow (docs/credentials-and-tokens.md has the why): each process that talks to IC holds one
``TokenManager`` per credential (shared by every client of that process). It fetches a token on first
use, fetches a new one when less than ``min(60 s, 20 % of expires_in)`` of its life is left, and
again (once per request) when IC answers 401. Concurrent threads share one fetch. Tokens live in this
object only: never in XCom, Variables, files or logs (they are registered with the secrets masker,
and requests-oauthlib's DEBUG logging is capped).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from oauthlib.oauth2 import BackendApplicationClient, OAuth2Error
from requests_oauthlib import OAuth2Session

from gradesync.oneroster.errors import CredentialsError, RetryableError
from gradesync.oneroster.secrets import Secret, install_log_guards, redact
from gradesync.oneroster.settings import ICConnectionSettings

log = logging.getLogger(__name__)

_FIX = "in Admin → Connections"
_CLIENT_ERRORS = {"invalid_client", "unauthorized_client", "invalid_grant", "access_denied"}


@dataclass(frozen=True)
class Token:
    """One bearer token; ``repr`` hides the value."""

    access_token: Secret = field(repr=False)
    expires_in: float | None
    scopes: tuple[str, ...]
    obtained_at: float  # monotonic clock
    generation: int

    def refresh_due(self, now: float) -> bool:
        if self.expires_in is None:
            return False
        margin = min(60.0, 0.2 * self.expires_in)
        return now >= self.obtained_at + self.expires_in - margin

    def info(self) -> dict[str, Any]:
        """Secret-free facts about the token (safe for XCom)."""
        return {"expires_in": self.expires_in, "scopes": list(self.scopes), "generation": self.generation}


class _ResponseCheck:
    """requests-oauthlib compliance hook: classify the token endpoint's answer before oauthlib parses it."""

    def __init__(self, settings: ICConnectionSettings):
        self.settings = settings

    def __call__(self, response: requests.Response) -> requests.Response:
        status = response.status_code
        if status == 429 or status >= 500:
            raise RetryableError(f"{status} from the token URL", retry_after=_retry_after(response),
                                 kind="429" if status == 429 else str(status))
        content_type = response.headers.get("Content-Type", "")
        if status in (400, 401, 403) and "json" in content_type:
            return response  # an OAuth error body: oauthlib raises the matching OAuth2Error
        if status in (401, 403):
            raise CredentialsError(
                f"IC rejected the client id/secret of connection {self.settings.conn_id} (HTTP {status} from "
                f"the token URL): renew the secret or fix login/password {_FIX}"
            )
        if status >= 300 or "json" not in content_type:
            raise CredentialsError(
                f"the token URL of connection {self.settings.conn_id} ({self.settings.token_url}) answered "
                f"HTTP {status} ({content_type or 'no content type'}), not an OAuth token: set extra token_url "
                f"to IC's Authentication URL (https://<host>/campus/oauth2/token?appName=<appName>) {_FIX}"
            )
        return response


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


class TokenManager:
    """Holds the current token of one credential and fetches a new one when it is due or rejected."""

    def __init__(
        self,
        settings: ICConnectionSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        session_factory: Callable[[], OAuth2Session] | None = None,
    ):
        install_log_guards()
        self.settings = settings
        self._clock = clock
        self._session_factory = session_factory
        self._lock = threading.Lock()
        self._token: Token | None = None
        self._generation = 0
        self.fetches = 0

    def __repr__(self) -> str:
        return f"TokenManager(conn_id={self.settings.conn_id!r}, generation={self._generation})"

    def current(self) -> Token:
        """A token that is not about to expire; fetches one (single flight) when needed.

        Raises ``RetryableError`` when the token URL is unreachable or busy, ``CredentialsError`` when
        IC rejects the credentials.
        """
        token = self._token
        if token is not None and not token.refresh_due(self._clock()):
            return token
        with self._lock:
            token = self._token
            if token is not None and not token.refresh_due(self._clock()):
                return token
            if token is not None:
                log.info("Access token of %s is due for renewal; fetching a new one", self.settings.conn_id)
            self._token = self._fetch()
            return self._token

    def invalidate(self, token: Token) -> None:
        """IC rejected ``token``: drop it unless another thread already replaced it."""
        with self._lock:
            if self._token is not None and self._token.generation == token.generation:
                self._token = None

    def fetch_new(self) -> Token:
        """Always fetch a fresh token (used by the credentials check)."""
        with self._lock:
            self._token = self._fetch()
            return self._token

    def _session(self) -> OAuth2Session:
        if self.settings.token_url.startswith("http://"):
            _allow_plain_http(self.settings)
        if self._session_factory is not None:
            return self._session_factory()
        return OAuth2Session(client=BackendApplicationClient(client_id=self.settings.client_id))

    def _fetch(self) -> Token:
        settings = self.settings
        session = self._session()
        session.register_compliance_hook("access_token_response", _ResponseCheck(settings))
        started = self._clock()
        self.fetches += 1
        try:
            raw = session.fetch_token(
                token_url=settings.token_url,
                client_id=settings.client_id,
                client_secret=settings.client_secret.reveal(),
                include_client_id=settings.token_auth == "body",
                scope=settings.scope.split() if settings.scope else None,
                timeout=settings.timeout,
                verify=settings.verify,
            )
        except (RetryableError, CredentialsError):
            raise
        except OAuth2Error as exc:
            raise _oauth_error(settings, exc) from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise RetryableError(f"token URL unreachable ({type(exc).__name__})", kind="connection") from None
        except requests.RequestException as exc:
            raise RetryableError(f"token request failed ({type(exc).__name__})", kind="connection") from None
        except ValueError as exc:  # oauthlib: a body that is no token at all
            raise CredentialsError(
                f"the token URL of connection {settings.conn_id} did not answer with an OAuth token "
                f"({redact(str(exc))[:200]}): check extra token_url {_FIX}"
            ) from None
        finally:
            session.close()
        access = raw.get("access_token")
        if not access:
            raise CredentialsError(
                f"the token URL of connection {settings.conn_id} answered without an access_token: "
                f"check extra token_url {_FIX}"
            )
        expires_in = raw.get("expires_in")
        scope = raw.get("scope") or []
        scopes = tuple(scope.split() if isinstance(scope, str) else scope)
        self._generation += 1
        token = Token(
            access_token=Secret(str(access)),
            expires_in=float(expires_in) if expires_in not in (None, "") else None,
            scopes=scopes,
            obtained_at=started,
            generation=self._generation,
        )
        log.info(
            "Fetched access token #%d for %s (expires in %ss)", token.generation, settings.conn_id,
            "?" if token.expires_in is None else int(token.expires_in),
        )
        return token


_warned_http: set[str] = set()


def _allow_plain_http(settings: ICConnectionSettings) -> None:
    """oauthlib refuses http token URLs unless told otherwise; IC itself is always https.

    A plain-http token URL only makes sense for a local sandbox (or a TLS-terminating sidecar), so it
    is allowed, with a warning, because the connection explicitly asked for it.
    """
    import os
    from urllib.parse import urlsplit

    os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")
    host = urlsplit(settings.token_url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1") and settings.conn_id not in _warned_http:
        _warned_http.add(settings.conn_id)
        log.warning("Connection %s sends its client secret over plain http to %s; use https outside a sandbox",
                    settings.conn_id, host)


def _oauth_error(settings: ICConnectionSettings, exc: OAuth2Error) -> Exception:
    code = getattr(exc, "error", None) or type(exc).__name__
    status = getattr(exc, "status_code", None)
    if code in _CLIENT_ERRORS:
        return CredentialsError(
            f"IC rejected the client id/secret of connection {settings.conn_id} ({code}): renew the secret "
            f"or fix login/password {_FIX}"
        )
    if code == "invalid_scope":
        return CredentialsError(
            f"IC refused the scope requested by connection {settings.conn_id} (invalid_scope): fix or remove "
            f"extra scope {_FIX}"
        )
    if code == "temporarily_unavailable" or code == "server_error":
        return RetryableError(f"token URL reported {code}", kind=str(code))
    detail = redact(str(getattr(exc, "description", "") or ""))[:200]
    return CredentialsError(
        f"the token URL of connection {settings.conn_id} refused the token request ({code}"
        f"{', HTTP ' + str(status) if status else ''}{': ' + detail if detail else ''}): check extra token_url "
        f"and login/password {_FIX}"
    )


_shared: dict[str, TokenManager] = {}
_shared_lock = threading.Lock()


def shared_token_manager(settings: ICConnectionSettings) -> TokenManager:
    """The process-wide manager of one credential, so several clients of one task share a token."""
    fingerprint = hashlib.sha256(
        "\0".join(
            (settings.token_url, settings.client_id, settings.client_secret.reveal(), settings.scope or "",
             settings.token_auth)
        ).encode()
    ).hexdigest()
    with _shared_lock:
        manager = _shared.get(fingerprint)
        if manager is None:
            manager = _shared[fingerprint] = TokenManager(settings)
        return manager
