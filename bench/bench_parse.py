"""How long Airflow takes to parse dags/ as the number of integrations grows.

For 1, 100 and 500 generated integration YAMLs (plus one broken file, which must hide nothing), each
measurement runs in a fresh Python process: import Airflow, then time ``DagBag(dag_folder=dags/)``,
which is what the DAG processor does with the file. The median of 3 runs is reported with the
per-integration cost. A second figure times the same folder as a *task* sees it: with Airflow's
parsing context naming one DAG, as a worker does before it runs a task of that DAG.

Targets: < 20 ms per integration and < 10 s in total at 500 integrations.

    .venv/bin/python bench/bench_parse.py [--sizes 1,100,500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MS_PER_INTEGRATION = 20.0
TARGET_TOTAL_S_AT_500 = 10.0

CHILD = textwrap.dedent("""
    import json, logging, sys, time
    logging.disable(logging.CRITICAL)   # 500 'skipping broken config' lines would be timed too
    t0 = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag
    t1, c1 = time.perf_counter(), time.process_time()
    bag = DagBag(dag_folder=sys.argv[1])
    t2, c2 = time.perf_counter(), time.process_time()
    print(json.dumps({"import_s": t1 - t0, "parse_s": t2 - t1, "cpu_s": c2 - c1, "dags": len(bag.dag_ids),
                      "import_errors": len(bag.import_errors)}))
""")


def write_integrations(folder: Path, count: int) -> None:
    """``count`` valid integrations of both API versions and one broken file."""
    for i in range(count):
        version = "1.2" if i % 3 else "1.1"
        alerts = (
            f"alerts:\n  webhook_connection_id: alerts_hook\n  email: [ops{i}@district.example]\n"
            f"  finish_by: '06:00'\n  credentials_expire_on: 2027-08-01\n"
            if i % 2 else ""
        )
        (folder / f"district_{i:04d}.yaml").write_text(
            f"name: district_{i:04d}\n"
            f"description: Generated district {i}\n"
            f"api_version: '{version}'\n"
            f"connection_id: ic_district_{i:04d}\n"
            f"schedule: '{i % 60} {1 + i % 4} * * *'\n"
            f"timezone: America/Chicago\n"
            f"full_sync_weekday: sun\n"
            f"extraction:\n  max_concurrent_requests: 5\n  page_size: 1000\n"
            f"  peak_window: {{start: '07:00', end: '16:00', timezone: America/Chicago}}\n"
            f"{alerts}"
            f"tags: [generated]\n",
            encoding="utf-8",
        )
    (folder / "zz_broken.yaml").write_text("name: Broken Name\napi_version: 3\n", encoding="utf-8")


def measure(dags_folder: Path, integrations: Path, *, dag_id: str | None = None) -> dict:
    env = dict(os.environ)
    env.update({
        "GRADESYNC_INTEGRATIONS_DIR": str(integrations),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
    })
    env.setdefault("AIRFLOW_HOME", str(Path(tempfile.gettempdir()) / "gradesync-bench-airflow"))
    env.pop("_AIRFLOW_PARSING_CONTEXT_DAG_ID", None)
    if dag_id:
        env["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = dag_id
        env["_AIRFLOW_PARSING_CONTEXT_TASK_ID"] = "extract"
    out = subprocess.run([sys.executable, "-c", CHILD, str(dags_folder)], env=env, capture_output=True,
                         text=True, check=False, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"parse failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,100,500")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dags-folder", type=Path, default=ROOT / "dags")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    folders = {"dags/": args.dags_folder}

    print(f"DagBag parse (fresh process per run, median of {args.repeats}). "
          "'wall' is elapsed time, 'cpu' the parse's own CPU time, which a busy machine distorts less.")
    print(f"{'variant':>8}  {'integr.':>7}  {'dags':>5}  {'wall s':>7}  {'cpu s':>6}  {'ms/integr.':>10}  "
          f"{'task wall s':>11}  {'task cpu s':>10}  {'task dags':>9}")
    ok = True
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="gradesync-bench-parse-") as tmp:
        for size in sizes:
            folder = Path(tmp) / f"n{size}"
            folder.mkdir()
            write_integrations(folder, size)
            runs: dict[str, list[dict]] = {v: [] for v in folders}
            task_runs: dict[str, list[dict]] = {v: [] for v in folders}
            for _ in range(args.repeats):
                for variant, dags_folder in folders.items():
                    runs[variant].append(measure(dags_folder, folder))
                    task_runs[variant].append(
                        measure(dags_folder, folder, dag_id=f"grade_sync_district_{size - 1:04d}"))
            for variant in folders:
                row = {
                    "wall": statistics.median(r["parse_s"] for r in runs[variant]),
                    "cpu": statistics.median(r["cpu_s"] for r in runs[variant]),
                    "task": statistics.median(r["parse_s"] for r in task_runs[variant]),
                    "task_cpu": statistics.median(r["cpu_s"] for r in task_runs[variant]),
                    "dags": runs[variant][0]["dags"],
                    "task_dags": task_runs[variant][0]["dags"],
                }
                results[(variant, size)] = row
                print(f"{variant:>8}  {size:>7}  {row['dags']:>5}  {row['wall']:>7.2f}  {row['cpu']:>6.2f}  "
                      f"{row['cpu'] / size * 1000:>10.1f}  {row['task']:>11.2f}  {row['task_cpu']:>10.2f}  "
                      f"{row['task_dags']:>9}")
                if row["dags"] != size:
                    print(f"  !! expected {size} DAGs: a broken file hid others, or a valid one was dropped")
                    ok = False
    for variant in folders:
        if len(sizes) > 1:
            lo, hi = min(sizes), max(sizes)
            marginal = (results[(variant, hi)]["cpu"] - results[(variant, lo)]["cpu"]) / (hi - lo) * 1000
            print(f"{variant}: marginal CPU per integration ({lo}→{hi}): {marginal:.1f} ms")
        if 500 in sizes:
            row = results[(variant, 500)]
            per500 = row["cpu"] / 500 * 1000
            verdict_ms = "ok" if per500 < TARGET_MS_PER_INTEGRATION else "MISSED"
            verdict_total = "ok" if row["cpu"] < TARGET_TOTAL_S_AT_500 else "MISSED"
            print(f"{variant}: target < {TARGET_MS_PER_INTEGRATION:.0f} ms per integration at 500: "
                  f"{per500:.1f} ms CPU ({verdict_ms}); target < {TARGET_TOTAL_S_AT_500:.0f} s at 500: "
                  f"{row['cpu']:.2f} s CPU, {row['wall']:.2f} s wall ({verdict_total})")
            ok = ok and verdict_ms == "ok" and verdict_total == "ok"
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
