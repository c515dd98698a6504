"""Side by side with Concrete ML 1.9.0: the same tasks, splits and measurement, one venv each.

Usage::

    .venv/bin/python benchmarks/anchor.py measure [--tasks breast_cancer ...]   # qnn_sklearn
    .venv-cml/bin/python benchmarks/anchor.py measure [--tasks breast_cancer ...]  # Concrete ML
    .venv/bin/python benchmarks/anchor.py merge
    ... --smoke                # iris, seed setting, 2 epochs, 1 FHE row: checks the plumbing

``make bench-anchor`` does all three. ``measure`` measures whichever system its venv has
(qnn_sklearn, else ``concrete.ml``) and writes results/anchor_<system>.json, saved after every
row; a row measured again replaces the older one, so tasks can be run one at a time. ``merge``
pairs the two files into results/anchor.json and results/ANCHOR.md, with the latency ratio
ours / Concrete ML.

Two settings per task:

- **defaults**: each estimator at its own defaults. qnn_sklearn gets ``random_state=0``;
  Concrete ML has no ``random_state`` (``torch.manual_seed(0)`` is set before every fit on both
  sides) and no default for ``module__n_layers``, which gets our default, 3. Concrete ML 1.9's
  other defaults (its source, sklearn/qnn.py and qnn_module.py): 4-bit weights and activations,
  ``n_accum_bits=32``, power-of-two scaling (round PBS), lr 0.01, 10 epochs, batch 128, a
  stratified ``ValidSplit(5)`` hold-out.
- **seed**: the seed's network on both (3 linear layers, 3-bit weights and activations,
  ``n_accum_bits=8``, lr 1e-3, batch 64, 50 epochs, the checkerboard 100); whatever the seed
  does not set stays at each system's default (our rounding "auto" and input grid rule, their
  power-of-two scaling and hold-out). Our defaults differ from the seed's network only in
  ``max_epochs="auto"`` (at least 1,000 steps, so 143 epochs on breast_cancer).

**cnn_digits** has one row, ``defaults``: the CNN of examples/cnn_digits.py (cnn_task.py: 8×8
digits as 1×8×8 images in [0, 1], its stratified 75/25 split, 3-bit Brevitas QAT, 40 epochs,
Adam lr 3e-3, batch 64, seed 0), trained in each venv by the same code, then compiled by each
system's own ``compile_brevitas_qat_model`` at its defaults: ``rounding_threshold_bits=None``
(no accumulator rounding) and ``p_error=None``, which both turn into 2^-40 per bootstrap (ours
DEFAULT_P_ERROR, theirs ``manage_parameters_for_pbs_errors``); Concrete ML's ``n_bits=None``
takes the bit widths from Brevitas. Both get one ``QuantIdentity`` after the max pool, which
Concrete ML's QAT import requires before the second conv. The venvs' torch and Brevitas
differ (2.13/0.13 and 2.3.1/0.10.2), so the same seed trains different weights. CompiledCNN
gives it the estimators' ``fit``, ``compile`` and ``predict``, so it is measured as they are.

The hidden width is ×4 the input everywhere, ×1 on MNIST. Every row is measured by the same
functions on both systems, through the API they share: ``fit``, ``predict(fhe="disable")``,
``compile(X_train)`` (which returns the concrete-python circuit), ``circuit.keygen``, and
``predict(row, fhe="execute")``. Bootstraps come from the circuit itself: the total from
``circuit.statistics``, the precisions from its MLIR (circuit_cost.circuit_pbs).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from circuit_cost import circuit_pbs  # noqa: E402
from cnn_task import build_cnn, load, torch_predict, train  # noqa: E402
from task_data import stratified_split  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SYSTEMS = ("qnn_sklearn", "concrete_ml")
TASKS = ("breast_cancer", "digits", "clusters", "mnist", "checkerboard", "cnn_digits")
SETTINGS = ("defaults", "seed")
CNN_TASK = "cnn_digits"
CNN_SETTINGS = ("defaults",)
CNN_COMPILE = {"rounding_threshold_bits": None, "p_error": None}
"""Both systems' defaults for ``compile_brevitas_qat_model``, written out to be recorded."""
SMOKE = {"task": "iris", "setting": "seed", "max_epochs": 2, "fhe_rows": 1}

