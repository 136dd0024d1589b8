"""Benchmark the warehouse load into Postgres: 1,000,000 results.

    python bench/bench_load.py [--rows 1000000] [--repeat 3] [--url postgresql://root@127.0.0.1/test]

Prints rows/s (median of --repeat runs) for an initial load, full-sync reloads of successive
states where 1% of the rows changed (modified after the last watermark, as IC stamps changes;
then also with 0.1% of the rows gone; then with changes IC did not stamp, whose checksum buckets
differ, so their keys are compared one by one), and pandas ``DataFrame.to_sql`` on a subset of
the same rows (extrapolated, said so in the output); the CPU seconds of the loader and of its Postgres backends (a figure that other work
on the machine does not distort); and the peak RSS of a load process at 250k and at all rows,
to show that memory does not grow with the number of rows (files are streamed in record
batches). Works in a throwaway schema and drops it afterwards; every timed load starts after a
CHECKPOINT, so it does not pay for the previous run's writes. Targets are printed next to the
figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from gradesync.entities import RESULTS
from gradesync.records import arrow_schema
from gradesync.warehouse import Warehouse

DEFAULT_URL = os.environ.get("GRADESYNC_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
FILE_ROWS = 50_000  # one staged file per extraction page, as the extract task writes them
TARGET_INITIAL = 150_000
TARGET_RELOAD = 300_000
TARGET_VS_TO_SQL = 6.0


def _guids(n: int, rng: np.random.Generator) -> list[str]:
    raw = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
    return [str(uuid.UUID(int=(int(a) << 64) | int(b))) for a, b in raw]


def make_results(n: int, seed: int = 7) -> pa.Table:
    """A district-shaped set of 1.2 results: 25k students, 20k line items, 1.2k classes."""
    rng = np.random.default_rng(seed)
    students = np.array(_guids(25_000, rng), dtype=object)
    line_items = np.array(_guids(20_000, rng), dtype=object)
    classes = np.array(_guids(1_200, rng), dtype=object)
    scales = np.array(_guids(40, rng), dtype=object)
    li_idx = rng.integers(0, len(line_items), n)
    statuses = np.array(["fully graded", "not submitted", "submitted", "exempt", "partially graded"], dtype=object)
    letters = np.array(["A", "A-", "B+", "B", "C", "D", "F"], dtype=object)
    offsets = rng.integers(0, 86_400 * 90 * 10**6, n).astype("timedelta64[us]")
    dlm = pa.array((np.datetime64("2026-08-20T00:00:00", "us") + offsets).astype("int64")).cast(
        pa.timestamp("us", tz="UTC"))
    comment = np.where(rng.random(n) < 0.08, "Late work accepted per IEP; see conference notes", None)
    text = np.where(rng.random(n) < 0.3, letters[rng.integers(0, len(letters), n)], None)
    meta = np.where(rng.random(n) < 0.5, '{"ic": {"legacysourceId": "' + "12345" + '"}}', None)
    cols = {
        "sourced_id": pa.array(_guids(n, rng), pa.string()),
        "status": pa.array(np.full(n, "active", dtype=object), pa.string()),
        "date_last_modified": dlm,
        "metadata": pa.array(meta, pa.string()),
        "line_item_sourced_id": pa.array(line_items[li_idx], pa.string()),
        "student_sourced_id": pa.array(students[rng.integers(0, len(students), n)], pa.string()),
        "class_sourced_id": pa.array(classes[li_idx % len(classes)], pa.string()),
        "score_scale_sourced_id": pa.array(scales[li_idx % len(scales)], pa.string()),
        "score_status": pa.array(statuses[rng.integers(0, len(statuses), n)], pa.string()),
        "score": pa.array(np.round(rng.random(n) * 100, 1)),
        "text_score": pa.array(text, pa.string()),
        "score_date": pa.array(rng.integers(20_300, 20_400, n).astype(np.int32), pa.int32()).cast(pa.date32()),
        "comment": pa.array(comment, pa.string()),
        "in_progress": pa.array(rng.random(n) < 0.05),
        "incomplete": pa.array(rng.random(n) < 0.05),
        "late": pa.array(rng.random(n) < 0.1),
        "missing": pa.array(rng.random(n) < 0.05),
    }
    return pa.table(cols, schema=arrow_schema(RESULTS, "1.2"))


def change_fraction(table: pa.Table, fraction: float, seed: int, *, stamped: bool = True,
                    vanish: float = 0.0) -> pa.Table:
    """Copy of ``table`` where ``fraction`` of the rows got a new score, modified (as IC stamps
    ``dateLastModified``, unless not ``stamped``) within the hour after the newest modification so
    far, and ``vanish`` of the rows are gone."""
    rng = np.random.default_rng(seed)
    mask = rng.random(table.num_rows) < fraction
    score = table["score"].to_numpy().copy()
    score[mask] = np.round(rng.random(int(mask.sum())) * 100, 1) + 0.05
    dlm = table["date_last_modified"].cast(pa.int64()).to_numpy().copy()
    if stamped:
        dlm[mask] = dlm.max() + rng.integers(1, 3600 * 10**6, int(mask.sum()))
    table = table.set_column(table.schema.get_field_index("score"), "score", pa.array(score))
    table = table.set_column(table.schema.get_field_index("date_last_modified"), "date_last_modified",
                             pa.array(dlm).cast(pa.timestamp("us", tz="UTC")))
    return table.filter(pa.array(rng.random(table.num_rows) >= vanish)) if vanish else table


def newest(table: pa.Table) -> datetime:
    """The watermark the pipeline records after loading ``table``: its newest modification."""
    return pc.max(table["date_last_modified"]).as_py()


def write_files(table: pa.Table, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, start in enumerate(range(0, table.num_rows, FILE_ROWS)):
        path = folder / f"results-{i:05d}.parquet"
        pq.write_table(table.slice(start, FILE_ROWS), path)
        paths.append(str(path))
    return paths


def bench_url(url: str) -> str:
    """The URL with an application_name, so the server's CPU time can be attributed to the load."""
    parsed = Warehouse(url).url
    return parsed.update_query_dict({"application_name": APP_NAME}).render_as_string(hide_password=False)


