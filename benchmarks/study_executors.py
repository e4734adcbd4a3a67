"""Wall time of one study under each executor, back to back, and whether their rows agree.

    python benchmarks/study_executors.py examples/quickstart.yaml --out runs/bench-exec \
        --executors serial processes:2 ray:2 [--markdown docs-table.md]

Each executor runs ``annt run SPEC --out OUT/NAME --no-report --quiet`` in a fresh folder
(a subprocess, so process start-up, pool start-up and Ray start-up are counted). The rows
of every typed table (wall-clock columns left out) and the cells table are then compared
with the first executor's. Speed-ups are ratios of runs made in the same sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from annt.experiments.schema import comparable_rows

dump = comparable_rows  # one definition, in the experiments layer


def run(spec: str, out: Path, executor: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + sys of the finished child processes) of one run."""
    kind, _, workers = executor.partition(":")
    args = [sys.executable, "-m", "annt.cli.main", "run", spec, "--out", str(out), "--no-report", "--quiet",
            "--executor", kind]
    if workers:
        args += ["--workers", workers]
    if kind == "ray":
        args += ["--ray-address", "local"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{executor} failed: {done.stderr[-2000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--out", default="runs/bench-executors")
    parser.add_argument("--executors", nargs="+", default=["serial", "processes:2", "ray:2"])
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args()
    base = Path(args.out)
    results = []
    reference = None
    for executor in args.executors:
        out = base / executor.replace(":", "-")
        shutil.rmtree(out, ignore_errors=True)
        seconds, cpu = run(args.spec, out, executor)
        rows = dump(out)
        reference = reference or rows
        results.append({"executor": executor, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
                        "load_average": round(os.getloadavg()[0], 1), "cells": len(rows["cells"]),
                        "identical_rows": rows == reference})
        print(json.dumps(results[-1]), flush=True)
    first = results[0]["seconds"]
    lines = ["| executor | wall time (s) | speed-up vs " + args.executors[0] + " | CPU time (s) | load average"
             " at the end | cells | rows identical |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['executor']} | {r['seconds']} | {first / r['seconds']:.2f}x | {r['cpu_seconds']} |"
                     f" {r['load_average']} | {r['cells']} | {'yes' if r['identical_rows'] else 'NO'} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
