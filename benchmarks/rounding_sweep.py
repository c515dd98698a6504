"""Accuracy against PBS precision: how many accumulator bits the lookups really need.

For each task and bit setting the estimator is trained once; the integer model is then rebuilt
from the same Brevitas network with ``rounding_threshold_bits`` = None, 8, 7, ..., 2 (rounding is
applied after training, so no retraining) and evaluated in the clear (``fhe="disable"``, which
simulation matches bit for bit). With ``--compile`` every variant is also compiled, to read the
PBS precision the circuit actually runs at and its floor latency.

Usage::

    python benchmarks/rounding_sweep.py --tasks digits checkerboard_16 \
        --bits 3,3,8 4,4,10 --rounding none auto auto:0 8 7 6 5 4 3 [--compile]

``auto`` is ``rounding_threshold_bits="auto"``; ``auto:m`` the same rule with margin m
(``qnn_sklearn.quantization.rounding.AUTO_ROUNDING_MARGIN``).

Writes ``benchmarks/results/rounding_sweep.json`` (merged by task, bits, training settings and
rounding) and ``benchmarks/results/ROUNDING.md``, whose floors are recomputed from the current
``pbs_floor.json`` (``--report-only`` rewrites just the markdown).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from qnn_sklearn.quantization import rounding as rounding_module
from qnn_sklearn.quantization.tabulation import bootstraps
from qnn_sklearn.torch import build_brevitas_qat_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pbs_floor import load_floor  # noqa: E402
from report import pbs_text  # noqa: E402
from run import circuit_pbs, floor_seconds, metric, report_pbs  # noqa: E402
from tasks import CONFIGS, TASKS, load  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "rounding_sweep.json"
MARKDOWN = OUT.with_name("ROUNDING.md")


def parse_bits(text: str) -> tuple[int, int, int]:
    w, a, acc = (int(part) for part in text.split(","))
    return w, a, acc


def sweep(
    task_name: str,
    bits,
    roundings,
    epochs,
    do_compile: bool,
    floor,
    lr=None,
    batch_size=None,
    min_steps: int = 0,
) -> list[dict]:
    task = TASKS[task_name]
    X_train, X_test, y_train, y_test = load(task_name)
    config = dataclasses.replace(
        CONFIGS["A"], min_steps=min_steps, batch_size=batch_size or CONFIGS["A"].batch_size
    )
    params = config.estimator_params(task, len(X_train))
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
    start = time.perf_counter()
    model = task.estimator(**params).fit(X_train, y_train)
    train_s = time.perf_counter() - start
    torch_out = model.forward(X_test).detach().numpy()
    if task.kind == "classification":
        torch_metric = metric(task, y_test, model.classes_[torch_out.argmax(1)])
    else:
        torch_metric = metric(task, y_test, torch_out[:, 0])
    rows = []
    exact_module = build_brevitas_qat_model(model.module_, X_train[:1], None)
    for rounding in roundings:
        setting, margin = rounding, None
        if isinstance(rounding, str) and rounding.startswith("auto:"):
            setting, margin = "auto", int(rounding.split(":")[1])
        saved = rounding_module.AUTO_ROUNDING_MARGIN
        rounding_module.AUTO_ROUNDING_MARGIN = saved if margin is None else margin
        try:
            module = build_brevitas_qat_model(model.module_, X_train[:1], setting)
        finally:
            rounding_module.AUTO_ROUNDING_MARGIN = saved
        model.quantized_module_ = module
        prediction = model.predict(X_test)
        layers = module.bitwidth_report()
        test_q = module.quantize_input(X_test)
        exact_out = exact_module.quantized_forward(test_q)
        rounded_out = module.quantized_forward(test_q)
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
            # share of test rows whose output integers equal the unrounded model's
            "rows_equal_unrounded": float(np.mean(np.all(exact_out == rounded_out, axis=1))),
            "lsbs_to_remove": [layer["lsbs_to_remove"] for layer in module.bitwidth_report()],
            "certified_bits": [layer["certified_bits"] for layer in layers],
            "pbs_report": report_pbs(bootstraps(module.steps)),
        }
        if do_compile:
            circuit = model.compile(X_train)
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
    parser.add_argument("--min-steps", type=int, default=0, help="train at least this many steps")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    roundings = [
        None if r == "none" else r if r.startswith("auto") else int(r) for r in args.rounding
    ]
    floor = load_floor()
    data = json.loads(OUT.read_text()) if OUT.exists() else {"rows": []}
    if args.report_only:
        write_markdown(data, floor)
        return
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
                    args.min_steps,
                )
                keys = {_key(r) for r in rows}
                data["rows"] = [r for r in data["rows"] if _key(r) not in keys] + rows
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(data, indent=2, default=_default))
            write_markdown(data, floor)


def write_markdown(data: dict, floor) -> None:
    """One table per task: accuracy and floor latency against the rounding bits."""
    lines = [
        "# Accuracy against rounding_threshold_bits",
        "",
        "Generated by `benchmarks/rounding_sweep.py`. One training per (bits, lr, epochs); the "
        "integer model is rebuilt for each rounding setting (no retraining) and evaluated in the "
        "clear, which simulation equals. *PBS* lists the bootstraps (an exact rounding costs one "
        "small bootstrap per removed bit: *round*); *floor* is their latency from the current "
        "`pbs_floor.json`. bits = weights, activations, n_accum_bits. *= unrounded* is the "
        "share of test rows whose output integers equal those of the same model without "
        'rounding; *auto* is `rounding_threshold_bits="auto"` (margin 1), *auto:m* the same '
        "rule with margin m.",
        "",
    ]
    tasks = list(dict.fromkeys(row["task"] for row in data["rows"]))
    for task in tasks:
        rows = [row for row in data["rows"] if row["task"] == task]
        metric_name = "R²" if TASKS[task].kind == "regression" else "accuracy"
        lines += [
            f"## {task} ({metric_name})",
            "",
            "| bits | lr | epochs | rounding | lsbs removed | torch | integer | = unrounded | PBS "
            "| floor s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            pbs = row.get("pbs_circuit") or row["pbs_report"]
            value = floor_seconds(pbs, floor)
            same = row.get("rows_equal_unrounded")
            lines.append(
                f"| {'/'.join(map(str, row['bits']))} | {row.get('lr', 1e-3):g} | {row['epochs']} "
                f"| {row['rounding'] if row['rounding'] is not None else 'none'} "
                f"| {'/'.join(map(str, row.get('lsbs_to_remove', []))) or '–'} "
                f"| {row['torch_metric']:.3f} | {row['integer_metric']:.3f} "
                f"| {'–' if same is None else f'{same:.1%}'} | {pbs_text(pbs)} "
                f"| {'–' if value is None else f'{value:.2f}'} |"
            )
        lines.append("")
    MARKDOWN.write_text("\n".join(lines))


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