def fresh_warehouse(url: str, schema: str) -> Warehouse:
    url = bench_url(url)
    engine = sa.create_engine(Warehouse(url).url)
    with engine.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    engine.dispose()
    wh = Warehouse(url, schema=schema)
    wh.migrate()
    return wh


APP_NAME = "gradesync-bench"
_CPU_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _server_cpu(wh: Warehouse) -> dict[int, float]:
    """CPU seconds so far of the Postgres backends serving this benchmark (local server only)."""
    out: dict[int, float] = {}
    with wh.engine.connect() as conn:
        pids = conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :app"),
                            {"app": APP_NAME}).scalars().all()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / _CPU_TICK
        except (OSError, IndexError, ValueError):
            continue
    return out


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def settle(wh: Warehouse) -> None:
    """Flush what earlier runs left dirty (a dropped schema, a million rows of WAL), untimed.

    Without it each run pays for the previous run's writes in the checkpoints that fall into it, and
    later runs of the same load measured up to a third slower than the first. Needs the
    pg_checkpoint role (or superuser); without it the runs are simply not settled.
    """
    try:
        with wh.engine.connect() as conn:
            conn.exec_driver_sql("CHECKPOINT")
    except sa.exc.DBAPIError:
        pass


def timed_load(wh: Warehouse, files: list[str], run_id: str, rows: int,
               watermark: datetime | None = None) -> tuple[float, object, float, float]:
    """(wall seconds, counts, client CPU seconds, server CPU seconds) of one load."""
    settle(wh)
    server0, client0 = _server_cpu(wh), _client_cpu()
    t0 = time.perf_counter()
    counts = wh.load_entity("bench", "results", "1.2", files, run_id=run_id, full_sync=True, extracted=rows,
                            watermark=watermark)
    seconds = time.perf_counter() - t0
    client = _client_cpu() - client0
    server = sum(cpu - server0.get(pid, 0.0) for pid, cpu in _server_cpu(wh).items())
    return seconds, counts, client, server


