"""Benchmark the IC sandbox on the ``district`` preset: result records per second per core, and RSS.

Run: ``python bench/bench_sandbox.py`` (about 1-2 minutes). It starts the sandbox as its own process
(``SandboxProcess``), then a separate client process scans ``/results`` in pages of 1,000 over 5
keep-alive connections (the pipeline's off-peak concurrency), several times.

How cores are counted: the server is one Python process, so "per core" is records served divided by
the CPU seconds (user + system) the server process spent during the scan, read from the kernel. That
figure does not depend on how many cores the machine has or on the client competing for them; the
wall-clock rate is printed next to it. Peak RSS is the kernel's high-water mark (``VmHWM``) of the
server process, which includes generating the data at start-up.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from gradesync.sandbox import SandboxProcess  # noqa: E402

TARGET_RECORDS_PER_CORE = 50_000
TARGET_RSS_BYTES = 2 * 1024**3
PAGE = 1_000


def _scan(args: tuple[str, dict[str, str], list[int]]) -> tuple[int, int]:
    """One connection: fetch the given offsets; returns (records, bytes). Runs in a client process."""
    gradebook, headers, offsets = args
    url = urlsplit(gradebook)
    connection = HTTPConnection(url.hostname, url.port, timeout=120)
    records = size = 0
    for offset in offsets:
        connection.request("GET", f"{url.path}/results?{urlencode({'limit': PAGE, 'offset': offset})}",
                           headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        records += body.count(b'"scoreStatus"')  # one per result record, without parsing the JSON
        size += len(body)
    connection.close()
    return records, size


def _token(sandbox: SandboxProcess) -> dict[str, str]:
    import requests

    token = requests.post(sandbox.token_url, data={"grant_type": "client_credentials"},
                          auth=(sandbox.client_id, sandbox.client_secret), timeout=30).json()["access_token"]
    return {"Authorization": f"Bearer {token}", "x-vendor-authorization": f"{sandbox.vendor_key}:{sandbox.vendor_secret}"}


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return psutil.Process(pid).memory_info().rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pages", type=int, default=300, help="pages of 1,000 results per run")
    parser.add_argument("--connections", type=int, default=5)
    args = parser.parse_args()

    started = time.perf_counter()
    with SandboxProcess(api="1.2", preset="district", seed=42) as sandbox:
        startup = time.perf_counter() - started
        server = psutil.Process(sandbox.pid)
        rss_idle = server.memory_info().rss
        headers = _token(sandbox)
        gradebook = sandbox.service_url.replace("/rostering/", "/gradebook/")
        total = int(json.loads(_fetch_one(gradebook, headers))["total"])
        per_core, wall, bytes_per_record = [], [], []
        with mp.get_context("spawn").Pool(args.connections) as pool:
            pool.map(_scan, [(gradebook, headers, [0])] * args.connections)  # warm up connections and imports
            for run in range(args.runs):
                first = (run * args.pages * PAGE) % max(total - args.pages * PAGE, 1)
                offsets = [first + i * PAGE for i in range(args.pages)]
                chunks = [offsets[i :: args.connections] for i in range(args.connections)]
                cpu_before = sum(server.cpu_times()[:2])
                t0 = time.perf_counter()
                done = pool.map(_scan, [(gradebook, headers, chunk) for chunk in chunks])
                elapsed = time.perf_counter() - t0
                cpu = sum(server.cpu_times()[:2]) - cpu_before
                records = sum(r for r, _ in done)
                per_core.append(records / cpu)
                wall.append(records / elapsed)
                bytes_per_record.append(sum(b for _, b in done) / records)
        rss_peak = _peak_rss(sandbox.pid)
        rss_end = server.memory_info().rss

    def line(name: str, value: str, target: str = "", ok: bool | None = None) -> str:
        verdict = "" if ok is None else ("  OK" if ok else "  MISSED")
        return f"  {name:<38} {value:>16}   {target}{verdict}"

    median_core = statistics.median(per_core)
    print(f"IC sandbox benchmark: district preset ({total:,} results), OneRoster 1.2, pages of {PAGE:,},")
    print(f"  {args.connections} keep-alive connections from a separate client process, {args.runs} runs of "
          f"{args.pages} pages; machine has {os.cpu_count()} cores; server = 1 process.")
    print(line("server start-up (generate + bind)", f"{startup:.1f} s"))
    print(line("records/s per server core (median)", f"{median_core:,.0f}",
               f"target >= {TARGET_RECORDS_PER_CORE:,}", median_core >= TARGET_RECORDS_PER_CORE))
    print(line("  per-run values", ", ".join(f"{x:,.0f}" for x in per_core)))
    print(line("records/s wall clock (median)", f"{statistics.median(wall):,.0f}"))
    print(line("bytes per result record (median)", f"{statistics.median(bytes_per_record):,.0f}"))
    print(line("server RSS after start-up", f"{rss_idle / 1024**2:,.0f} MiB"))
    print(line("server RSS at the end", f"{rss_end / 1024**2:,.0f} MiB"))
    print(line("server peak RSS (VmHWM)", f"{rss_peak / 1024**2:,.0f} MiB",
               f"target < {TARGET_RSS_BYTES / 1024**2:,.0f} MiB", rss_peak < TARGET_RSS_BYTES))
    return 0


def _fetch_one(gradebook: str, headers: dict[str, str]) -> str:
    url = urlsplit(gradebook)
    connection = HTTPConnection(url.hostname, url.port, timeout=300)
    connection.request("GET", f"{url.path}/results?limit=1", headers=headers)
    response = connection.getresponse()
    response.read()
    total = response.getheader("X-Total-Count")
    connection.close()
    return json.dumps({"total": total})


if __name__ == "__main__":
    raise SystemExit(main())
