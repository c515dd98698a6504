"""Does training hold on the user's settings? Four parts, one JSON and one markdown table each.

Usage::

    python benchmarks/robustness.py --part sweep       # lr × batch × epochs × seeds, checkerboard
    python benchmarks/robustness.py --part defaults    # estimator defaults vs scikit-learn's MLP
    python benchmarks/robustness.py --part speed       # per-step cost vs plain skorch, 100k rows
    python benchmarks/robustness.py --part spread      # defaults over 20 seeds, 1 and 3 networks
    python benchmarks/robustness.py --smoke            # every part on a few points (CI)

- **sweep**: the seed's checkerboard (3/3 bits, ``n_accum_bits=8``, ×50 hidden, 3 layers,
  default rounding) at every point of lr ∈ {1e-3, 3e-3, 1e-2} × batch ∈ {64, 128} × epochs ∈
  {60, 100} × seeds 0–2. Each point: integer accuracy on the test split and the share of test
  rows where torch and the integer model agree. The table reports the worst point next to the
  best.
- **defaults**: ``NeuralNetClassifier(random_state=seed)`` /
  ``NeuralNetRegressor(random_state=seed)``, seeds 0–2 (the target is seed 0's; the others
  give the worst case), against scikit-learn's ``MLPClassifier`` / ``MLPRegressor``
  (``random_state=0, max_iter=500``), same standardized 75/25 split, with the FHE cost each
  default implies (PBS count, largest precision, the floor from ``pbs_floor.json``).
- **spread**: the defaults over more seeds (``--spread-seeds``, 20) on the small sets, where a
  seed moves a test row either way, with the MLP at each seed; and the defaults with
  ``n_networks`` (``--spread-networks``, 3) at each seed: whether averaging networks, at that
  many times the bootstraps, removes the seeds that miss.
- **speed**: milliseconds per optimizer step (each whole epoch's wall time over its steps) of
  the estimator at its defaults against plain skorch training a float MLP of the same widths,
  on breast_cancer (100 epochs, 5 pairs of fits) and ``make_classification(100_000, 50)`` (10
  epochs: the issue's bound for it is 5 minutes), and each fit's wall time.

Results: results/robustness.json and results/ROBUSTNESS.md (``--smoke``: *_smoke.*), saved after
every row. The speed part runs both sides on one torch thread; the other parts let the estimator
choose (sklearn/training_threads.py). Run alone on the machine.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import skorch
import torch
from sklearn.datasets import make_classification
from sklearn.metrics import accuracy_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from skorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402
from circuit_cost import floor_seconds, report_pbs  # noqa: E402
from pbs_floor import load_floor  # noqa: E402
from tasks import TASKS, checkerboard, load  # noqa: E402
from training import FloatMLP, metric  # noqa: E402

from qnn_sklearn import NeuralNetClassifier  # noqa: E402
from qnn_sklearn.torch.network import SparseQuantNeuralNetwork  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

SWEEP = {"lr": (1e-3, 3e-3, 1e-2), "batch_size": (64, 128), "max_epochs": (60, 100)}
SWEEP_SEEDS = (0, 1, 2)
SWEEP_TARGET = 0.92
CHECKERBOARD_NETWORK = {
    "module__n_layers": 3,
    "module__n_hidden_neurons_multiplier": 50,
    "module__n_w_bits": 3,
    "module__n_a_bits": 3,
    "module__n_accum_bits": 8,
    "module__n_input_bits": 3,
}
"""The issue's checkerboard network (its inputs at 3 bits, as when the issue measured it);
everything else is the estimator's default."""

