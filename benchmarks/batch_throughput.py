"""Encrypted rows per second of ``predict(X, fhe="execute")`` on 1 thread and on all cores.

``QuantizedModule`` runs ``run_options.fhe_threads`` encrypted rows at once (run_options.py).
This script trains the benchmark's "ours" model of a task, compiles it, and times the same rows
with 1 thread and with the machine's cores, checking every row against the clear model.

Usage: ``python benchmarks/batch_throughput.py --task breast_cancer --rows 8``; rows go to
``results/batch_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from qnn_sklearn.quantization.run_options import RunOptions, available_cores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import CONFIGS, TASKS, load  # noqa: E402
from training import estimator_params, train  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "batch_throughput.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="breast_cancer", choices=sorted(TASKS))
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    task = TASKS[args.task]
    X_train, X_test, y_train, _ = load(args.task)
    params = estimator_params(CONFIGS["ours"], task, len(X_train))
    model, _ = train(task, params, X_train, y_train)
    model.compile(X_train)
    model.fhe_circuit_.keygen()
    rows = X_test[: args.rows]
    clear = model.predict(rows)
    model.predict(rows[:1], fhe="execute")  # warm-up

    cores = available_cores()
    result = {"task": args.task, "rows": args.rows, "cores": cores, "runs": []}
    for threads in sorted({1, cores}):
        model.quantized_module_.run_options = RunOptions(fhe_threads=threads)
        load_before = os.getloadavg()[0]
        cpu_start, start = time.process_time(), time.perf_counter()
        encrypted = model.predict(rows, fhe="execute")
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        run = {
            "threads": threads,
            "rows_per_s": args.rows / wall,
            "s_per_row": wall / args.rows,
            "cpu_over_wall": cpu / wall,
            "rows_equal_clear": int(np.sum(encrypted == clear)),
            "load_average_before": load_before,
        }
        result["runs"].append(run)
        print(
            f"{threads} thread(s): {run['rows_per_s']:.2f} rows/s ({run['s_per_row']:.2f} s/row), "
            f"cpu/wall {run['cpu_over_wall']:.2f}, {run['rows_equal_clear']}/{args.rows} rows "
            f"equal clear (load {load_before:.1f})",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps(previous + [result], indent=2))


if __name__ == "__main__":
    main()
