"""qnn_sklearn's benchmark suite: accuracy, FHE latency and cost per task and configuration.

Usage::

    python benchmarks/run.py                       # every task, configurations A and ours
    python benchmarks/run.py --tasks digits iris --configs ours
    python benchmarks/run.py --smoke               # iris, few epochs, simulation only (< 2 min)

Each (task, configuration) row records train time, the fp32 baseline, the Brevitas (torch)
metric, the integer model's metric (``fhe="disable"``), the simulation's metric on up to 200
test rows and its agreement with the clear integer model, compile and keygen time, the real FHE
latency (median of ``--fhe-rows`` rows after one warm-up row) with its agreement, the PBS count
and precision of every PBS (from ``fhe_report()`` and from the compiled circuit), the evaluation
key size, and the latency floor from ``benchmarks/results/pbs_floor.json``
(``python benchmarks/pbs_floor.py``).

Rows are merged into ``benchmarks/results/results.json`` by (task, config), so a run over a few
tasks updates those rows only; ``RESULTS.md`` is rewritten from the whole JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import skorch
import torch
from sklearn.metrics import accuracy_score, r2_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pbs_floor import load_floor  # noqa: E402
from report import pbs_text, write_markdown  # noqa: E402
from tasks import CONFIGS, TASKS, Task, load  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIMULATION_ROWS = 200


# -- helpers ---------------------------------------------------------------------------------


def metric(task: Task, y_true, y_pred) -> float:
    if task.kind == "classification":
        return float(accuracy_score(y_true, y_pred))
    return float(r2_score(y_true, y_pred))


class FloatMLP(torch.nn.Module):
    """The fp32 baseline: the estimator's layout (same widths, ReLU) without quantization."""

    def __init__(self, input_dim: int, n_outputs: int, hidden: int, n_layers: int):
        super().__init__()
        widths = [input_dim] + [hidden] * (n_layers - 1) + [n_outputs]
        layers: list[torch.nn.Module] = []
        for index, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(torch.nn.Linear(n_in, n_out))
            if index < len(widths) - 2:
                layers.append(torch.nn.ReLU())
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def fp32_baseline(task: Task, params: dict, X_train, y_train, X_test, y_test) -> dict:
    """Train the float MLP in skorch with the estimator's lr, batch size and epochs."""
    n_outputs = len(np.unique(y_train)) if task.kind == "classification" else 1
    common = {
        "module": FloatMLP,
        "module__input_dim": X_train.shape[1],
        "module__n_outputs": n_outputs,
        "module__hidden": X_train.shape[1] * params["module__n_hidden_neurons_multiplier"],
        "module__n_layers": params["module__n_layers"],
        "optimizer": torch.optim.Adam,
        "lr": params["lr"],
        "batch_size": params["batch_size"],
        "max_epochs": params["max_epochs"],
        "train_split": None,
        "verbose": 0,
        "iterator_train__shuffle": True,
    }
    torch.manual_seed(0)
    start = time.perf_counter()
    if task.kind == "classification":
        net = skorch.NeuralNetClassifier(criterion=torch.nn.CrossEntropyLoss, **common)
        net.fit(X_train, y_train.astype(np.int64))
        prediction = net.predict(X_test)
    else:
        net = skorch.NeuralNetRegressor(**common)
        net.fit(X_train, y_train.reshape(-1, 1))
        prediction = net.predict(X_test)[:, 0]
    return {"metric": metric(task, y_test, prediction), "train_s": time.perf_counter() - start}


_LOOKUP = re.compile(
    r'"FHE(?:Linalg)?\.apply_(?:mapped_|multi_)?lookup_table"\(.*?\) : '
    r"\((?:tensor<([\dx]+)x)?!FHE\.eint<(\d+)>"
)
_ROUND = re.compile(
    r'"FHE(?:Linalg)?\.round"\(.*?\) : \((?:tensor<([\dx]+)x)?!FHE\.eint<(\d+)>>?\) -> '
    r"(?:tensor<[\dx]+x)?!FHE\.eint<(\d+)>"
)


def _elements(shape: str | None) -> int:
    return int(np.prod([int(d) for d in shape.split("x")])) if shape else 1


def circuit_pbs(circuit) -> list[dict]:
    """The bootstraps of the compiled circuit, read from its MLIR: ``{"kind", "count",
    "precision"}`` per operation.

    A table lookup on ``eint<p>`` is one PBS of precision p per element. An exact
    ``round_bit_pattern`` (``FHE.round`` from ``eint<a>`` to ``eint<b>``) costs one small
    bootstrap per removed bit and element (a - b of them); we count those at precision 1, the
    precision of the parameters concrete picks for them.
    """
    rows = []
    for line in circuit.mlir.splitlines():
        if match := _ROUND.search(line):
            removed = int(match.group(2)) - int(match.group(3))
            count = _elements(match.group(1)) * removed
            rows.append({"kind": "round", "count": count, "precision": 1})
        elif match := _LOOKUP.search(line):
            precision = int(match.group(2))
            rows.append(
                {"kind": "lookup", "count": _elements(match.group(1)), "precision": precision}
            )
    return rows


