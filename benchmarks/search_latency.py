"""Predicted against measured FHE latency of the model search's candidates (issue 16, part 3).

FHEModelSearchCV prices each candidate from its circuit's bootstraps and this machine's cost
table (``qnn_sklearn/search/latency_model.py``); this script checks that price against real
encrypted execution. For each task and candidate: train on the task's training split (its
benchmark protocol, ``tasks.load``), compile, predict the latency, then time
``predict(row, fhe="execute")`` (quantize, encrypt, run, decrypt: what a row costs a user) on
a few test rows after one warm-up row, each result checked equal to the simulation. The
target is a ratio measured / predicted within ±25%.

Both sides move with the machine's load (2 cores shared with other jobs here): the 1-minute
load average is recorded next to every figure, and the table was measured once, at its own
load (``machine_costs.load_average``).

Usage: ``python benchmarks/search_latency.py [--smoke] [--rows 3] [--tasks breast_cancer ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import load  # noqa: E402

from qnn_sklearn import NeuralNetClassifier  # noqa: E402
from qnn_sklearn.quantization.pbs_timing import cached_machine_costs  # noqa: E402
from qnn_sklearn.search.latency_model import pbs_count, predicted_latency_s  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 0.25

CANDIDATES = {
    "defaults": {},  # 3 layers, x4 hidden, 3/3/8 bits, rounding "auto": issue 16's table
    "linear": {"module__n_layers": 1},
    "hidden x1": {"module__n_layers": 2, "module__n_hidden_neurons_multiplier": 1},
    "hidden x1, 2-bit act.": {
        "module__n_layers": 2,
        "module__n_hidden_neurons_multiplier": 1,
        "module__n_a_bits": 2,
    },
}
SMOKE_CANDIDATES = ("linear", "hidden x1, 2-bit act.")


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def timed_fhe_rows(model, X, rows: int) -> dict:
    """``predict(row, fhe="execute")`` on ``rows`` rows of ``X`` after a warm-up row (which also
    makes the keys): their median and each time, whether each equalled the simulation, and
    the load average around them."""
    model.predict(X[:1], fhe="execute")
    times, loads, equal = [], [], True
    for row in X[1 : 1 + rows]:
        loads.append(load_average())
        start = time.perf_counter()
        executed = model.predict(row[None], fhe="execute")
        times.append(time.perf_counter() - start)
        equal &= bool(np.array_equal(executed, model.predict(row[None], fhe="simulate")))
    return {
        "measured_s": statistics.median(times),
        "rows_s": times,
        "execute_equals_simulate": equal,
        "load_average": [min(loads), max(loads)],
    }


def measure(task: str, name: str, params: dict, epochs: int, rows: int, costs) -> dict:
    """Train, compile, predict and time one candidate (see the module docstring)."""
    X_train, X_test, y_train, y_test = load(task)
    model = NeuralNetClassifier(max_epochs=epochs, random_state=0, **params)
    model.fit(X_train, y_train).compile(X_train)
    module = model.quantized_module_
    predicted = predicted_latency_s(module, costs)
    timing = timed_fhe_rows(model, X_test, rows)
    measured = timing["measured_s"]
    return {
        "task": task,
        "candidate": name,
        "params": params,
        "accuracy": float(np.mean(model.predict(X_test) == y_test)),
        "pbs_count": pbs_count(module),
        "circuit_pbs_count": int(model.fhe_circuit_.programmable_bootstrap_count),
        "lookups": model.fhe_report()["lookups"],
        "predicted_s": predicted,
        **timing,
        "ratio": measured / predicted,
        "within_target": abs(measured / predicted - 1) <= TARGET,
    }


def markdown(payload: dict) -> str:
    costs = payload["machine_costs"]
    lines = [
        "# Search latency: predicted against measured FHE s/row",
        "",
        f"Command: `{payload['command']}` at {payload['commit']}; {payload['cores']} cores "
        "shared with other jobs. Cost table measured at load "
        f"{costs['load_average']:.1f}; prediction = call overhead + Σ PBS × cost (see "
        "qnn_sklearn/search/latency_model.py). Measured = median of "
        f"{payload['rows']} `predict(row, fhe='execute')` after a warm-up, each equal to "
        f"simulation. Target: ratio within 1 ± {TARGET}.",
        "",
        "| task | candidate | accuracy | PBS | predicted s/row | measured s/row | ratio | "
        "load during | exec = sim |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["results"]:
        low, high = row["load_average"]
        lines.append(
            f"| {row['task']} | {row['candidate']} | {row['accuracy']:.3f} | {row['pbs_count']} "
            f"| {row['predicted_s']:.3f} | {row['measured_s']:.3f} | {row['ratio']:.2f}"
            f"{'' if row['within_target'] else ' ✗'} | {low:.1f}–{high:.1f} | "
            f"{'yes' if row['execute_equals_simulate'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="breast_cancer, 2 candidates, 1 row")
    parser.add_argument("--tasks", nargs="+", default=["breast_cancer", "digits"])
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    tasks = ["breast_cancer"] if args.smoke else args.tasks
    names = SMOKE_CANDIDATES if args.smoke else tuple(CANDIDATES)
    rows, epochs = (1, 2) if args.smoke else (args.rows, args.epochs)

    costs = cached_machine_costs(progress=print)
    results = []
    for task in tasks:
        for name in names:
            row = measure(task, name, CANDIDATES[name], epochs, rows, costs)
            results.append(row)
            print(
                f"{task:<14} {name:<22} PBS {row['pbs_count']:>5} predicted "
                f"{row['predicted_s']:.3f} s measured {row['measured_s']:.3f} s ratio "
                f"{row['ratio']:.2f} load {row['load_average']}",
                flush=True,
            )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    payload = {
        "command": " ".join(["python benchmarks/search_latency.py", *sys.argv[1:]]),
        "commit": commit,
        "cores": len(os.sched_getaffinity(0)),
        "rows": rows,
        "machine_costs": costs.to_json(),
        "results": results,
    }
    suffix = "_smoke" if args.smoke else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"search_latency{suffix}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / f"SEARCH_LATENCY{suffix}.md").write_text(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
