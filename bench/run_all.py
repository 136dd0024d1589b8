"""Run every benchmark in bench/ one after another and print their figures.

Each benchmark is its own script (so its memory figures are its own process's); they run in
sequence, never in parallel, because the machine is small and noisy.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["bench_sandbox.py", "bench_extract.py", "bench_merge.py", "bench_load.py", "bench_parse.py"]


def main(argv: list[str]) -> int:
    wanted = [name for name in ORDER if (HERE / name).exists() and (not argv or any(a in name for a in argv))]
    failures = []
    for name in wanted:
        print(f"\n=== {name} " + "=" * (70 - len(name)), flush=True)
        started = time.monotonic()
        code = subprocess.run([sys.executable, str(HERE / name)], check=False).returncode
        print(f"--- {name}: exit {code} in {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failures.append(name)
    if failures:
        print(f"\nfailed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
