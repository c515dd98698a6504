"""The suite mode: one full row per (task, configuration), from training to real FHE execution.

Each row records train time, the fp32 baseline, the Brevitas (torch) metric, the integer
model's metric (``fhe="disable"``), the simulation's metric on up to 200 test rows and its
agreement with the clear integer model, compile and keygen time, the real FHE latency (median of
``--fhe-rows`` rows after one warm-up row) with its agreement, every PBS (from ``fhe_report()``
and from the compiled circuit), the evaluation key size, and the latency floor.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from circuit_cost import circuit_pbs, floor_seconds, report_pbs
from report import pbs_text
from tasks import Config, Task, load
from training import estimator_params, fp32_baseline, metric, score, train

SIMULATION_ROWS = 200


def measure_isolated(task: Task, config: Config, args, floor) -> list[dict]:
    """:func:`measure` in a fresh process, whose memory goes back to the system when it ends.

    In one process, the sixth 8-bit circuit in a row (configuration A, 5.5 GB of evaluation
    keys each) was killed by the out-of-memory killer on this 24 GB machine (session 4), though
    each estimator was released after its row.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measure, task, config, args, floor).result()


def measure(task: Task, config: Config, args, floor) -> list[dict]:
    """The suite's row for this task and configuration (``random_state=0``)."""
    torch.set_num_threads(args.threads)
    X_train, X_test, y_train, y_test = load(task.name)
    params = estimator_params(config, task, len(X_train), epochs=args.epochs)
    row: dict = {
        "task": task.name,
        "config": config.name,
        "kind": task.kind,
        "metric_name": task.metric_name,
        "n_train": len(X_train),
        "n_test": len(X_test),
        "params": {k: v for k, v in params.items() if not callable(v)},
    }
    log = logger(f"{task.name}/{config.name}")
    row["fp32"] = fp32_baseline(task, params, X_train, y_train, X_test, y_test)
    log(f"fp32 {row['fp32']['metric']:.3f}")

    model, row["train_s"] = train(task, params, X_train, y_train)
    row["hidden"] = model.module_.hidden_widths()
    row.update(score(task, model, X_test, y_test))
    log(
        f"trained in {row['train_s']:.0f}s: torch {row['torch_metric']:.3f}, "
        f"integer {row['integer_metric']:.3f}"
    )

    start = time.perf_counter()
    circuit = model.compile(X_train)
    row["compile_s"] = time.perf_counter() - start
    row.update(circuit_facts(model, circuit))
    row["floor_s"] = floor_seconds(row["pbs_circuit"], floor)
    row.update(simulation(task, model, X_test, y_test))
    log(
        f"compiled in {row['compile_s']:.1f}s, PBS {row['pbs_count']} "
        f"{pbs_text(row['pbs_circuit'])}, simulation == clear on "
        f"{row['simulation']['eq_clear']:.1%} of {row['simulation']['rows']} rows"
    )
    if not args.smoke and args.fhe_rows > 0:
        n_rows, warm_up = fhe_rows(row["floor_s"], args)
        row.update(execute(model, circuit, X_test, model.predict(X_test), n_rows, warm_up, log))
    return [row]


def suite_key(row: dict) -> tuple:
    return (row["task"], row["config"])


def circuit_facts(model, circuit) -> dict:
    """What the compiled circuit costs: its bootstraps (announced and read from the MLIR, and
    whether the two agree with concrete's count), its parameters, complexity and width."""
    report = model.fhe_report()
    facts = {
        "fhe_report": report,
        "pbs_report": report_pbs(report["lookups"]),
        "pbs_circuit": circuit_pbs(circuit),
        "pbs_count": int(circuit.programmable_bootstrap_count),
        "pbs_per_parameter": [
            {
                "polynomial_size": key.polynomial_size(),
                "glwe_dimension": key.glwe_dimension(),
                "lwe_dimension": key.input_lwe_dimension(),
                "level": key.level(),
                "count": int(count),
            }
            for key, count in circuit.programmable_bootstrap_count_per_parameter.items()
        ],
        "complexity": float(circuit.complexity),
        "circuit_max_bit_width": int(circuit.graph.maximum_integer_bit_width()),
    }
    counted = sum(p["count"] for p in facts["pbs_circuit"])
    facts["pbs_circuit_consistent"] = facts["pbs_count"] == counted
    return facts


