"""Exceptions of the OneRoster client.

Two families matter to the DAG: ``CredentialsError`` is a setting that a person must fix (the task
fails at once, no Airflow retries), ``ExtractionError`` is everything else that went wrong after the
client's own bounded retries (Airflow may retry the task). Messages never contain secrets: they are
built from setting *names*, status codes and IC's redacted status descriptions.
"""

from __future__ import annotations


class OneRosterError(Exception):
    """Base class of every error the OneRoster client raises on purpose."""


class CredentialsError(OneRosterError):
    """A connection setting is wrong (client id/secret, token URL, vendor key, Service URL).

    Not retryable: the message says which setting to change and where.
    """


class ExtractionError(OneRosterError):
    """IC could not be read completely and correctly, even after bounded retries."""


class UnsupportedEntityError(ExtractionError, ValueError):
    """The entity does not exist in the connection's OneRoster version (e.g. assessments in 1.1)."""


class HTTPStatusError(ExtractionError):
    """IC answered a non-retryable HTTP status; ``status`` and IC's ``code_minor`` are kept for callers."""

    def __init__(self, message: str, *, status: int, code_minor: str | None = None):
        super().__init__(message)
        self.status = status
        self.code_minor = code_minor


class RetryableError(OneRosterError):
    """One attempt failed in a way worth repeating (429, 5xx, timeout, dropped or truncated response).

    ``reason`` is short and secret-free (it goes into logs and retry statistics); ``retry_after`` is the
    server's Retry-After in seconds when it sent one.
    """

    def __init__(self, reason: str, *, retry_after: float | None = None, kind: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.kind = kind or reason.split(" ", 1)[0]