SEED_NETWORK = {
    "module__n_layers": 3,
    "module__n_w_bits": 3,
    "module__n_a_bits": 3,
    "module__n_accum_bits": 8,
    "lr": 1e-3,
    "batch_size": 64,
}
"""The seed's settings (anchors/concrete_ml_1.9.md, configuration A), given to both systems."""

SEED_EPOCHS = {"checkerboard": 100}
"""The seed's epochs where they are not 50."""

HIDDEN_MULTIPLIER = {"mnist": 1}
"""``n_hidden_neurons_multiplier`` where it is not 4 (both systems' default)."""

VERSIONED_PACKAGES = (
    "qnn_sklearn",
    "concrete-ml",
    "concrete-python",
    "torch",
    "brevitas",
    "skorch",
    "scikit-learn",
    "numpy",
)


# -- what each system is given -----------------------------------------------------------------


def installed_system() -> str:
    """The system this venv can measure: qnn_sklearn in ours, Concrete ML in .venv-cml."""
    for system, module in (("qnn_sklearn", "qnn_sklearn"), ("concrete_ml", "concrete.ml")):
        if importlib.util.find_spec(module):
            return system
    raise SystemExit("Neither qnn_sklearn nor concrete.ml is installed in this venv.")


def estimator_params(system: str, task: str, setting: str, max_epochs: int | None = None) -> dict:
    """The arguments each system's NeuralNetClassifier gets for this task and setting."""
    params = {}
    if system == "qnn_sklearn":
        params["random_state"] = 0
    if setting == "seed":
        params.update(SEED_NETWORK, max_epochs=SEED_EPOCHS.get(task, 50))
    elif system == "concrete_ml":
        params["module__n_layers"] = 3  # no default there; ours is 3
    if task in HIDDEN_MULTIPLIER:
        params["module__n_hidden_neurons_multiplier"] = HIDDEN_MULTIPLIER[task]
    if max_epochs is not None:
        params["max_epochs"] = max_epochs
    return params


def make_classifier(system: str, params: dict):
    """The system's NeuralNetClassifier, imported here: each venv has only one of the two."""
    if system == "qnn_sklearn":
        from qnn_sklearn import NeuralNetClassifier
    else:
        from concrete.ml.sklearn import NeuralNetClassifier
    return NeuralNetClassifier(**params)


def trained_network(system: str, model):
    """The skorch net holding the trained Brevitas network (Concrete ML wraps one)."""
    return model.sklearn_model if system == "concrete_ml" else model


class CompiledCNN:
    """cnn_task's Brevitas CNN behind the calls measure_row makes of an estimator (fit,
    compile, predict), compiled by the system's own ``compile_brevitas_qat_model``."""

    def __init__(self, system: str, compile_args: dict):
        self.system = system
        self.compile_args = compile_args
        self.network = build_cnn(quantize_pool=True)
        self.module = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> CompiledCNN:
        train(self.network, X, y)
        return self

    def compile(self, X: np.ndarray):
        if self.system == "qnn_sklearn":
            from qnn_sklearn.torch import compile_brevitas_qat_model
        else:
            from concrete.ml.torch.compile import compile_brevitas_qat_model
        self.module = compile_brevitas_qat_model(self.network, X, **self.compile_args)
        return self.module.fhe_circuit

    def predict(self, X: np.ndarray, fhe: str) -> np.ndarray:
        return np.asarray(self.module.forward(X, fhe=fhe)).argmax(axis=1)


def make_model(system: str, task: str, params: dict):
    """The CNN for cnn_digits (``params`` are its compile arguments), else the classifier."""
    if task == CNN_TASK:
        return CompiledCNN(system, params)
    return make_classifier(system, params)


def network_labels(system: str, model, X: np.ndarray) -> np.ndarray:
    """Labels from the trained torch network, before integer import."""
    if isinstance(model, CompiledCNN):
        return torch_predict(model.network, X)
    return network_predictions(trained_network(system, model), X, model.classes_)


