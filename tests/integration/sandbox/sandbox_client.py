"""A small OneRoster client for the sandbox's integration tests (kept apart so tests can import it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import requests

from gradesync.sandbox import SandboxProcess

LINK = re.compile(r'<([^>]+)>;\s*rel="(\w+)"')


def links(response: requests.Response) -> dict[str, str]:
    return {rel: url for url, rel in LINK.findall(response.headers.get("Link", ""))}


class OneRosterClient:
    """Just enough client to exercise the server: token, vendor header, paging by Link."""

    def __init__(self, sandbox: SandboxProcess) -> None:
        self.sandbox = sandbox
        self.session = requests.Session()
        self.rostering = sandbox.service_url
        self.gradebook = sandbox.service_url.replace("/rostering/", "/gradebook/") if sandbox.api == "1.2" \
            else sandbox.service_url
        self.authenticate()

    def authenticate(self, **form: str) -> dict[str, Any]:
        response = requests.post(
            self.sandbox.token_url,
            data={"grant_type": "client_credentials", **form},
            auth=(self.sandbox.client_id, self.sandbox.client_secret),
            timeout=30,
        )
        response.raise_for_status()
        token = response.json()
        self.session.headers["Authorization"] = f"Bearer {token['access_token']}"
        if self.sandbox.vendor_key:
            self.session.headers["x-vendor-authorization"] = f"{self.sandbox.vendor_key}:{self.sandbox.vendor_secret}"
        return token

    def get(self, path: str, base: str | None = None, **params: Any) -> requests.Response:
        url = path if path.startswith("http") else f"{base or self.gradebook}/{path.lstrip('/')}"
        return self.session.get(url, params=params or None, timeout=60)

    def pages(self, path: str, base: str | None = None, **params: Any) -> Iterator[requests.Response]:
        response = self.get(path, base, **params)
        while True:
            response.raise_for_status()
            yield response
            following = links(response).get("next")
            if not following:
                return
            response = self.get(following)

    def all(self, path: str, key: str, base: str | None = None, **params: Any) -> list[dict[str, Any]]:
        return [record for page in self.pages(path, base, **params) for record in page.json()[key]]