def report_pbs(lookups: list[dict]) -> list[dict]:
    """The bootstraps that ``fhe_report()["lookups"]`` announces, in :func:`circuit_pbs`' form."""
    rows = []
    for lookup in lookups:
        if lookup["lsbs_to_remove"]:
            count = lookup["count"] * lookup["lsbs_to_remove"]
            rows.append({"kind": "round", "count": count, "precision": 1})
        rows.append({"kind": "lookup", "count": lookup["count"], "precision": lookup["precision"]})
    return rows


def floor_seconds(pbs: list[dict], floor: dict | None) -> float | None:
    """Σ over PBS of one PBS's latency at its precision / cores (= its all-cores wall time);
    a removed bit of exact rounding at ``floor["round"]`` when measured (else as a 1-bit PBS)."""
    if floor is None:
        return None
    total = 0.0
    for row in pbs:
        if row.get("kind") == "round" and "round" in floor:
            total += row["count"] * floor["round"]
        elif row["precision"] in floor:
            total += row["count"] * floor[row["precision"]]
        else:
            return None
    return float(total)


# -- one benchmark row -----------------------------------------------------------------------


def run_isolated(task: Task, config, args, floor) -> dict:
    """:func:`run_one` in a fresh process, whose memory goes back to the system when it ends.

    In one process, the sixth 8-bit circuit in a row (configuration A, 5.5 GB of evaluation
    keys each) was killed by the out-of-memory killer on this 24 GB machine (session 4), though
    each estimator was released after its row.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_one, task, config, args, floor).result()


def run_one(task: Task, config, args, floor) -> dict:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    X_train, X_test, y_train, y_test = load(task.name)
    params = config.estimator_params(task, len(X_train))
    if args.epochs is not None:
        params["max_epochs"] = args.epochs
    row: dict = {
        "task": task.name,
        "config": config.name,
        "kind": task.kind,
        "metric_name": task.metric_name,
        "n_train": len(X_train),
        "n_test": len(X_test),
        "params": {k: v for k, v in params.items() if not callable(v)},
    }
    log = _logger(f"{task.name}/{config.name}")

    row["fp32"] = fp32_baseline(task, params, X_train, y_train, X_test, y_test)
    log(f"fp32 {row['fp32']['metric']:.3f}")

    model = task.estimator(**params)
    start = time.perf_counter()
    model.fit(X_train, y_train)
    row["train_s"] = time.perf_counter() - start
    row["hidden"] = model.module_.hidden_widths()

    # torch (Brevitas, fake-quantized) and the integer model in the clear
    torch_out = np.asarray(model.forward(X_test).detach().cpu().numpy())
    clear = model.predict(X_test)
    if task.kind == "classification":
        torch_pred = model.classes_[torch_out.argmax(axis=1)]
        row["torch_metric"] = metric(task, y_test, torch_pred)
        row["integer_eq_torch"] = float(np.mean(torch_pred == clear))
    else:
        row["torch_metric"] = metric(task, y_test, torch_out[:, 0])
        row["integer_eq_torch"] = None
    row["integer_metric"] = metric(task, y_test, clear)
    log(
        f"trained in {row['train_s']:.0f}s: torch {row['torch_metric']:.3f}, "
        f"integer {row['integer_metric']:.3f}"
    )

    # compile, then simulate on up to SIMULATION_ROWS test rows
    start = time.perf_counter()
    circuit = model.compile(X_train)
    row["compile_s"] = time.perf_counter() - start
    report = model.fhe_report()
    row["fhe_report"] = report
    row["pbs_report"] = report_pbs(report["lookups"])
    row["pbs_circuit"] = circuit_pbs(circuit)
    row["pbs_count"] = int(circuit.programmable_bootstrap_count)
    row["pbs_circuit_consistent"] = row["pbs_count"] == sum(p["count"] for p in row["pbs_circuit"])
    row["pbs_per_parameter"] = [
        {
            "polynomial_size": key.polynomial_size(),
            "glwe_dimension": key.glwe_dimension(),
            "lwe_dimension": key.input_lwe_dimension(),
            "level": key.level(),
            "count": int(count),
        }
        for key, count in circuit.programmable_bootstrap_count_per_parameter.items()
    ]
    row["complexity"] = float(circuit.complexity)
    row["circuit_max_bit_width"] = int(circuit.graph.maximum_integer_bit_width())
    row["floor_s"] = floor_seconds(row["pbs_circuit"], floor)

    module = model.quantized_module_
    n_sim = min(SIMULATION_ROWS, len(X_test))
    q = module.quantize_input(X_test[:n_sim])
    start = time.perf_counter()
    q_sim = module.quantized_forward(q, fhe="simulate")
    row["simulate_s_per_row"] = (time.perf_counter() - start) / n_sim
    q_clear = module.quantized_forward(q, fhe="disable")
    sim_out = module.dequantize_output(q_sim)
    sim_pred = model.classes_[sim_out.argmax(1)] if task.kind == "classification" else sim_out[:, 0]
    row["simulation"] = {
        "rows": n_sim,
        "metric": metric(task, y_test[:n_sim], sim_pred),
        "clear_metric_same_rows": metric(task, y_test[:n_sim], clear[:n_sim]),
        "eq_clear": float(np.mean(np.all(q_sim == q_clear, axis=1))),
    }
    log(
        f"compiled in {row['compile_s']:.1f}s, PBS {row['pbs_count']} "
        f"{pbs_text(row['pbs_circuit'])}, simulation == clear on "
        f"{row['simulation']['eq_clear']:.1%} of {n_sim} rows"
    )

    if not args.smoke and args.fhe_rows > 0:
        n_rows, warm_up = args.fhe_rows, True
        if row["floor_s"] and args.fhe_budget_s:
            # Slow circuits: fewer rows, and the first timed row doubles as the warm-up.
            n_rows = int(max(1, min(n_rows, args.fhe_budget_s // (2 * row["floor_s"]))))
            warm_up = 2 * row["floor_s"] * (n_rows + 1) <= args.fhe_budget_s
        row.update(_execute(model, circuit, X_test, clear, n_rows, warm_up, log))
        if row["floor_s"]:
            row["latency_over_floor"] = row["fhe_s_per_row"] / row["floor_s"]
    return row


def _execute(model, circuit, X_test, clear, n_rows: int, warm_up: bool, log) -> dict:
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


def _logger(prefix: str):
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {prefix}: {message}", flush=True)

    return log


# -- main ------------------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="iris, few epochs, simulation only")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=None)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=None)
    parser.add_argument("--epochs", type=int, default=None, help="override every task's epochs")
    parser.add_argument("--fhe-rows", type=int, default=3, help="timed FHE rows (0: skip FHE)")
    parser.add_argument(
        "--fhe-budget-s",
        type=float,
        default=900.0,
        help="seconds of FHE execution per row of the table, estimated as 2 × floor per FHE "
        "row: slower circuits get fewer timed rows (at least 1) and no separate warm-up",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file to merge rows into")
    parser.add_argument(
        "--skip-existing", action="store_true", help="keep rows already in the JSON file"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="recompute the floor columns from pbs_floor.json and rewrite the markdown",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.tasks = args.tasks or ["iris"]
        args.epochs = args.epochs or 5
    tasks = args.tasks or list(TASKS)
    configs = args.configs or list(CONFIGS)
    out = args.out or RESULTS / ("results_smoke.json" if args.smoke else "results.json")
    markdown = out.with_name("RESULTS_smoke.md" if args.smoke else "RESULTS.md")
    floor = load_floor()
    if floor is None:
        print("No benchmarks/results/pbs_floor.json: run benchmarks/pbs_floor.py for the floor.")

    data = json.loads(out.read_text()) if out.exists() else {"rows": []}
    if args.report_only:
        for row in data["rows"]:
            row["floor_s"] = floor_seconds(row["pbs_circuit"], floor)
            if row["floor_s"] and "fhe_s_per_row" in row:
                row["latency_over_floor"] = row["fhe_s_per_row"] / row["floor_s"]
        out.write_text(json.dumps(data, indent=2, default=_json_default))
        write_markdown(data, markdown, smoke=args.smoke)
        print(f"rewrote {out} and {markdown}")
        return
    wall = time.perf_counter()
    for task_name in tasks:
        for config_name in configs:
            done = {(r["task"], r["config"]) for r in data["rows"]}
            if args.skip_existing and (task_name, config_name) in done:
                continue
            row = run_isolated(TASKS[task_name], CONFIGS[config_name], args, floor)
            row["load_average"] = os.getloadavg()
            row["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
            data["rows"] = [
                r for r in data["rows"] if (r["task"], r["config"]) != (task_name, config_name)
            ] + [row]
            data["machine"] = {"cores": os.cpu_count(), "platform": platform.platform()}
            data["configs"] = {name: CONFIGS[name].description for name in CONFIGS}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(data, indent=2, default=_json_default))
            write_markdown(data, markdown, smoke=args.smoke)
    print(f"done in {time.perf_counter() - wall:.0f}s: {out}, {markdown}")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    main()