DEFAULT_TASKS = ("iris", "wine", "breast_cancer", "digits", "clusters", "mnist")
REGRESSION_TASKS = ("diabetes", "make_regression")
NETWORK_DEFAULT_MULTIPLIER = (
    inspect.signature(SparseQuantNeuralNetwork).parameters["n_hidden_neurons_multiplier"].default
)
"""The network's default ``n_hidden_neurons_multiplier``; a task with another one (MNIST's ×1,
as the issue measured it: ×4 would be 3,136 neurons per layer) gets its own."""
DEFAULTS_SEEDS = (0, 1, 2)
"""``random_state`` of each default fit: the issue's 0, and two more for the worst case."""
DEFAULTS_MARGIN = {"classification": 0.02, "regression": 0.03}
"""The issue's targets: accuracy within 2 points, R² within 0.03 of scikit-learn's MLP."""
GAP_TOLERANCE = 1e-9
"""A gap of exactly the margin is within it: digits' 438 against 429 rows of 450 is 0.02,
which floating point makes 0.02000000000000001."""

SPEED_EPOCHS = {"breast_cancer": 100, "make_classification": 10}
"""Epochs timed per task: the issue's 10 on the 100k rows; on breast_cancer (7 steps, about
30 ms an epoch) 10 epochs gave 3.6× and 4.4× on two runs of the same code, so it gets 100."""
SPEED_REPEATS = {"breast_cancer": 9, "make_classification": 1}
"""Pairs of fits (ours, then plain skorch) per task. On this shared machine the speed of both
sides drifts by up to 2× within minutes (plain skorch's breast_cancer step took 1.5–2.7 ms
in one hour), and breast_cancer's fits last seconds: its ratio is the median of 9 pairs, with
the worst and best next to it (5 pairs gave medians of 2.09× and 1.95× on two runs an hour
apart, their pairs between 1.57× and 2.61×). The 100k-row fits last minutes, which averages
the drift."""
LARGE_ROWS, LARGE_FEATURES = 100_000, 50

SPREAD_TASKS = ("iris", "wine", "breast_cancer", "digits", "diabetes")
"""The spread part's tasks: the small test sets, where one row is 0.2 to 2.6 points of
accuracy and the defaults table's seeds 0–2 move by a row either way, and diabetes, whose R²
moved by 0.06 over them."""
SPREAD_SEEDS = 20
SPREAD_NETWORKS = 3
MISSED_ROWS_SHOWN = 8
"""Test rows the spread table names per classifier, the most often missed first."""

PARTS = ("sweep", "defaults", "speed", "spread")


def sweep_rows(smoke: bool, grid_values: dict) -> Iterator[dict]:
    X_train, X_test, y_train, y_test = (
        part.astype(np.float32) if part.dtype.kind == "f" else part for part in checkerboard()
    )
    grid = list(itertools.product(*(grid_values[name] for name in (*SWEEP, "seeds"))))
    if smoke:
        grid, X_train, y_train = [(3e-3, 128, 2, 0)], X_train[:1000], y_train[:1000]
    for lr, batch_size, epochs, seed in grid:
        params = {
            **CHECKERBOARD_NETWORK,
            "lr": lr,
            "batch_size": batch_size,
            "max_epochs": epochs,
            "random_state": seed,
        }
        start = time.perf_counter()
        model = NeuralNetClassifier(**params).fit(X_train, y_train)
        seconds = time.perf_counter() - start
        integer = model.predict(X_test)
        torch_pred = model.classes_[model.forward(X_test).detach().numpy().argmax(axis=1)]
        row = {
            "lr": lr,
            "batch_size": batch_size,
            "epochs": epochs,
            "seed": seed,
            "integer_accuracy": float(accuracy_score(y_test, integer)),
            "integer_eq_torch": float(np.mean(integer == torch_pred)),
            "train_s": seconds,
        }
        yield row