# -- one row -------------------------------------------------------------------------------------


def network_predictions(net, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Labels from the trained (fake-quantized) torch network, before integer import."""
    logits = np.asarray(net.forward(X).detach().cpu())
    return classes[logits.argmax(axis=1)]


def circuit_facts(circuit) -> dict:
    """Bootstrap count (concrete's statistics), bootstraps by precision (the MLIR), widths."""
    stats = circuit.statistics
    return {
        "pbs_count": int(stats["programmable_bootstrap_count"]),
        "pbs": circuit_pbs(circuit),
        "max_bit_width": int(circuit.graph.maximum_integer_bit_width()),
        "bootstrap_key_bytes": int(stats.get("size_of_bootstrap_keys", 0)),
    }


def time_fhe_rows(model, X: np.ndarray, expected: np.ndarray, n_rows: int) -> list[float]:
    """Seconds of ``predict(row, fhe="execute")`` for rows 1..n_rows, after row 0 as warm-up.

    Each row is one call, as a user would send it, and must give the clear prediction.
    """
    seconds = []
    for index in range(n_rows + 1):
        row = X[index : index + 1]
        start = time.perf_counter()
        prediction = model.predict(row, fhe="execute")
        elapsed = time.perf_counter() - start
        if prediction[0] != expected[index]:
            raise AssertionError(
                f"FHE row {index}: {prediction[0]!r}, the clear prediction {expected[index]!r}"
            )
        if index:
            seconds.append(elapsed)
    return seconds


def measure_row(system: str, task: str, setting: str, data, params: dict, fhe_rows: int) -> dict:
    """Train, compile, score in the clear, generate keys and time FHE rows: one table row.

    Compiled before the clear predictions: the CNN's integer model comes from its compile.
    """
    X_train, X_test, y_train, y_test = data
    load_at_start = os.getloadavg()[0]
    torch.manual_seed(0)
    model = make_model(system, task, params)
    start = time.perf_counter()
    model.fit(X_train, y_train)
    fit_s = time.perf_counter() - start
    network = network_labels(system, model, X_test)
    start = time.perf_counter()
    circuit = model.compile(X_train)
    compile_s = time.perf_counter() - start
    clear_labels = model.predict(X_test, fhe="disable")
    start = time.perf_counter()
    circuit.keygen(force=True)
    keygen_s = time.perf_counter() - start
    fhe_seconds = time_fhe_rows(model, X_test, clear_labels, fhe_rows)
    return {
        "task": task,
        "setting": setting,
        "params": {name: repr(value) for name, value in params.items()},
        "n_train": len(X_train),
        "n_test": len(X_test),
        "fit_s": fit_s,
        "network_accuracy": float(np.mean(network == y_test)),
        "clear_accuracy": float(np.mean(clear_labels == y_test)),
        "network_equals_clear": float(np.mean(network == clear_labels)),
        "compile_s": compile_s,
        **circuit_facts(circuit),
        "keygen_s": keygen_s,
        "fhe_s_rows": fhe_seconds,
        "fhe_s_per_row": statistics.median(fhe_seconds),
        "fhe_rows_equal_clear": len(fhe_seconds) + 1,
        "load_average": [load_at_start, os.getloadavg()[0]],
        "commit": git_commit(),
        "command": command_line(),
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# -- results files ---------------------------------------------------------------------------


def git_commit() -> str:
    """HEAD, with "-dirty" when tracked files differ from it (the measured code may too)."""
    return subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=7"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def command_line() -> str:
    """The command as typed from the repository root: the venv's python and the arguments."""
    python = os.path.relpath(sys.executable) if sys.executable else "python"
    return " ".join([python, os.path.relpath(sys.argv[0]), *sys.argv[1:]])


def package_versions() -> dict:
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def system_file(system: str, smoke: bool, results: Path = RESULTS) -> Path:
    return results / f"anchor{'_smoke' if smoke else ''}_{system}.json"


def read_json(path: Path, empty: dict) -> dict:
    return json.loads(path.read_text()) if path.exists() else empty


def save_row(path: Path, system: str, row: dict) -> None:
    """Add the row to the system's file, replacing an earlier measurement of the same row."""
    data = read_json(path, {"system": system, "rows": []})
    data["versions"] = package_versions()
    key = (row["task"], row["setting"])
    data["rows"] = [old for old in data["rows"] if (old["task"], old["setting"]) != key]
    data["rows"].append(row)
    data["rows"].sort(key=row_order)
    path.write_text(json.dumps(data, indent=1) + "\n")


def row_order(row: dict) -> tuple:
    tasks = (*TASKS, SMOKE["task"])
    return tasks.index(row["task"]), SETTINGS.index(row["setting"])


# -- the merge -------------------------------------------------------------------------------


def latency_ratio(ours: dict | None, theirs: dict | None) -> float | None:
    """Our FHE seconds per row over Concrete ML's; None unless both rows were measured."""
    if ours is None or theirs is None:
        return None
    return ours["fhe_s_per_row"] / theirs["fhe_s_per_row"]


def pair_rows(ours: list[dict], theirs: list[dict]) -> list[dict]:
    """One entry per (task, setting) measured by either system, in table order."""
    by_key = {
        system: {(row["task"], row["setting"]): row for row in rows}
        for system, rows in zip(SYSTEMS, (ours, theirs))
    }
    keys = sorted(
        set(by_key["qnn_sklearn"]) | set(by_key["concrete_ml"]),
        key=lambda key: row_order({"task": key[0], "setting": key[1]}),
    )
    pairs = []
    for task, setting in keys:
        rows = {system: by_key[system].get((task, setting)) for system in SYSTEMS}
        pairs.append(
            {
                "task": task,
                "setting": setting,
                **rows,
                "latency_ratio": latency_ratio(rows["qnn_sklearn"], rows["concrete_ml"]),
            }
        )
    return pairs


def merge(smoke: bool = False, results: Path = RESULTS) -> dict:
    """Pair both systems' files; write anchor.json and ANCHOR.md (smoke: print the table)."""
    files = {
        system: read_json(system_file(system, smoke, results), {"rows": []}) for system in SYSTEMS
    }
    merged = {
        "versions": {system: files[system].get("versions", {}) for system in SYSTEMS},
        "merge_command": command_line(),
        "rows": pair_rows(files["qnn_sklearn"]["rows"], files["concrete_ml"]["rows"]),
    }
    table = markdown(merged)
    if smoke:
        (results / "anchor_smoke.json").write_text(json.dumps(merged, indent=1) + "\n")
        print(table)
    else:
        (results / "anchor.json").write_text(json.dumps(merged, indent=1) + "\n")
        (results / "ANCHOR.md").write_text(table)
    return merged


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def summary_cell(row: dict | None) -> str:
    if row is None:
        return "–"
    return f"{row['clear_accuracy']:.3f} / {row['pbs_count']} / {row['fhe_s_per_row']:.2f}"


def pbs_cell(row: dict) -> str:
    """The bootstraps by precision that the MLIR shows, and those of concrete's count it does
    not (Concrete ML's MaxPool is one ``FHELinalg.maxpool2d`` op, lowered by the compiler)."""
    from report import pbs_text  # report imports qnn_sklearn: only the merge (our venv) needs it

    unread = row["pbs_count"] - sum(pbs["count"] for pbs in row["pbs"])
    return pbs_text(row["pbs"]) + (f" + {unread}×unread" if unread else "")


def detail_line(task: str, setting: str, system: str, row: dict) -> str:
    load_start, load_end = row["load_average"]
    cells = [
        task,
        setting,
        system,
        _f(row["network_accuracy"]),
        _f(row["clear_accuracy"]),
        str(row["pbs_count"]),
        pbs_cell(row),
        str(row["max_bit_width"]),
        _f(row["keygen_s"], 1),
        f"{row['fhe_s_per_row']:.2f} ({', '.join(f'{s:.2f}' for s in row['fhe_s_rows'])})",
        f"{row['fhe_rows_equal_clear']}/{len(row['fhe_s_rows']) + 1}",
        _f(row["fit_s"], 0),
        f"{load_start:.1f} → {load_end:.1f}",
        row["commit"],
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(merged: dict) -> str:
    """ANCHOR.md: the summary (the README's table), every measured figure, the commands."""
    lines = [
        "# qnn_sklearn and Concrete ML 1.9.0, side by side",
        "",
        "Written by `benchmarks/anchor.py merge` from results/anchor_qnn_sklearn.json and "
        "results/anchor_concrete_ml.json. The settings, the splits and the measurement are "
        "described in anchor.py's docstring. Accuracy is the clear (integer) model's, which "
        'every FHE row equalled. FHE s/row: median of single-row `predict(fhe="execute")` '
        "calls after one warm-up row. 2-core machine: read the load beside each figure. "
        "PBS by precision: from the circuit's MLIR; ×unread are bootstraps of concrete's count "
        "that the MLIR does not show as lookups or roundings (Concrete ML's MaxPool is one "
        "`FHELinalg.maxpool2d` op, lowered by the compiler).",
        "",
        "| task | setting | qnn_sklearn: accuracy / PBS / FHE s per row "
        "| Concrete ML 1.9: accuracy / PBS / FHE s per row | latency ratio (ours / theirs) |",
        "|---|---|---|---|---|",
    ]
    for pair in merged["rows"]:
        cells = [
            pair["task"],
            pair["setting"],
            summary_cell(pair["qnn_sklearn"]),
            summary_cell(pair["concrete_ml"]),
            _f(pair["latency_ratio"], 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| task | setting | system | network acc | clear acc | PBS | PBS by precision | max bits "
        "| keygen s | FHE s/row (each row) | FHE = clear | fit s | load (start → end) | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pair in merged["rows"]:
        for system in SYSTEMS:
            if pair[system] is not None:
                lines.append(detail_line(pair["task"], pair["setting"], system, pair[system]))
    commands = sorted({pair[s]["command"] for pair in merged["rows"] for s in SYSTEMS if pair[s]})
    lines += ["", "Commands:", *(f"- `{command}`" for command in commands)]
    for system in SYSTEMS:
        versions = ", ".join(f"{k} {v}" for k, v in merged["versions"][system].items())
        lines.append(f"- {system}'s venv: {versions or 'not measured'}")
    return "\n".join(lines) + "\n"


# -- the command line ------------------------------------------------------------------------


def task_settings(task: str) -> tuple[str, ...]:
    """The settings measured for a task: the CNN has no estimator defaults or seed network."""
    return CNN_SETTINGS if task == CNN_TASK else SETTINGS


def measure(tasks: list[str], smoke: bool, fhe_rows: int) -> None:
    """Measure every (task, setting) with this venv's system, saving each row as it ends."""
    system = installed_system()
    path = system_file(system, smoke)
    if smoke:
        rows = [(SMOKE["task"], SMOKE["setting"])]
        fhe_rows, max_epochs = SMOKE["fhe_rows"], SMOKE["max_epochs"]
    else:
        rows = [(task, setting) for task in tasks for setting in task_settings(task)]
        max_epochs = None
    for task, setting in rows:
        if task == CNN_TASK:
            params, data = CNN_COMPILE, load()
        else:
            params = estimator_params(system, task, setting, max_epochs)
            data = stratified_split(task)
        row = measure_row(system, task, setting, data, params, fhe_rows)
        save_row(path, system, row)
        print(
            f"{system} {task} {setting}: accuracy {row['clear_accuracy']:.3f}, "
            f"{row['pbs_count']} PBS, keygen {row['keygen_s']:.1f} s, "
            f"FHE {row['fhe_s_per_row']:.2f} s/row, load {row['load_average']}",
            flush=True,
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("measure", "merge"))
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--fhe-rows", type=int, default=3, help="timed rows after the warm-up")
    parser.add_argument("--smoke", action="store_true", help=f"only {SMOKE}")
    args = parser.parse_args(argv)
    if args.step == "measure":
        measure(args.tasks, args.smoke, args.fhe_rows)
    else:
        merge(args.smoke)


if __name__ == "__main__":
    main()
