"""Airflow hook for an Infinite Campus OneRoster integration, in the style of the providers' hooks.

``__init__`` only stores names (safe at DAG parse time); the connection is read on first use and
the client is built lazily by ``get_conn()``. Not an ``HttpHook`` subclass on purpose: HttpHook
sends unknown connection extras as HTTP headers, which would leak ``vendor_secret``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from gradesync.oneroster.client import OneRosterClient, check_credentials
from gradesync.oneroster.errors import OneRosterError
from gradesync.oneroster.retry import RetryPolicy
from gradesync.oneroster.settings import ICConnectionSettings


class OneRosterHook(BaseHook):
    """Reads gradebooks of one IC integration over OneRoster 1.1 or 1.2.

    :param ic_conn_id: Airflow connection: host = IC Service URL, login/password = OAuth client
        id/secret, extra ``token_url``, ``vendor_key``, ``vendor_secret`` (1.2), optional ``gradebook_url``.
    :param api_version: ``"1.1"`` or ``"1.2"``; default: extra ``api_version`` or the Service URL's suffix.
    """

    conn_name_attr = "ic_conn_id"
    default_conn_name = "ic_default"
    conn_type = "oneroster"
    hook_name = "Infinite Campus OneRoster"

    def __init__(self, ic_conn_id: str = default_conn_name, api_version: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.ic_conn_id = ic_conn_id
        self.api_version = api_version
        self._settings: ICConnectionSettings | None = None
        self._client: OneRosterClient | None = None

    def __repr__(self) -> str:
        return f"OneRosterHook(ic_conn_id={self.ic_conn_id!r}, api_version={self.api_version!r})"

    @property
    def settings(self) -> ICConnectionSettings:
        """The connection, read and checked on first use."""
        if self._settings is None:
            conn = self.get_connection(self.ic_conn_id)
            self._settings = ICConnectionSettings.from_connection(conn, self.api_version)
        return self._settings

    def get_client(self, max_concurrency: int = 5, retry_policy: RetryPolicy | None = None) -> OneRosterClient:
        """A new client with its own request limit (the caller closes it)."""
        return OneRosterClient(self.settings, max_concurrency=max_concurrency, retry_policy=retry_policy)

    def get_conn(self) -> OneRosterClient:
        """The hook's own client (IC's default limit of 5 concurrent requests), created once."""
        if self._client is None:
            self._client = self.get_client()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def check_credentials(self) -> dict[str, Any]:
        """See ``gradesync.oneroster.check_credentials``."""
        return check_credentials(self.settings)

    def test_connection(self) -> tuple[bool, str]:
        """The UI's "Test" button: a fresh token plus one gradebook request."""
        try:
            info = self.check_credentials()
        except OneRosterError as exc:
            return False, str(exc)
        return True, (f"Token valid {info['expires_in']}s; gradebook reachable at {info['gradebook_base']}")

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel the generic connection form for IC's names."""
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {"host": "Service URL", "login": "Client ID", "password": "Client Secret"},
            "placeholders": {
                "host": "https://<host>/campus/api/ims/oneroster/rostering/v1p2",
                "login": "OAuth 2.0 client id from IC's OneRoster integration",
                "password": "OAuth 2.0 client secret",
                "extra": '{"token_url": "https://<host>/campus/oauth2/token?appName=<appName>", '
                '"vendor_key": "...", "vendor_secret": "...", "gradebook_url": "(optional)"}',
            },
        }