def defaults_rows(smoke: bool, floor: dict | None, names: list[str]) -> Iterator[dict]:
    """One row per task and seed: ours with only ``random_state`` set, the MLP with its
    defaults and ``random_state=0`` (the issue's reference, one score per task)."""
    names, seeds = (("iris",), (0,)) if smoke else (names, DEFAULTS_SEEDS)
    for name in names:
        task = TASKS[name]
        split = X_train, X_test, y_train, y_test = load(name)
        mlp = metric(task, y_test, _mlp_predictions(task, 0, split))
        extra = _task_settings(task, smoke)
        for seed in seeds:
            start = time.perf_counter()
            model = task.estimator(random_state=seed, **extra).fit(X_train, y_train)
            seconds = time.perf_counter() - start
            fhe = model.fhe_report()
            row = {
                "task": name,
                "kind": task.kind,
                "seed": seed,
                "ours": metric(task, y_test, model.predict(X_test)),
                "mlp": mlp,
                "epochs": model.training_epochs_,
                "hidden_widths": model.module_.hidden_widths(),
                "pbs_count": fhe["pbs_count"],
                "max_pbs_precision": fhe["max_pbs_precision"],
                "floor_s": floor_seconds(report_pbs(fhe["lookups"]), floor),
                "train_s": seconds,
            }
            row["gap"] = row["mlp"] - row["ours"]
            row["within_target"] = row["gap"] <= DEFAULTS_MARGIN[task.kind] + GAP_TOLERANCE
            yield row


def _mlp_predictions(task, seed: int, split) -> np.ndarray:
    """scikit-learn's MLP of the task's kind at its defaults (``max_iter=500``): its
    predictions on the test split."""
    X_train, X_test, y_train, _ = split
    classification = task.kind == "classification"
    peer = (MLPClassifier if classification else MLPRegressor)(random_state=seed, max_iter=500)
    return peer.fit(X_train, y_train).predict(X_test)


def _missed_rows(task, y_test, y_pred) -> list[int] | None:
    """A classifier's wrong test rows (their indices in the split); None for a regressor."""
    if task.kind != "classification":
        return None
    return np.flatnonzero(np.asarray(y_pred) != y_test).tolist()


def _task_settings(task, smoke: bool) -> dict:
    """The estimator arguments besides ``random_state``: none, but MNIST's ×1 hidden (and two
    epochs in a smoke run)."""
    extra = {"max_epochs": 2} if smoke else {}
    if task.multiplier != NETWORK_DEFAULT_MULTIPLIER:
        extra["module__n_hidden_neurons_multiplier"] = task.multiplier  # MNIST: ×1
    return extra


def spread_rows(smoke: bool, names: list[str], n_seeds: int, n_networks: int) -> Iterator[dict]:
    """Per task and seed: ours at the defaults, ours with ``n_networks`` averaged networks (the
    only other setting), and the MLP at the same seed."""
    if smoke:
        names, n_seeds, n_networks = ["iris"], 1, 2
    for name in names:
        task = TASKS[name]
        split = X_train, X_test, y_train, y_test = load(name)
        extra = _task_settings(task, smoke)
        for seed in range(n_seeds):
            single = task.estimator(random_state=seed, **extra).fit(X_train, y_train)
            averaged = task.estimator(random_state=seed, n_networks=n_networks, **extra)
            averaged.fit(X_train, y_train)
            predictions = {
                "ours": single.predict(X_test),
                "averaged": averaged.predict(X_test),
                "mlp": _mlp_predictions(task, seed, split),
            }
            yield {
                "task": name,
                "kind": task.kind,
                "seed": seed,
                "test_rows": len(y_test),
                **{key: metric(task, y_test, y_pred) for key, y_pred in predictions.items()},
                **{
                    f"{key}_missed": _missed_rows(task, y_test, y_pred)
                    for key, y_pred in predictions.items()
                },
                "n_networks": n_networks,
                "pbs_count": single.fhe_report()["pbs_count"],
                "averaged_pbs_count": averaged.fhe_report()["pbs_count"],
            }


def _float_twin(model, X, y, epochs: int):
    """Plain skorch on a float MLP of the trained network's widths before pruning, with the
    estimator's optimizer, lr and batch size."""
    module = model.module_
    return skorch.NeuralNetClassifier(
        FloatMLP,
        module__input_dim=X.shape[1],
        module__n_outputs=len(np.unique(y)),
        module__hidden=module.init_kwargs["n_hidden_neurons_multiplier"] * X.shape[1],
        module__n_layers=module.init_kwargs["n_layers"],
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=model.lr,
        batch_size=model.batch_size,
        max_epochs=epochs,
        train_split=None,
        verbose=0,
        iterator_train__shuffle=True,
    )


