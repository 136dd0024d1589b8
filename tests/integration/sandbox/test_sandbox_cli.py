"""The command line: ``python -m gradesync.sandbox`` prints what to configure and serves it."""

from __future__ import annotations

import json
import subprocess
import sys

import requests


def test_module_entry_point_picks_a_free_port_and_prints_the_connection() -> None:
    command = [sys.executable, "-m", "gradesync.sandbox", "--api", "1.1", "--preset", "tiny", "--port", "0", "--json",
               "--fault", "throttle_every=1000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        assert info["service_url"].endswith("/campus/api/ims/oneroster/rostering/v1p1")
        assert info["vendor_key"] is None and info["client_secret"]
        port = int(info["base_url"].rsplit(":", 1)[1])
        assert port > 0
        assert requests.get(f"{info['base_url']}/_sandbox/health", timeout=10).json() == {"ok": True}
        assert requests.get(f"{info['base_url']}/_sandbox/faults", timeout=10).json()["throttle_every"] == 1000
    finally:
        process.terminate()
        assert process.wait(10) == 0


def test_human_readable_banner_names_every_setting() -> None:
    process = subprocess.Popen([sys.executable, "-m", "gradesync.sandbox", "--port", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = []
        while not lines or not lines[-1].lstrip().startswith("{"):  # the banner ends with the connection JSON
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        banner = "".join(lines)
    finally:
        process.terminate()
        process.wait(10)
    for label in ("Service URL", "Token URL", "Client id", "Client secret", "Vendor key", "Vendor secret", "Port",
                  "Airflow connection"):
        assert label in banner, banner
