"""OneRoster client for Infinite Campus: settings, OAuth2 tokens, throttling, retries, Airflow hook.

``OneRosterHook`` is imported lazily so the client works (and tests run) without importing Airflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradesync.oneroster.auth import Token, TokenManager
from gradesync.oneroster.client import OneRosterClient, Page, check_credentials, date_filter
from gradesync.oneroster.errors import (
    CredentialsError,
    ExtractionError,
    HTTPStatusError,
    OneRosterError,
    RetryableError,
    UnsupportedEntityError,
)
from gradesync.oneroster.retry import RetryPolicy, call_with_retries
from gradesync.oneroster.settings import ICConnectionSettings
from gradesync.oneroster.throttle import RequestThrottle, in_peak_window, request_concurrency

if TYPE_CHECKING:
    from gradesync.oneroster.hook import OneRosterHook

__all__ = [
    "CredentialsError",
    "ExtractionError",
    "HTTPStatusError",
    "ICConnectionSettings",
    "OneRosterClient",
    "OneRosterError",
    "OneRosterHook",
    "Page",
    "RequestThrottle",
    "RetryPolicy",
    "RetryableError",
    "Token",
    "TokenManager",
    "UnsupportedEntityError",
    "call_with_retries",
    "check_credentials",
    "date_filter",
    "in_peak_window",
    "request_concurrency",
]


def __getattr__(name: str) -> Any:
    if name == "OneRosterHook":
        from gradesync.oneroster.hook import OneRosterHook

        return OneRosterHook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