def _timed_fit(estimator, X, y) -> float:
    start = time.perf_counter()
    estimator.fit(X, y)
    return time.perf_counter() - start


class EpochClock(Callback):
    """The wall time of each epoch, whole: from the end of the one before (or of the callbacks'
    ``on_train_begin``) to the end of its last callback. Added after every other callback, so
    it sees their work; skorch's ``dur`` stops before the estimator's own ``on_epoch_end``
    callbacks (BestTrainingState's evaluation pass and state copy)."""

    def on_train_begin(self, net, **kwargs):
        self.ends_ = [time.perf_counter()]

    def on_epoch_end(self, net, **kwargs):
        self.ends_.append(time.perf_counter())

    def ms_per_step(self, n_rows: int, batch_size: int) -> float:
        return 1e3 * float(np.mean(np.diff(self.ends_))) / np.ceil(n_rows / batch_size)


def speed_rows(smoke: bool) -> Iterator[dict]:
    """Both sides on one torch thread: a ratio of like with like (the estimator would pick one
    thread for these small networks anyway; plain skorch would take torch's default)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield from _speed_rows(smoke)
    finally:
        torch.set_num_threads(previous)


def _speed_rows(smoke: bool) -> Iterator[dict]:
    X_small, _, y_small, _ = load("breast_cancer")
    X_large, y_large = make_classification(
        n_samples=2_000 if smoke else LARGE_ROWS, n_features=LARGE_FEATURES, random_state=0
    )
    X_large = X_large.astype(np.float32)
    for name, X, y in (
        ("breast_cancer", X_small, y_small),
        ("make_classification", X_large, y_large),
    ):
        for repeat in range(1 if smoke else SPEED_REPEATS[name]):
            yield {
                "task": name,
                "repeat": repeat,
                **_speed_pair(X, y, 1 if smoke else SPEED_EPOCHS[name]),
            }


def _speed_pair(X, y, epochs: int) -> dict:
    """Ours, then plain skorch, on the same rows: fit seconds and milliseconds per step."""
    ours_clock, plain_clock = EpochClock(), EpochClock()
    ours = NeuralNetClassifier(random_state=0, max_epochs=epochs, callbacks=[("clock", ours_clock)])
    ours_s = _timed_fit(ours, X, y)
    torch.manual_seed(0)
    plain = _float_twin(ours, X, y, epochs).set_params(callbacks=[("clock", plain_clock)])
    plain_s = _timed_fit(plain, X, y.astype(np.int64))
    row = {
        "rows": len(X),
        "features": X.shape[1],
        "epochs": epochs,
        "ours_s": ours_s,
        "plain_skorch_s": plain_s,
        "ours_ms_per_step": ours_clock.ms_per_step(len(X), ours.batch_size),
        "plain_ms_per_step": plain_clock.ms_per_step(len(X), plain.batch_size),
    }
    row["step_ratio"] = row["ours_ms_per_step"] / row["plain_ms_per_step"]
    return row


def _by_task(rows: list[dict]) -> dict[str, list[dict]]:
    tasks: dict[str, list[dict]] = {}
    for row in rows:
        tasks.setdefault(row["task"], []).append(row)
    return tasks


def _defaults_line(rows: list[dict]) -> list:
    """One task's seeds: seed 0 (the target's), the worst and best, seed 0's cost."""
    first = next(row for row in rows if row["seed"] == 0)
    worst = max(rows, key=lambda row: row["gap"])
    best = min(rows, key=lambda row: row["gap"])
    return [
        first["task"],
        TASKS[first["task"]].metric_name,
        f"{first['mlp']:.3f}",
        f"{first['ours']:.3f} ({first['gap']:+.3f})",
        f"{worst['ours']:.3f} ({worst['gap']:+.3f})",
        f"{best['ours']:.3f}",
        ("✓" if first["within_target"] else "✗")
        + " / "
        + ("✓" if all(row["within_target"] for row in rows) else "✗"),
        first["epochs"],
        first["hidden_widths"],
        first["pbs_count"],
        first["max_pbs_precision"],
        f"{first['floor_s']:.2f}" if first["floor_s"] else "–",
    ]


