"""Benchmark the master-field merge: 1,000,000 IC results with 100,000 vendor results.

The rule set uses a natural key (line item + student) and per-field masters (vendor for score fields,
newest for flags), plus vendor mappings (ext: score codes, a 0..1 → 0..100 rescale, letter grades via
a score scale). The vendor input is built to exercise every path: sourced_id matches, natural-key
matches, vendor-only records, within-source duplicates on both sides, ambiguous keys, invalid values
and references to unknown line items.

Method: the data is generated once and written to Parquet; each measured run is a fresh Python process
that reads the Parquet files the way the pipeline reads staging (``Table.to_pandas()``), so its inputs
carry the dtypes a real run sees (object dates, object flags). Time is wall-clock of ``merge_entity``.
Peak memory is the process RSS high-water mark above the RSS just before the merge, sampled every 2 ms
by a thread reading /proc/self/statm (RSS covers Arrow's allocator too, which tracemalloc cannot
see); freed memory is returned to the OS before the baseline so it cannot be silently reused. Input
memory is ``df.memory_usage(deep=True)`` of both input frames. Figures are medians of the runs; each
run also prints its CPU time and the load average, because wall time on a shared 2-core machine
depends on what else is running.

    python bench/bench_merge.py            # 3 runs (default)
    python bench/bench_merge.py --runs 5
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gradesync.entities import RESULTS
from gradesync.merge import EntityMergeRules, merge_entity
from gradesync.records import arrow_schema

N_IC = 1_000_000
N_VENDOR = 100_000
N_LINE_ITEMS = 40_000
N_STUDENTS = 25_000
PER_LINE_ITEM = N_IC // N_LINE_ITEMS
TARGET_SECONDS = 5.0
TARGET_MEMORY_RATIO = 3.0

RULES = EntityMergeRules.model_validate(
    {
        "match_keys": [["line_item_sourced_id", "student_sourced_id"]],
        "default_master": "ic",
        "fields": {
            "score": "vendor",
            "text_score": "vendor",
            "score_status": "vendor",
            "comment": "vendor",
            "late": "newest",
            "missing": "newest",
        },
        "mappings": [
            {
                "type": "map_values",
                "column": "score_status",
                "values": {"ext:GR": "fully graded", "ext:MS": "not submitted", "ext:EX": "exempt"},
            },
            {"type": "scale", "column": "score", "factor": 100, "round": 2},
            {"type": "score_scale", "scale": {"A": 95, "B": 85, "C": 75, "D": 65, "F": 50}},
        ],
    }
)


def _ids(prefix: str, numbers: np.ndarray) -> np.ndarray:
    """36-character ids like the GUIDs IC hands out, built without a Python loop."""
    mixed = (numbers.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(16)
    hexed = np.char.mod("%012x", mixed)
    body = np.char.add(np.char.mod("%08d", numbers), "-5a1e-4b2c-")
    return np.char.add(np.char.add(prefix, body), hexed)


def _stamp(days: np.ndarray) -> np.ndarray:
    base = np.datetime64("2026-09-01T08:00:00", "us")
    return base + (days * 86_400_000_000).astype("timedelta64[us]")


def generate(directory: Path) -> None:
    """Write ic.parquet and vendor.parquet in the results staging schema (OneRoster 1.2)."""
    rng = np.random.default_rng(20261130)
    schema = arrow_schema(RESULTS, "1.2")
    j = np.arange(N_IC)
    li = j // PER_LINE_ITEM
    student = (li * 7 + (j % PER_LINE_ITEM) * 1009) % N_STUDENTS
    li_ids = _ids("li-", np.arange(N_LINE_ITEMS))
    st_ids = _ids("st-", np.arange(N_STUDENTS))
    ic_result_ids = _ids("re-", j)

    n_dup_ic = N_IC // 100  # 1% of rows are a re-sent copy (overlapping pages)
    unique_ic = N_IC - n_dup_ic
    rows = np.concatenate([np.arange(unique_ic), rng.choice(unique_ic, n_dup_ic, replace=False)])
    ic = {
        "sourced_id": ic_result_ids[rows],
        "status": np.full(N_IC, "active"),
        "date_last_modified": _stamp(rng.integers(0, 60, N_IC)),
        "metadata": np.where(rng.random(N_IC) < 0.1, '{"ic": {"legacysourceId": "x"}}', None),
        "line_item_sourced_id": li_ids[li[rows]],
        "student_sourced_id": st_ids[student[rows]],
        "class_sourced_id": _ids("cl-", li[rows] // 20),
        "score_scale_sourced_id": None,
        "score_status": np.where(rng.random(N_IC) < 0.9, "fully graded", "not submitted"),
        "score": np.round(rng.random(N_IC) * 100, 1),
        "text_score": None,
        "score_date": (np.datetime64("2026-09-01") + rng.integers(0, 60, N_IC)).astype("datetime64[D]"),
        "comment": np.where(rng.random(N_IC) < 0.05, "see me", None),
        "in_progress": np.full(N_IC, False),
        "incomplete": np.full(N_IC, False),
        "late": rng.random(N_IC) < 0.1,
        "missing": rng.random(N_IC) < 0.05,
    }
    pq.write_table(
        pa.table(
            {
                k: pa.array(
                    np.broadcast_to(v, N_IC) if v is not None else [None] * N_IC,
                    type=schema.field(k).type,
                    from_pandas=True,
                )
                for k, v in ic.items()
            },
            schema=schema,
        ),
        directory / "ic.parquet",
    )

    # vendor: 50k same id, 30k other id same (line item, student), 15k vendor-only (new students),
    # 2k ambiguous (pairs sharing one IC result's key), 1k duplicates, 1k bad score, 1k unknown line item
    picks = rng.choice(unique_ic, 83_000, replace=False)
    same_id, natural, ambiguous_src, bad_score = (
        picks[:50_000],
        picks[50_000:80_000],
        picks[80_000:81_000],
        picks[81_000:82_000],
    )
    n_only = 15_000
    only_li = rng.integers(0, N_LINE_ITEMS, n_only)
    v_ids = np.concatenate(
        [
            ic_result_ids[same_id],
            _ids("ve-", np.arange(30_000)),
            _ids("vo-", np.arange(n_only)),
            _ids("va-", np.arange(2_000)),
            ic_result_ids[bad_score],
            _ids("vu-", np.arange(1_000)),
        ]
    )
    v_li = np.concatenate(
        [
            li_ids[li[same_id]],
            li_ids[li[natural]],
            li_ids[only_li],
            np.repeat(li_ids[li[ambiguous_src]], 2),
            li_ids[li[bad_score]],
            _ids("lx-", np.arange(1_000)),
        ]
    )
    v_st = np.concatenate(
        [
            st_ids[student[same_id]],
            st_ids[student[natural]],
            _ids("sn-", np.arange(n_only)),
            np.repeat(st_ids[student[ambiguous_src]], 2),
            st_ids[student[bad_score]],
            st_ids[rng.integers(0, N_STUDENTS, 1_000)],
        ]
    )
    n_v = v_ids.size
    dup = rng.choice(50_000, 1_000, replace=False)  # re-sent copies of id-matched vendor rows
    order = np.concatenate([np.arange(n_v), dup])
    n_total = order.size
    assert n_total == N_VENDOR, n_total
    letters = np.array(["A", "B", "C", "D", "F"])
    score = np.round(rng.random(n_v), 3).astype(object)
    score[-2_000:-1_000] = "n/a"
    vendor = pd.DataFrame(
        {
            "sourced_id": v_ids[order],
            "status": "active",
            "date_last_modified": pd.to_datetime(_stamp(rng.integers(30, 90, n_total))).tz_localize("UTC"),
            "line_item_sourced_id": v_li[order],
            "student_sourced_id": v_st[order],
            "score_status": rng.choice(np.array(["ext:GR", "ext:MS", "ext:EX"]), n_total),
            "score": np.where(rng.random(n_total) < 0.8, score[order], None),
            "text_score": np.where(rng.random(n_total) < 0.3, letters[rng.integers(0, 5, n_total)], None),
            "comment": np.where(rng.random(n_total) < 0.2, "graded in LMS", None),
            "late": rng.random(n_total) < 0.1,
            "missing": rng.random(n_total) < 0.05,
        }
    )
    # the vendor's table stores score as text, the way a loosely typed vendor table would
    vendor["score"] = vendor["score"].astype("str")
    pq.write_table(pa.Table.from_pandas(vendor, preserve_index=False), directory / "vendor.parquet")
    pq.write_table(pa.table({"sourced_id": pa.array(li_ids)}), directory / "line_items.parquet")


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release() -> None:
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measure_once(directory: Path) -> dict[str, float]:
    """One run in this process: read staging, merge, report time and RSS peak above the baseline."""
    ic = pq.read_table(directory / "ic.parquet").to_pandas()
    vendor = pq.read_table(directory / "vendor.parquet").to_pandas()
    known = {
        "line_item_sourced_id": pd.Index(
            pq.read_table(directory / "line_items.parquet").to_pandas()["sourced_id"]
        )
    }
    input_bytes = int(ic.memory_usage(deep=True).sum() + vendor.memory_usage(deep=True).sum())
    _release()
    baseline = peak = _rss()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    load = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = merge_entity(RESULTS, ic, vendor, RULES, run_id="bench", known_parents=known, api_version="1.2")
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    done.set()
    sampler.join()
    peak = max(peak, _rss())
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "load": load,
        "peak_bytes": peak - baseline,
        "input_bytes": input_bytes,
        "counts": outcome.counts,
        "rejects_by_kind": outcome.rejects_by_kind(),
        "merged_bytes": int(outcome.merged.memory_usage(deep=True).sum()),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_once(Path(args.child))))
        return 0
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench_merge_") as tmp:
        directory = Path(tmp)
        started = time.perf_counter()
        generate(directory)
        print(
            f"generated {N_IC:,} IC + {N_VENDOR:,} vendor results in {time.perf_counter() - started:.1f} s; "
            f"{args.runs} runs, each in a fresh process",
            flush=True,
        )
        runs = []
        for i in range(args.runs):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(directory)],
                check=True,
                capture_output=True,
                text=True,
            )
            run = json.loads(out.stdout)
            runs.append(run)
            print(
                f"  run {i + 1}: {run['seconds']:.2f} s wall, {run['cpu_seconds']:.2f} s CPU, "
                f"peak +{run['peak_bytes'] / 2**20:,.0f} MiB (1-min load average {run['load']:.1f} "
                f"on {os.cpu_count()} cores)",
                flush=True,
            )
    seconds = statistics.median(r["seconds"] for r in runs)
    cpu_seconds = statistics.median(r["cpu_seconds"] for r in runs)
    peak = statistics.median(r["peak_bytes"] for r in runs)
    input_bytes = runs[0]["input_bytes"]
    ratio = peak / input_bytes
    print(f"counts: {runs[0]['counts']}")
    print(f"rejects by kind: {runs[0]['rejects_by_kind']}")
    print(
        f"input DataFrames (memory_usage deep): {input_bytes / 2**20:,.0f} MiB; "
        f"merged output: {runs[0]['merged_bytes'] / 2**20:,.0f} MiB"
    )
    time_ok, memory_ok = seconds < TARGET_SECONDS, ratio < TARGET_MEMORY_RATIO
    print(
        f"merge time (median of {len(runs)}):  {seconds:6.2f} s    target < {TARGET_SECONDS:.0f} s    "
        f"{'ok' if time_ok else 'MISSED'}    (CPU {cpu_seconds:.2f} s)"
    )
    print(
        f"peak memory (median, RSS delta):    {peak / 2**20:6,.0f} MiB = {ratio:.2f}x input    "
        f"target < {TARGET_MEMORY_RATIO:.0f}x input    {'ok' if memory_ok else 'MISSED'}"
    )
    return 0 if time_ok and memory_ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
