"""The seeds, sweep and rounding modes: what each measures for one task and configuration.

- seeds: the configuration trained once per ``random_state``, scored on the test split. One
  seed says little: a network of 3-bit integers changes its function in jumps while it trains,
  and the small test splits (iris: 38 rows) move by a row at a time.
- sweep: a candidate trained on 80% of the train split once per seed, scored by its mean on the
  other 20% and priced by its floor (its costliest seed's); :func:`selected` picks the cheapest
  reaching the task's target. The test metric is recorded for information only.
- rounding: the configuration trained once, its integer model rebuilt from the same Brevitas
  network at each post-training ``rounding_threshold_bits`` (no retraining): how many
  accumulator bits the lookups really need.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
from circuit_cost import circuit_pbs, floor_seconds, report_pbs
from tasks import TARGETS, Config, Task, load
from training import estimator_params, score, train, validation_split

from qnn_sklearn.quantization import rounding as rounding_module
from qnn_sklearn.quantization.tabulation import bootstraps
from qnn_sklearn.torch import build_brevitas_qat_model


def seed_rows(task: Task, config: Config, args, floor) -> list[dict]:
    """One row per seed: torch and integer test metrics and their agreement."""
    X_train, X_test, y_train, y_test = load(task.name)
    rows = []
    for seed in args.seeds:
        params = estimator_params(config, task, len(X_train), seed, args.epochs)
        model, train_s = train(task, params, X_train, y_train)
        rows.append(
            {
                "task": task.name,
                "config": config.name,
                "seed": seed,
                **score(task, model, X_test, y_test),
                "hidden": model.module_.hidden_widths(),
                "epochs": params["max_epochs"],
                "train_s": train_s,
                "load_average": os.getloadavg()[0],
                "commit": _commit(),
            }
        )
    return rows


def seed_key(row: dict) -> tuple:
    return (row["task"], row["config"], row["seed"])


def sweep_rows(task: Task, config: Config, args, floor) -> list[dict]:
    """The candidate's row: validation metric averaged over the seeds, costliest seed's PBS."""
    X_fit, X_val, X_test, y_fit, y_val, y_test = validation_split(task)
    val, test, costliest, train_s = [], [], None, 0.0
    for seed in args.seeds:
        params = estimator_params(config, task, len(X_fit), seed, args.epochs)
        model, seconds = train(task, params, X_fit, y_fit)
        train_s += seconds
        val.append(score(task, model, X_val, y_val)["integer_metric"])
        test.append(score(task, model, X_test, y_test)["integer_metric"])
        pbs = report_pbs(model.fhe_report()["lookups"])
        cost = floor_seconds(pbs, floor) or 0.0
        if costliest is None or cost > costliest[0]:
            costliest = (cost, pbs, model.module_.hidden_widths())
    return [
        {
            "task": task.name,
            "config": config.name,
            **sweep_setting(params),
            "seeds": list(args.seeds),
            "hidden": costliest[2],
            "train_s": train_s / len(args.seeds),
            "val_metric": float(np.mean(val)),
            "val_metrics": val,
            "test_metric": float(np.mean(test)),
            "pbs_report": costliest[1],
        }
    ]


def sweep_setting(params: dict) -> dict:
    """The estimator parameters a sweep row is told apart by (its merge key's fields)."""
    bits = [params[f"module__n_{name}_bits"] for name in ("w", "a", "accum")]
    input_bits = params.get("module__n_input_bits")
    return {
        "n_layers": params["module__n_layers"],
        "multiplier": params["module__n_hidden_neurons_multiplier"],
        "bits": bits,
        "rounding": params["rounding_threshold_bits"],
        "input_signed": params.get("module__quant_signed", True),
        "input_bits": bits[1] if input_bits is None else input_bits,
        "prune_neurons": params.get("module__n_prune_neurons_percentage", 0.0),
        "epochs": params["max_epochs"],
        "lr": params["lr"],
    }


def sweep_key(row: dict) -> tuple:
    """A candidate's setting and seeds (rows written before a field existed take its default)."""
    return (
        row["task"],
        row["n_layers"],
        row["multiplier"],
        tuple(row["bits"]),
        str(row["rounding"]),
        row["epochs"],
        row["lr"],
        tuple(row.get("seeds", [0])),
        row.get("input_signed", True),
        row.get("prune_neurons", 0.0),
        row.get("input_bits", row["bits"][1]),
    )


def selected(rows: list[dict]) -> dict | None:
    """Cheapest row whose validation metric reaches the task's target (ties: better val);
    when none does, the best validation metric (ties: cheapest). None without a target."""
    target = TARGETS.get(rows[0]["task"], (None,))[0]
    if target is None:
        return None
    reaching = [row for row in rows if row["val_metric"] >= target]
    if not reaching:
        return min(rows, key=lambda row: (-row["val_metric"], round(row["floor_s"], 3)))
    return min(reaching, key=lambda row: (round(row["floor_s"], 3), -row["val_metric"]))


def rounding_rows(task: Task, config: Config, args, floor) -> list[dict]:
    """One row per ``--round-after`` value, all from one training of the configuration."""
    X_train, X_test, y_train, y_test = load(task.name)
    params = estimator_params(config, task, len(X_train), epochs=args.epochs)
    model, train_s = train(task, params, X_train, y_train)
    unrounded = build_brevitas_qat_model(model.module_, X_train[:1], None)
    q_test = unrounded.quantize_input(X_test)
    rows = []
    for rounding in args.round_after:
        module = rounded_module(model.module_, X_train, rounding)
        model.quantized_module_ = module
        layers = module.bitwidth_report()
        row = {
            "task": task.name,
            "config": config.name,
            "bits": [params[f"module__n_{name}_bits"] for name in ("w", "a", "accum")],
            "epochs": params["max_epochs"],
            "lr": params["lr"],
            "batch_size": params["batch_size"],
            "rounding": rounding,
            "hidden": model.module_.hidden_widths(),
            "train_s": train_s,
            **score(task, model, X_test, y_test),
            # share of test rows whose output integers equal the unrounded model's
            "rows_equal_unrounded": rows_equal(unrounded, module, q_test),
            "lsbs_to_remove": [layer["lsbs_to_remove"] for layer in layers],
            "certified_bits": [layer["certified_bits"] for layer in layers],
            "pbs_report": report_pbs(bootstraps(module.steps)),
        }
        if args.compile:
            circuit = model.compile(X_train)
            row["pbs_circuit"] = circuit_pbs(circuit)
            row["circuit_pbs_count"] = int(circuit.programmable_bootstrap_count)
        rows.append(row)
    return rows


def rounding_key(row: dict) -> tuple:
    """One training's setting and the rounding applied after it."""
    return (
        row["task"],
        tuple(row["bits"]),
        row["epochs"],
        row.get("lr"),
        row.get("batch_size"),
        row["rounding"],
    )


def rows_equal(module_a, module_b, q_x) -> float:
    """The share of rows whose output integers the two integer models agree on."""
    same = module_a.quantized_forward(q_x) == module_b.quantized_forward(q_x)
    return float(np.mean(np.all(same, axis=1)))


def rounded_module(network, X_train, rounding):
    """The integer model of ``network`` rounded after training: ``rounding`` is None, an int,
    ``"auto"`` or ``"auto:m"`` (the auto rule with margin m instead of the library's)."""
    setting, margin = rounding, rounding_module.AUTO_ROUNDING_MARGIN
    if isinstance(rounding, str) and rounding.startswith("auto:"):
        setting, margin = "auto", int(rounding.split(":")[1])
    saved = rounding_module.AUTO_ROUNDING_MARGIN
    rounding_module.AUTO_ROUNDING_MARGIN = margin
    try:
        return build_brevitas_qat_model(network, X_train[:1], setting)
    finally:
        rounding_module.AUTO_ROUNDING_MARGIN = saved


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