def _speed_line(rows: list[dict]) -> list:
    """One task's pairs: the median pair's figures (the lower middle of an even count), the
    worst and best ratios."""
    ranked = sorted(rows, key=lambda row: row["step_ratio"])
    median = ranked[(len(ranked) - 1) // 2]
    return [
        median["task"],
        f"{median['rows']} × {median['features']}",
        median["epochs"],
        len(rows),
        f"{median['ours_s']:.1f}",
        f"{median['plain_skorch_s']:.1f}",
        f"{median['ours_ms_per_step']:.2f}",
        f"{median['plain_ms_per_step']:.2f}",
        f"{median['step_ratio']:.2f}×",
        f"{ranked[-1]['step_ratio']:.2f}× / {ranked[0]['step_ratio']:.2f}×",
    ]


def _earlier_rows(part: dict) -> str:
    """Which tasks' rows an earlier run measured (``--tasks`` replaces only its own)."""
    earlier = {}
    for row in part["rows"]:
        if row["commit"] != part["commit"]:
            earlier.setdefault(row["commit"], []).append(row["task"])
    return " ".join(
        f"Rows of {', '.join(dict.fromkeys(tasks))}: an earlier run at {commit}."
        for commit, tasks in earlier.items()
    )


def _provenance(part: dict) -> str:
    return f"`{part['command']}` at {part['commit']}; {part['machine']}."


def write_markdown(data: dict, path: Path) -> None:
    lines = ["# Robustness", "", "Written by `benchmarks/robustness.py`; each part says how.", ""]
    if part := data.get("sweep"):
        sweep = part["rows"]
        accuracies = [row["integer_accuracy"] for row in sweep]
        lines += [
            "## Sweep (checkerboard, 3/3/8 bits, ×50 hidden, default rounding)",
            "",
            _provenance(part),
            "",
            f"Worst {min(accuracies):.3f}, best {max(accuracies):.3f}, mean "
            f"{np.mean(accuracies):.3f} over {len(sweep)} points; target ≥ {SWEEP_TARGET} on "
            f"every point: {sum(a >= SWEEP_TARGET for a in accuracies)}/{len(sweep)} reach it. "
            f"Torch equals integer on {min(row['integer_eq_torch'] for row in sweep):.1%} of "
            "rows at worst.",
            "",
        ]
        issue_seeds = [row["integer_accuracy"] for row in sweep if row["seed"] in SWEEP_SEEDS]
        if len(issue_seeds) < len(sweep):
            lines += [
                f"On the issue's seeds {list(SWEEP_SEEDS)} alone: worst {min(issue_seeds):.3f}, "
                f"{sum(a >= SWEEP_TARGET for a in issue_seeds)}/{len(issue_seeds)} reach it; "
                "the other seeds are there for the worst case.",
                "",
            ]
        seeds = sorted({row["seed"] for row in sweep})
        cells = {}
        for row in sweep:
            cells.setdefault((row["lr"], row["batch_size"], row["epochs"]), {})[row["seed"]] = row
        lines += report.table(
            ["lr", "batch", "epochs", *(f"seed {seed}" for seed in seeds), "worst", "fit s (mean)"],
            [
                [
                    lr,
                    batch,
                    epochs,
                    *(f"{by_seed[seed]['integer_accuracy']:.3f}" for seed in seeds),
                    f"{min(r['integer_accuracy'] for r in by_seed.values()):.3f}",
                    f"{np.mean([r['train_s'] for r in by_seed.values()]):.1f}",
                ]
                for (lr, batch, epochs), by_seed in sorted(cells.items())
            ],
        )
        lines.append("")
    if part := data.get("defaults"):
        defaults = part["rows"]
        lines += [
            "## Defaults against scikit-learn's MLP (same split)",
            "",
            "Target: accuracy within 2 points, R² within 0.03, with `random_state=0`; the "
            "other seeds give the worst case next to it. The MLP: its defaults, "
            "`random_state=0`. The cost columns are seed 0's network: `floor s` is the FHE "
            "time per row that its bootstraps imply (pbs_floor.json).",
            "",
        ]
        earlier = _earlier_rows(part)
        lines += [_provenance(part), *([earlier] if earlier else []), ""]
        lines += report.table(
            [
                "task",
                "metric",
                "MLP",
                "ours, seed 0 (gap)",
                "worst seed (gap)",
                "best seed",
                "within: seed 0 / all",
                "epochs",
                "hidden",
                "PBS",
                "max bits",
                "floor s",
            ],
            [_defaults_line(rows) for rows in _by_task(defaults).values()],
        )
        lines.append("")
    if part := data.get("speed"):
        lines += ["## Training speed against plain skorch (float MLP, same widths)", ""]
        lines += [_provenance(part), ""]
        lines += [
            "Each pair fits ours, then plain skorch; a task's ratio is the median pair's, with "
            "the worst and best pairs' next to it (`SPEED_REPEATS` says why).",
            "",
        ]
        lines += report.table(
            [
                "task",
                "rows × features",
                "epochs",
                "pairs",
                "ours fit s",
                "plain fit s",
                "ours ms/step",
                "plain ms/step",
                "step ratio (target ≤ 2)",
                "worst / best ratio",
            ],
            [_speed_line(rows) for rows in _by_task(part["rows"]).values()],
        )
        lines.append("")
    if part := data.get("spread"):
        lines += ["## Defaults over more seeds, one network and several averaged", ""]
        earlier = _earlier_rows(part)
        lines += [_provenance(part), *([earlier] if earlier else []), ""]
        lines += [
            "Each seed 0..N−1: ours with only `random_state` set; ours with `n_networks` set "
            "too (that many networks trained side by side, each on its own loss and "
            "quantizers, averaged in one circuit); and scikit-learn's MLP with the same "
            "`random_state`, on the defaults table's split. Within target: within the "
            "defaults' margin of the MLP's mean over the same seeds.",
            "",
        ]
        lines += report.table(
            [
                "task",
                "metric",
                "seeds",
                "MLP worst / mean / best",
                "ours worst / mean / best",
                "seeds within",
                "n_networks",
                "averaged worst / mean / best",
                "seeds within",
                "PBS, one / averaged (seed 0)",
            ],
            [_spread_line(rows) for rows in _by_task(part["rows"]).values()],
        )
        lines.append("")
        missed = [
            rows
            for rows in _by_task(part["rows"]).values()
            if rows[0].get("ours_missed") is not None
        ]
        if missed:
            lines += [
                "The test rows each classifier got wrong over the seeds, as `row ×seeds` (the "
                "row's index in the test split, × the number of seeds that missed it when "
                "more than one; the most often missed first), and the misses in all: whether "
                "a seed's miss is a row that the other seeds get right.",
                "",
            ]
            lines += report.table(
                ["task", "test rows", "ours", "averaged", "MLP"],
                [_missed_line(rows) for rows in missed],
            )
            lines.append("")
    report.write(path, lines)


def _spread_line(rows: list[dict]) -> list:
    """One task's seeds (:func:`spread_rows`), against the MLP's mean over them."""
    reference = float(np.mean([row["mlp"] for row in rows]))
    margin = DEFAULTS_MARGIN[rows[0]["kind"]] + GAP_TOLERANCE

    def spread(key: str) -> str:
        values = [row[key] for row in rows]
        return f"{min(values):.3f} / {np.mean(values):.3f} / {max(values):.3f}"

    def within(key: str) -> str:
        return f"{sum(reference - row[key] <= margin for row in rows)} of {len(rows)}"

    return [
        rows[0]["task"],
        TASKS[rows[0]["task"]].metric_name,
        len(rows),
        spread("mlp"),
        spread("ours"),
        within("ours"),
        rows[0]["n_networks"],
        spread("averaged"),
        within("averaged"),
        f"{rows[0]['pbs_count']} / {rows[0]['averaged_pbs_count']}",
    ]


def _missed_line(rows: list[dict]) -> list:
    """One classification task's wrong test rows over its seeds, most often missed first."""

    def counted(key: str) -> str:
        counts = Counter(index for row in rows for index in row[f"{key}_missed"])
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        shown = ", ".join(
            f"{index} ×{n}" if n > 1 else str(index) for index, n in ranked[:MISSED_ROWS_SHOWN]
        )
        others = len(ranked) - MISSED_ROWS_SHOWN
        more = f", {others} other rows" if others > 0 else ""
        misses = sum(counts.values())
        return f"{shown}{more} ({misses} miss{'' if misses == 1 else 'es'})" if counts else "–"

    return [
        rows[0]["task"],
        rows[0]["test_rows"],
        counted("ours"),
        counted("averaged"),
        counted("mlp"),
    ]


def _machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} when the part ended"
    )


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=PARTS)
    parser.add_argument("--smoke", action="store_true", help="a few points of every part")
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=DEFAULT_TASKS + REGRESSION_TASKS,
        default=list(DEFAULT_TASKS + REGRESSION_TASKS),
        help="tasks of the defaults part (the other tasks' rows stay)",
    )
    parser.add_argument(
        "--spread-tasks",
        nargs="+",
        choices=DEFAULT_TASKS + REGRESSION_TASKS,
        default=list(SPREAD_TASKS),
        help=f"tasks of the spread part (default: {list(SPREAD_TASKS)}; the other tasks' rows "
        "stay)",
    )
    parser.add_argument(
        "--spread-seeds",
        type=int,
        default=SPREAD_SEEDS,
        help=f"seeds 0..N-1 of the spread part (default: {SPREAD_SEEDS})",
    )
    parser.add_argument(
        "--spread-networks",
        type=int,
        default=SPREAD_NETWORKS,
        help=f"n_networks of the spread part's averaged fits (default: {SPREAD_NETWORKS})",
    )
    for name, values in (*SWEEP.items(), ("seeds", SWEEP_SEEDS)):
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            nargs="+",
            type=type(values[0]),
            default=list(values),
            help=f"sweep values (default: the issue's {list(values)})",
        )
    args = parser.parse_args(argv)
    parts = args.part or PARTS
    suffix = "_smoke" if args.smoke else ""
    path = RESULTS / f"robustness{suffix}.json"
    data = _read(path)
    measure = {
        "sweep": lambda: sweep_rows(
            args.smoke, {name: getattr(args, name) for name in (*SWEEP, "seeds")}
        ),
        "defaults": lambda: defaults_rows(args.smoke, load_floor(), args.tasks),
        "speed": lambda: speed_rows(args.smoke),
        "spread": lambda: spread_rows(
            args.smoke, args.spread_tasks, args.spread_seeds, args.spread_networks
        ),
    }
    command = "python benchmarks/robustness.py " + " ".join(argv or sys.argv[1:])
    measured_tasks = {"defaults": args.tasks, "spread": args.spread_tasks}
    for part in parts:
        kept = []
        if part in measured_tasks and part in data and not args.smoke:
            # tasks measured one run at a time: another task's rows stay (each has its commit)
            kept = [row for row in data[part]["rows"] if row["task"] not in measured_tasks[part]]
        commit = _commit()  # once: a commit made while the part runs is not what it measured
        data[part] = {"command": command, "commit": commit, "rows": kept}
        for row in measure[part]():  # saved row by row: a long part keeps what it measured
            row["commit"] = commit  # kept rows of other tasks carry their own run's
            print(json.dumps(row), flush=True)
            data[part]["rows"].append(row)
            data[part]["machine"] = _machine()
            # re-read: another run may be measuring another part into the same file
            data = {**_read(path), part: data[part]}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2))
    write_markdown(_read(path), RESULTS / f"ROBUSTNESS{suffix}.md")


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


if __name__ == "__main__":
    main()
