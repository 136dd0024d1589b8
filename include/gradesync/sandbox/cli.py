"""``python -m gradesync.sandbox`` / ``gradesync sandbox``: run an IC OneRoster sandbox server."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from gradesync.sandbox.faults import FaultConfig
from gradesync.sandbox.generator import PRESETS
from gradesync.sandbox.process import airflow_connection
from gradesync.sandbox.server import SandboxConfig, SandboxServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradesync sandbox",
        description="Serve a fake Infinite Campus OneRoster gradebook API with deterministic data and faults.",
    )
    parser.add_argument("--api", choices=("1.1", "1.2"), default="1.2")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--host", default=os.environ.get("SANDBOX_HOST", "127.0.0.1"),
                        help="bind address (0.0.0.0 inside docker-compose)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--public-url", default=None,
                        help="base URL clients reach the sandbox at (hrefs, Link headers), e.g. http://sandbox:8000")
    parser.add_argument("--app-name", default="sandbox")
    parser.add_argument("--client-id", default="sandbox-client")
    parser.add_argument("--client-secret", default="sandbox-secret")
    parser.add_argument("--vendor-key", default="sandbox-vendor")
    parser.add_argument("--vendor-secret", default="sandbox-vendor-secret")
    parser.add_argument("--token-lifetime", type=int, default=3600, help="seconds")
    parser.add_argument("--max-limit", type=int, default=50_000, help="larger limits are clamped to this")
    parser.add_argument("--api-delete-mode", choices=("vanish", "tombstone"), default="vanish")
    parser.add_argument("--url-form", choices=("campus", "app"), default="campus",
                        help="which IC Service URL form to print")
    parser.add_argument("--latency-ms", type=int, default=0, help="added to every API request")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME=VALUE",
                        help="e.g. throttle_every=10, error_rate=0.05, drop_every=7, truncate_every=9, "
                             "revoke_after=100, drift_every=3, max_concurrency=5 (see FaultConfig)")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="write the connection info as JSON here once serving (for supervisors)")
    parser.add_argument("--json", action="store_true", help="print the connection info as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start the sandbox and serve until interrupted; prints what to configure in the pipeline."""
    args = build_parser().parse_args(argv)
    try:
        faults = FaultConfig.from_pairs(args.fault)
        if args.latency_ms:
            faults.latency_ms = args.latency_ms
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = SandboxConfig(
        api=args.api,
        preset=args.preset,
        seed=args.seed,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        app_name=args.app_name,
        client_id=args.client_id,
        client_secret=args.client_secret,
        vendor_key=args.vendor_key,
        vendor_secret=args.vendor_secret,
        token_lifetime=args.token_lifetime,
        max_limit=args.max_limit,
        api_delete_mode=args.api_delete_mode,
        url_form=args.url_form,
        faults=faults,
    )
    started = time.monotonic()
    server = SandboxServer(config)
    app = server.bind()
    info = app.connection_info()
    if args.json:
        print(json.dumps(info), flush=True)
    else:
        print(_describe(info, time.monotonic() - started), flush=True)
    if args.ready_file:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(args.ready_file)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # docker stop / Popen.terminate: shut down cleanly
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _describe(info: dict[str, object], seconds: float) -> str:
    lines = [
        f"gradesync IC sandbox: OneRoster {info['api']}, preset {info['preset']}, seed {info['seed']} "
        f"(ready in {seconds:.1f}s)",
        f"  Service URL      {info['service_url']}",
        f"  Gradebook URL    {info['gradebook_url']}",
        f"  Token URL        {info['token_url']}",
        f"  Client id        {info['client_id']}",
        f"  Client secret    {info['client_secret']}   (sandbox-only value)",
    ]
    if info.get("vendor_key"):
        lines += [f"  Vendor key       {info['vendor_key']}", f"  Vendor secret    {info['vendor_secret']}"]
    lines += [
        f"  Admin API        {info['admin_url']}/  (records, modify, add, delete, faults, stats)",
        f"  Port             {str(info['base_url']).rsplit(':', 1)[-1]}",
        "  Airflow connection (JSON):",
        "    " + json.dumps(airflow_connection(info)),
    ]
    return "\n".join(lines)