def child_load(url: str, schema: str, files: list[str], rows: int) -> None:
    """Run in a subprocess: one initial load, then print the process's peak RSS in MiB."""
    wh = fresh_warehouse(url, schema)
    seconds, counts, _client, _server = timed_load(wh, files, "mem", rows)
    assert counts.inserted == rows, counts
    print(f"{peak_rss_mib():.0f} {seconds:.2f}")


def peak_rss_mib() -> float:
    """Peak RSS of this process image. ru_maxrss would include the parent's peak before exec."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def to_sql_rate(url: str, schema: str, table: pa.Table, rows: int) -> tuple[float, int, float]:
    """(rows/s, rows, CPU seconds per row) of pandas to_sql (default method) into a plain table."""
    frame = table.slice(0, rows).to_pandas()
    wh = Warehouse(bench_url(url), schema=schema)
    with wh.engine.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
    server0, client0 = _server_cpu(wh), _client_cpu()
    t0 = time.perf_counter()
    frame.to_sql("results_to_sql", wh.engine, schema=schema, if_exists="replace", index=False, chunksize=10_000)
    seconds = time.perf_counter() - t0
    cpu = _client_cpu() - client0 + sum(c - server0.get(pid, 0.0) for pid, c in _server_cpu(wh).items())
    wh.dispose()
    return rows / seconds, rows, cpu / rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--to-sql-rows", type=int, default=200_000)
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--schema", default="gradesync_bench")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_load(args.url, args.schema, args.child[1:], int(args.child[0]))
        return

    n = args.rows
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gradesync-bench-") as tmp:
        base = make_results(n)
        files_a = write_files(base, Path(tmp) / "v0")
        # successive states of the gradebook, each with ~1% of the results changed: as IC stamps
        # changes (the target), then also with 0.1% of the results gone, then with changes IC did
        # not stamp (a quarter of the checksum buckets differ, and their keys are compared)
        scenarios = [("reload, 1% changed, full sync", {}),
                     ("reload, 1% changed + 0.1% vanished", {"vanish": 0.001}),
                     ("reload, 1% changed, not stamped by IC", {"stamped": False})]
        versions = []
        table = base
        for s_no, (_label, change) in enumerate(scenarios):
            for i in range(args.repeat):
                table = change_fraction(table, 0.01, seed=11 + 10 * s_no + i, **change)
                versions.append((s_no, write_files(table, Path(tmp) / f"v{s_no}-{i}"), newest(table), table.num_rows))
        print(f"gradesync warehouse load benchmark: {n:,} results, {len(files_a)} staged Parquet files, "
              f"Postgres at {sa.make_url(args.url).render_as_string(hide_password=True)}")

        initial, initial_cpu = [], []
        for i in range(args.repeat):
            wh = fresh_warehouse(args.url, args.schema)
            seconds, counts, client, server = timed_load(wh, files_a, f"initial-{i}", n, newest(base))
            assert counts.inserted == n, counts
            initial.append(n / seconds)
            initial_cpu.append((client, server))
            wh.dispose()
        reload: dict[int, list[float]] = {s_no: [] for s_no in range(len(scenarios))}
        changed: dict[int, list[int]] = {s_no: [] for s_no in range(len(scenarios))}
        reload_cpu = []
        for i, (s_no, files, watermark, rows) in enumerate(versions):  # full syncs of the next state
            seconds, counts, client, server = timed_load(wh, files, f"reload-{i}", rows, watermark)
            assert counts.inserted == 0 and counts.unchanged + counts.updated == rows, counts
            changed[s_no].append(counts.updated + counts.deleted)
            reload[s_no].append(rows / seconds)
            if s_no == 0:
                reload_cpu.append((client, server))
        wh.dispose()

        sql_rate, sql_rows, sql_cpu_per_row = to_sql_rate(args.url, args.schema, base, min(args.to_sql_rows, n))

        mem = {}
        sizes = sorted({min(250_000, n), n})
        for rows in sizes:
            files = files_a[: -(-rows // FILE_ROWS)]
            out = subprocess.run([sys.executable, __file__, "--url", args.url, "--schema", args.schema,
                                  "--child", str(rows), *files], check=True, capture_output=True, text=True)
            peak, _secs = out.stdout.split()
            mem[rows] = float(peak)

        engine = sa.create_engine(Warehouse(args.url).url)
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(args.schema, cascade=True, if_exists=True))
        engine.dispose()

    med_initial = statistics.median(initial)
    ratio = med_initial / sql_rate

    def ok(flag: bool) -> str:
        return "ok" if flag else "MISSED"

    def line(label: str, figure: str, target: str = "", note: str = "") -> None:
        print(f"{label:<54}{figure:>16}   {target:<28}{note}")

    print()
    line("measure", "figure", "target")
    line(f"initial load (median of {args.repeat})", f"{med_initial:,.0f} r/s",
         f">= {TARGET_INITIAL:,} r/s [{ok(med_initial >= TARGET_INITIAL)}]",
         "runs: " + ", ".join(f"{r:,.0f}" for r in initial))
    for s_no, (label, _change) in enumerate(scenarios):
        med = statistics.median(reload[s_no])
        target = f">= {TARGET_RELOAD:,} r/s [{ok(med >= TARGET_RELOAD)}]" if s_no == 0 else "(no target)"
        line(f"{label} (median of {len(reload[s_no])})", f"{med:,.0f} r/s", target,
             "runs: " + ", ".join(f"{r:,.0f}" for r in reload[s_no]) + "; rows changed or deleted: "
             + ", ".join(f"{c:,}" for c in changed[s_no]))
    line(f"pandas to_sql, {sql_rows:,} rows", f"{sql_rate:,.0f} r/s", "",
         f"measured on a subset, extrapolated: {n:,} rows would take {n / sql_rate:,.0f} s")
    line("initial load / to_sql", f"{ratio:.1f} x", f">= {TARGET_VS_TO_SQL:.0f} x [{ok(ratio >= TARGET_VS_TO_SQL)}]",
         "wall clock")
    initial_cpu_per_row = statistics.median(c + s for c, s in initial_cpu) / n
    cpu_ratio = sql_cpu_per_row / initial_cpu_per_row
    line("initial load / to_sql, CPU per row", f"{cpu_ratio:.1f} x",
         f">= {TARGET_VS_TO_SQL:.0f} x [{ok(cpu_ratio >= TARGET_VS_TO_SQL)}]",
         f"to_sql {sql_cpu_per_row * 1e6:.1f} us/row, initial load {initial_cpu_per_row * 1e6:.1f} us/row "
         "(client + server; independent of other load on the machine)")
    for rows in sizes:
        line(f"peak RSS of a load process, {rows:,} rows", f"{mem[rows]:,.0f} MiB")
    if len(sizes) == 2:
        growth = mem[sizes[1]] - mem[sizes[0]]
        line(f"peak RSS growth {sizes[0]:,} -> {sizes[1]:,} rows", f"{growth:,.0f} MiB",
             f"flat: < 64 MiB [{ok(growth < 64)}]")
    for label, cpu in (("initial load", initial_cpu), ("reload", reload_cpu)):
        client = statistics.median(c for c, _ in cpu)
        server = statistics.median(s for _, s in cpu)
        line(f"CPU of the {label} (median)", f"{client + server:.1f} s",
             "", f"gradesync process {client:.1f} s + Postgres backends {server:.1f} s; they overlap on 2 CPUs")
    load1, load5, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load1:.1f} (1 min) / {load5:.1f} (5 min) at the end; "
          "figures are wall-clock and drop when other work shares the CPUs")
    print(f"total benchmark time: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
