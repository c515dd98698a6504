"""Accuracy against PBS precision: how many accumulator bits the lookups really need.

For each task and bit setting the estimator is trained once; the integer model is then rebuilt
from the same Brevitas network with ``rounding_threshold_bits`` = None, 8, 7, ..., 2 (rounding is
applied after training, so no retraining) and evaluated in the clear (``fhe="disable"``, which
simulation matches bit for bit). With ``--compile`` every variant is also compiled, to read the
PBS precision the circuit actually runs at and its floor latency.

Usage::

    python benchmarks/rounding_sweep.py --tasks digits checkerboard_16 \
        --bits 3,3,8 4,4,10 --rounding none 8 7 6 5 4 3 [--compile]

Writes ``benchmarks/results/rounding_sweep.json`` (merged by task, bits and rounding) and
prints one table per task.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from qnn_sklearn import NeuralNetClassifier, NeuralNetRegressor
from qnn_sklearn.torch import build_brevitas_qat_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pbs_floor import load_floor  # noqa: E402
from report import pbs_text  # noqa: E402
from run import circuit_pbs, compile_estimator, floor_seconds, metric, report_pbs  # noqa: E402
from tasks import CONFIGS, TASKS, load  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "rounding_sweep.json"


def parse_bits(text: str) -> tuple[int, int, int]:
    w, a, acc = (int(part) for part in text.split(","))
    return w, a, acc


def sweep(
    task_name: str, bits, roundings, epochs, do_compile: bool, floor, lr=None, batch_size=None
) -> list[dict]:
    task = TASKS[task_name]
    X_train, X_test, y_train, y_test = load(task_name)
    params = CONFIGS["A"].estimator_params(task)
    params.update(
        {
            "module__n_w_bits": bits[0],
            "module__n_a_bits": bits[1],
            "module__n_accum_bits": bits[2],
            "rounding_threshold_bits": None,
        }
    )
    if epochs is not None:
        params["max_epochs"] = epochs
    if lr is not None:
        params["lr"] = lr
    if batch_size is not None:
        params["batch_size"] = batch_size
    Estimator = NeuralNetClassifier if task.kind == "classification" else NeuralNetRegressor
    start = time.perf_counter()
    model = Estimator(**params).fit(X_train, y_train)
    train_s = time.perf_counter() - start
    torch_out = model.forward(X_test).detach().numpy()
    if task.kind == "classification":
        torch_metric = metric(task, y_test, model.classes_[torch_out.argmax(1)])
    else:
        torch_metric = metric(task, y_test, torch_out[:, 0])
    rows = []
    for rounding in roundings:
        module = build_brevitas_qat_model(model.module_, X_train[:1], rounding)
        model.quantized_module_ = module
        prediction = model.predict(X_test)
        layers = module.bitwidth_report()
        row = {
            "task": task_name,
            "bits": list(bits),
            "epochs": params["max_epochs"],
            "lr": params["lr"],
            "batch_size": params["batch_size"],
            "rounding": rounding,
            "hidden": model.module_.hidden_widths(),
            "train_s": train_s,
            "torch_metric": torch_metric,
            "integer_metric": metric(task, y_test, prediction),
            "certified_bits": [layer["certified_bits"] for layer in layers],
            "pbs_report": report_pbs(layers),
        }
        if do_compile:
            circuit = compile_estimator(model, X_train)
            row["pbs_circuit"] = circuit_pbs(circuit)
            row["circuit_pbs_count"] = int(circuit.programmable_bootstrap_count)
            row["floor_s"] = floor_seconds(row["pbs_circuit"], floor)
        else:
            row["floor_s"] = floor_seconds(row["pbs_report"], floor)
        rows.append(row)
        pbs = row.get("pbs_circuit", row["pbs_report"])
        print(
            f"{task_name:>16} bits={bits} epochs={params['max_epochs']} lr={params['lr']} "
            f"rounding={rounding!s:>4}: torch {torch_metric:.3f} integer "
            f"{row['integer_metric']:.3f} PBS "
            + pbs_text(pbs)
            + ("" if row["floor_s"] is None else f" floor {row['floor_s']:.2f}s"),
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=["digits"])
    parser.add_argument("--bits", nargs="+", type=parse_bits, default=[(3, 3, 8)])
    parser.add_argument(
        "--rounding", nargs="+", default=["none", "8", "7", "6", "5", "4", "3", "2"]
    )
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, nargs="+", default=[None])
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    roundings = [None if r == "none" else int(r) for r in args.rounding]
    floor = load_floor()
    data = json.loads(OUT.read_text()) if OUT.exists() else {"rows": []}
    for task_name in args.tasks:
        for bits in args.bits:
            for lr in args.lr:
                rows = sweep(
                    task_name,
                    bits,
                    roundings,
                    args.epochs,
                    args.compile,
                    floor,
                    lr,
                    args.batch_size,
                )
                keys = {_key(r) for r in rows}
                data["rows"] = [r for r in data["rows"] if _key(r) not in keys] + rows
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(data, indent=2, default=_default))


def _key(row: dict) -> tuple:
    return (
        row["task"],
        tuple(row["bits"]),
        row["epochs"],
        row.get("lr"),
        row.get("batch_size"),
        row["rounding"],
    )


def _default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


if __name__ == "__main__":
    main()
