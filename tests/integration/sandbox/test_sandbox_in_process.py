"""``SandboxServer``: the same server on a thread of the test process, for cheap unit-style use."""

from __future__ import annotations

import requests

from gradesync.sandbox import SandboxServer
from gradesync.sandbox.generator import HREF_MARKER


def test_in_process_server_serves_its_store_and_stops() -> None:
    with SandboxServer(api="1.1", preset="tiny", seed=3, faults={"throttle_every": 3}) as server:
        info = server.info()
        token = requests.post(info["token_url"], data={"grant_type": "client_credentials"},
                              auth=(info["client_id"], info["client_secret"]), timeout=10).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        statuses = [requests.get(f"{info['service_url']}/categories", headers=headers, timeout=10).status_code
                    for _ in range(3)]
        assert statuses == [200, 200, 429]
        body = requests.get(f"{info['service_url']}/lineItems", headers=headers, params={"limit": 500},
                            timeout=10).json()
        assert server.app is not None
        truth = server.app.store.records("lineItems")  # stored form: hrefs relative to the OneRoster root
        assert [r["sourcedId"] for r in body["lineItems"]] == [t["sourcedId"] for t in truth]
        root = f"{server.base_url}/campus/api/ims/oneroster/"
        assert body["lineItems"][0]["class"]["href"] == truth[0]["class"]["href"].replace(HREF_MARKER, root)
        base = server.base_url
    try:
        requests.get(f"{base}/_sandbox/health", timeout=2)
        raise AssertionError("the server should be stopped")
    except requests.ConnectionError:
        pass
