"""Run the sandbox as a separate server process, and drive it through its admin HTTP API.

A real process (not a thread) is what the pipeline meets in production: its own GIL, real sockets,
real connection drops. ``SandboxProcess`` starts ``python -m gradesync.sandbox --port 0``, waits for
the ready file the server writes once it has bound a port and generated its data, and stops the
process on exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from gradesync.sandbox.faults import FaultConfig


class SandboxAdmin:
    """Python face of the ``/_sandbox`` admin endpoints (no auth: the sandbox holds only fake data)."""

    def __init__(self, base_url: str, session: requests.Session | None = None, timeout: float = 120.0) -> None:
        self.admin_url = base_url.rstrip("/") + "/_sandbox"
        self.session = session or requests.Session()
        self.timeout = timeout

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        response = self.session.request(method, f"{self.admin_url}/{path}", json=payload, timeout=self.timeout)
        if response.status_code >= 400:
            raise ValueError(f"sandbox admin {method} {path} failed: {response.status_code} {response.text}")
        return response.json()

    def records(self, entity: str) -> list[dict[str, Any]]:
        """The served truth for ``entity`` (warehouse or collection name), tombstones included."""
        return self._call("GET", f"records/{entity}")

    def modify(self, entity: str, count: int = 1, ids: list[str] | None = None) -> list[str]:
        return self._call("POST", f"modify/{entity}", {"count": count, "ids": ids})["sourcedIds"]

    def add(self, entity: str, count: int = 1, position: int | None = None) -> list[str]:
        return self._call("POST", f"add/{entity}", {"count": count, "position": position})["sourcedIds"]

    def delete(self, entity: str, count: int = 1, mode: str = "tombstone", ids: list[str] | None = None) -> list[str]:
        return self._call("POST", f"delete/{entity}", {"count": count, "mode": mode, "ids": ids})["sourcedIds"]

    def set_faults(self, faults: dict[str, Any] | FaultConfig, replace: bool = True) -> dict[str, Any]:
        """Switch faults on/off; ``replace=False`` changes only the given keys."""
        values = faults.as_dict() if isinstance(faults, FaultConfig) else dict(faults)
        return self._call("PUT", "faults", {**values, "_replace": replace})

    def faults(self) -> dict[str, Any]:
        return self._call("GET", "faults")

    def revoke_tokens(self) -> int:
        return self._call("POST", "revoke-tokens")["revoked"]

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")

    def reset_stats(self) -> None:
        self._call("POST", "stats/reset")

    def config(self) -> dict[str, Any]:
        return self._call("GET", "config")

    def now(self) -> str:
        """The sandbox clock (the dateLastModified the next change will get, or earlier)."""
        return self._call("GET", "clock")["now"]


class SandboxProcess:
    """A sandbox server in a child process on a free 127.0.0.1 port; a context manager."""

    def __init__(
        self,
        api: str = "1.2",
        preset: str = "tiny",
        seed: int = 42,
        faults: dict[str, Any] | FaultConfig | None = None,
        token_lifetime: int = 3600,
        latency_ms: int = 0,
        max_limit: int = 50_000,
        url_form: str = "campus",
        host: str = "127.0.0.1",
        startup_timeout: float = 180.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.api = api
        self.preset = preset
        self.seed = seed
        self.url_form = url_form
        fault_values = faults.as_dict() if isinstance(faults, FaultConfig) else dict(faults or {})
        if latency_ms:
            fault_values["latency_ms"] = latency_ms
        self._args = [
            "--api", api, "--preset", preset, "--seed", str(seed), "--host", host, "--port", "0",
            "--token-lifetime", str(token_lifetime), "--max-limit", str(max_limit), "--url-form", url_form,
        ]
        for key, value in fault_values.items():
            self._args += ["--fault", f"{key}={value}"]
        self._args += extra_args or []
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.admin: SandboxAdmin

    def start(self) -> SandboxProcess:
        self._tmp = tempfile.TemporaryDirectory(prefix="gradesync-sandbox-")
        ready = Path(self._tmp.name) / "ready.json"
        self.log_path = Path(self._tmp.name) / "server.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
        command = [sys.executable, "-m", "gradesync.sandbox", *self._args, "--ready-file", str(ready)]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while not ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"sandbox exited with {self.process.returncode}: {self.log_path.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"sandbox did not start within {self.startup_timeout}s")
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())
        self.admin = SandboxAdmin(self.base_url)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def base_url(self) -> str:
        return self.info["base_url"]

    @property
    def service_url(self) -> str:
        return self.info["service_url"]

    @property
    def gradebook_url(self) -> str:
        return self.info["gradebook_url"]

    @property
    def token_url(self) -> str:
        return self.info["token_url"]

    @property
    def client_id(self) -> str:
        return self.info["client_id"]

    @property
    def client_secret(self) -> str:
        return self.info["client_secret"]

    @property
    def vendor_key(self) -> str | None:
        return self.info["vendor_key"]

    @property
    def vendor_secret(self) -> str | None:
        return self.info["vendor_secret"]

    def airflow_connection(self) -> dict[str, Any]:
        """The IC connection in Airflow's JSON form (e.g. for ``AIRFLOW_CONN_<ID>``)."""
        return airflow_connection(self.info)


def airflow_connection(info: dict[str, Any]) -> dict[str, Any]:
    """Airflow connection dict from the sandbox's connection info (``/_sandbox/config``)."""
    extra: dict[str, Any] = {"token_url": info["token_url"]}
    if info.get("vendor_key"):
        extra["vendor_key"] = info["vendor_key"]
        extra["vendor_secret"] = info["vendor_secret"]
    return {
        "conn_type": "http",
        "host": info["service_url"],
        "login": info["client_id"],
        "password": info["client_secret"],
        "extra": extra,
    }