def simulation(task: Task, model, X_test, y_test) -> dict:
    """``fhe="simulate"`` on up to SIMULATION_ROWS test rows: its speed, its metric, and the
    share of rows whose output integers equal the clear program's (they must all)."""
    module = model.quantized_module_
    n_sim = min(SIMULATION_ROWS, len(X_test))
    q = module.quantize_input(X_test[:n_sim])
    start = time.perf_counter()
    q_sim = module.quantized_forward(q, fhe="simulate")
    simulate_s_per_row = (time.perf_counter() - start) / n_sim
    q_clear = module.quantized_forward(q, fhe="disable")
    sim_out = module.dequantize_output(q_sim)
    sim_pred = model.classes_[sim_out.argmax(1)] if task.kind == "classification" else sim_out[:, 0]
    clear_pred = model.predict(X_test[:n_sim])
    return {
        "simulate_s_per_row": simulate_s_per_row,
        "simulation": {
            "rows": n_sim,
            "metric": metric(task, y_test[:n_sim], sim_pred),
            "clear_metric_same_rows": metric(task, y_test[:n_sim], clear_pred),
            "eq_clear": float(np.mean(np.all(q_sim == q_clear, axis=1))),
        },
    }


def fhe_rows(floor_s: float | None, args) -> tuple[int, bool]:
    """``(timed rows, separate warm-up row?)`` within ``--fhe-budget-s``: slow circuits get
    fewer rows, and the first timed row doubles as the warm-up."""
    n_rows, warm_up = args.fhe_rows, True
    if floor_s and args.fhe_budget_s:
        n_rows = int(max(1, min(n_rows, args.fhe_budget_s // (2 * floor_s))))
        warm_up = 2 * floor_s * (n_rows + 1) <= args.fhe_budget_s
    return n_rows, warm_up


def execute(model, circuit, X_test, clear, n_rows: int, warm_up: bool, log) -> dict:
    """Keygen (timed alone), one warm-up row if ``warm_up``, then ``n_rows`` timed rows."""
    start = time.perf_counter()
    circuit.keygen(force=True)
    out = {"keygen_s": time.perf_counter() - start}
    out["bootstrap_key_bytes"] = int(circuit.size_of_bootstrap_keys)
    out["keyswitch_key_bytes"] = int(circuit.size_of_keyswitch_keys)
    out["evaluation_key_bytes"] = out["bootstrap_key_bytes"] + out["keyswitch_key_bytes"]
    log(f"keygen {out['keygen_s']:.1f}s, eval keys {out['evaluation_key_bytes'] / 2**20:.0f} MB")
    times, equal = [], []
    out["fhe_warmup_row"] = warm_up
    for index in range(int(not warm_up), n_rows + 1):
        start = time.perf_counter()
        prediction = model.predict(X_test[index : index + 1], fhe="execute")
        elapsed = time.perf_counter() - start
        equal.append(bool(np.all(prediction == clear[index : index + 1])))
        if index == 0 and warm_up:
            out["fhe_warmup_s"] = elapsed
        else:
            times.append(elapsed)
        log(f"FHE row {index}: {elapsed:.2f}s, equal to clear: {equal[-1]}")
    out["fhe_row_s"] = times
    out["fhe_s_per_row"] = statistics.median(times)
    out["fhe_eq_clear"] = equal
    return out


def logger(prefix: str):
    """A print with the seconds since this row started: the log of a long row shows its pace."""
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {prefix}: {message}", flush=True)

    return log
