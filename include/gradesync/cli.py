"""The ``gradesync`` command: the demo, the sandbox, config checks and pool set-up."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_INTEGRATIONS = {"1.2": "sandbox", "1.1": "sandbox_v1p1"}


def _print(text: str = "") -> None:
    print(text, flush=True)


def airflow_env(home: Path, *, dags_folder: Path | None = None) -> dict[str, str]:
    """Environment for a self-contained Airflow: its own home and SQLite metadata DB, no examples."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
        }
    )
    return env


def airflow_bin() -> str:
    candidate = Path(sys.executable).with_name("airflow")
    return str(candidate) if candidate.exists() else "airflow"


def run_airflow(args: Sequence[str], env: dict[str, str], log_file: Path | None = None) -> int:
    """Run an ``airflow`` CLI command; its output goes to ``log_file`` when given."""
    cmd = [airflow_bin(), *args]
    if log_file is None:
        return subprocess.run(cmd, env=env, check=False).returncode
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as handle:
        return subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode


def ensure_airflow_db(env: dict[str, str], log_file: Path | None = None) -> None:
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if run_airflow(["db", "migrate"], env, log_file) != 0:
        raise SystemExit(f"airflow db migrate failed; see {log_file}")


def demo(args: argparse.Namespace) -> int:
    """Sandbox IC → Airflow DAG run → SQLite warehouse, then a summary read back from the warehouse."""
    from gradesync.config import load_config
    from gradesync.sandbox import SandboxProcess

    var = Path(args.var_dir).resolve()
    integration = DEMO_INTEGRATIONS[args.api]
    config = load_config(PROJECT_ROOT / "include" / "integrations" / f"{integration}.yaml")
    warehouse_file = var / "warehouse.db"
    log_file = var / "logs" / f"demo-{time.strftime('%Y%m%dT%H%M%S')}.log"
    env = airflow_env(var / "airflow")
    env["GRADESYNC_STAGING_URL"] = f"file://{var / 'staging'}"
    env[f"AIRFLOW_CONN_{config.warehouse_connection_id.upper()}"] = f"sqlite:///{warehouse_file}"

    _print(f"gradesync demo: OneRoster {args.api} sandbox ({args.preset}) → {config.dag_id} → {warehouse_file}")
    _print(f"Airflow output goes to {log_file}")
    ensure_airflow_db(env, log_file)
    started = time.monotonic()
    with SandboxProcess(api=args.api, preset=args.preset, seed=args.seed) as sandbox:
        _print(f"Sandbox IC serving {sandbox.service_url}")
        env[f"AIRFLOW_CONN_{config.connection_id.upper()}"] = json.dumps(sandbox.airflow_connection())
        run_airflow(["pools", "set", config.pool, str(config.extraction.max_concurrent_requests),
                     f"IC request budget of {config.name}"], env, log_file)
        conf = json.dumps({"full_refresh": True})
        code = run_airflow(["dags", "test", config.dag_id, "--conf", conf], env, log_file)
    duration = time.monotonic() - started
    if code != 0:
        _print(f"The DAG run failed (exit {code}). The last lines of {log_file}:")
        _print("\n".join(log_file.read_text(errors="replace").splitlines()[-40:]))
        return code
    _print_summary(config, f"sqlite:///{warehouse_file}", duration, warehouse_file)
    return 0


def _print_summary(config: Any, url: str, duration: float, warehouse_file: Path) -> None:
    from gradesync.pipeline import format_table
    from gradesync.warehouse import Warehouse

    warehouse = Warehouse(url, schema=config.warehouse_schema)
    run_id = warehouse.latest_run_id(config.name)
    rows = warehouse.run_summary(config.name, run_id) if run_id else []
    columns = ("entity", "extracted", "inserted", "updated", "unchanged", "deleted", "rejected")
    table = [{c: row.get(c, 0) for c in columns} for row in rows]
    _print()
    _print(f"Run {run_id} of {config.dag_id}")
    _print(format_table(table))
    changed = sum(int(r["inserted"]) + int(r["updated"]) + int(r["deleted"]) for r in table)
    _print()
    if changed == 0 and table:
        _print("Warehouse unchanged: every record was already loaded (the sync is idempotent).")
    else:
        _print(f"{changed} rows written.")
    _print(f"Duration {duration:.1f} s. Warehouse: {warehouse_file}")
    _print(f"Try: sqlite3 {warehouse_file} 'select * from results limit 5'")


def validate(args: argparse.Namespace) -> int:
    """Check every integration YAML; non-zero exit when any is broken (for a deploy pipeline)."""
    from gradesync.config import discover

    found = discover(args.dir)
    for path, config in found.configs:
        _print(f"ok      {path.name}: {config.dag_id} (OneRoster {config.api_version}, "
               f"{', '.join(config.selected_entities)})")
    for error in found.errors:
        _print(f"broken  {error}")
    return 1 if found.errors else 0


def pools(args: argparse.Namespace) -> int:
    """Create or resize each integration's Airflow pool (its IC request budget)."""
    from gradesync.config import discover

    found = discover(args.dir)
    code = 0
    for _, config in found.configs:
        slots = str(config.extraction.max_concurrent_requests)
        cmd = ["pools", "set", config.pool, slots, f"IC request budget of {config.name}"]
        if args.dry_run:
            _print("airflow " + " ".join(cmd))
            continue
        code |= run_airflow(cmd, dict(os.environ))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gradesync", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_demo = sub.add_parser("demo", help="sync the bundled IC sandbox into a local SQLite warehouse")
    p_demo.add_argument("--api", choices=sorted(DEMO_INTEGRATIONS), default="1.2")
    p_demo.add_argument("--preset", default="school")
    p_demo.add_argument("--seed", type=int, default=42)
    p_demo.add_argument("--var-dir", default=str(PROJECT_ROOT / "var"))
    p_demo.set_defaults(func=demo)

    p_sandbox = sub.add_parser("sandbox", help="run the IC sandbox server", add_help=False)
    p_sandbox.set_defaults(func=None)

    p_validate = sub.add_parser("validate", help="check the integration YAML files")
    p_validate.add_argument("--dir", default=None)
    p_validate.set_defaults(func=validate)

    p_pools = sub.add_parser("pools", help="create the Airflow pool of every integration")
    p_pools.add_argument("--dir", default=None)
    p_pools.add_argument("--dry-run", action="store_true")
    p_pools.set_defaults(func=pools)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sandbox"]:
        from gradesync.sandbox.cli import main as sandbox_main

        return sandbox_main(argv[1:])
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
