"""Rows per second of FHE simulation: row by row on the FHE circuit, and batched.

``QuantizedModule.quantized_forward(q, fhe="simulate")`` runs rows in batches of
``module.run_options.simulation_batch`` through a simulation-only circuit (same program, same
configuration, a batch axis, no keys). This script times both paths, and the clear program, on
a 3-bit post-training-quantized MLP of a given shape, and checks that simulation equals the
clear integer forward on every row (half of them far outside the calibration range).

Usage: ``python benchmarks/simulation_speed.py [--shape 64 128 10] [--rows 20000]
[--batches 64 256] [--rounding none|auto|N]``, or ``--task iris`` for the benchmark's "ours"
model of a task (rows drawn from its train split, scaled by 0.5–3).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from qnn_sklearn.torch import build_torch_model

OUT = Path(__file__).resolve().parent / "results" / "simulation_speed.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs="+", type=int, default=[64, 128, 10])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--row-by-row", type=int, default=200)
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--rounding", default="none")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--task", default=None, help="instead of --shape: the task's 'ours' model (tasks.py)"
    )
    args = parser.parse_args()
    if args.task:
        measure_task(args)
        return
    rounding = {"none": None, "auto": "auto"}.get(args.rounding, args.rounding)
    rounding = int(rounding) if isinstance(rounding, str) and rounding.isdigit() else rounding

    torch.manual_seed(0)
    layers = []
    for n_in, n_out in zip(args.shape[:-1], args.shape[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).eval()
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(500, args.shape[0])).astype(np.float32)
    x = rng.normal(size=(args.rows, args.shape[0]))
    x[args.rows // 2 :] *= rng.uniform(1, 100, size=(args.rows - args.rows // 2, 1))
    module = build_torch_model(model, calibration, n_bits=3, rounding_threshold_bits=rounding)
    module.compile(calibration)
    q = module.quantize_input(x)
    result = {
        "shape": args.shape,
        "rounding": rounding,
        "pbs_per_row": int(module.fhe_circuit.programmable_bootstrap_count),
        "rows": args.rows,
    }

    start = time.perf_counter()
    clear = module.quantized_forward(q)
    result["clear_rows_per_s"] = args.rows / (time.perf_counter() - start)

    circuit = module.fhe_circuit
    n = args.row_by_row
    start = time.perf_counter()
    single = np.concatenate([np.asarray(circuit.simulate(row[None])) for row in q[:n]])
    result["row_by_row_rows_per_s"] = n / (time.perf_counter() - start)
    result["row_by_row_equal_clear"] = bool(np.array_equal(single, clear[:n]))
    print(f"row by row: {result['row_by_row_rows_per_s']:,.1f} rows/s", flush=True)

    result["batched"] = []
    for batch in args.batches:
        module.run_options = replace(module.run_options, simulation_batch=batch)
        start = time.perf_counter()
        module._simulation_circuit()
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        simulated = module.quantized_forward(q, fhe="simulate")
        elapsed = time.perf_counter() - start
        mismatched = int(np.any(simulated != clear, axis=1).sum())
        result["batched"].append(
            {
                "batch": batch,
                "compile_s": compile_s,
                "rows_per_s": args.rows / elapsed,
                "rows_not_equal_clear": mismatched,
                "load_average": os.getloadavg()[0],
            }
        )
        print(
            f"batch {batch:>5}: compile {compile_s:.1f}s, {args.rows / elapsed:,.0f} rows/s, "
            f"{mismatched} of {args.rows} rows differ from clear "
            f"(load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    result["load_average_at_end"] = os.getloadavg()
    print(
        f"clear {result['clear_rows_per_s']:,.0f} rows/s; row by row "
        f"{result['row_by_row_rows_per_s']:,.0f} rows/s (equal: {result['row_by_row_equal_clear']})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps(previous + [result], indent=2))


def measure_task(args) -> None:
    """Rows/s of batched simulation for the benchmark's "ours" model of one task."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tasks import CONFIGS, TASKS, load
    from training import estimator_params, train

    task = TASKS[args.task]
    X_train, _, y_train, _ = load(args.task)
    params = estimator_params(CONFIGS["ours"], task, len(X_train))
    model, _ = train(task, params, X_train, y_train)
    model.compile(X_train)
    module = model.quantized_module_
    rng = np.random.default_rng(0)
    x = X_train[rng.integers(0, len(X_train), args.rows)]
    q = module.quantize_input(x * rng.uniform(0.5, 3.0, size=(args.rows, 1)))
    start = time.perf_counter()
    module._simulation_circuit()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    simulated = module.quantized_forward(q, fhe="simulate")
    rows_per_s = args.rows / (time.perf_counter() - start)
    mismatched = int(np.any(simulated != module.quantized_forward(q), axis=1).sum())
    result = {
        "task": args.task,
        "pbs_per_row": int(module.fhe_circuit.programmable_bootstrap_count),
        "rows": args.rows,
        "batch": module.run_options.simulation_batch,
        "compile_s": compile_s,
        "rows_per_s": rows_per_s,
        "rows_not_equal_clear": mismatched,
        "load_average": os.getloadavg()[0],
    }
    print(
        f"{args.task}: {result['pbs_per_row']} PBS per row, {rows_per_s:,.0f} rows/s, "
        f"{mismatched} of {args.rows} rows differ from clear (load {os.getloadavg()[0]:.1f})"
    )
    previous = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps(previous + [result], indent=2))


if __name__ == "__main__":
    main()
