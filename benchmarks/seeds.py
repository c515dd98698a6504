"""A classification task and configuration over several ``random_state`` values.

One seed says little: a network of 3-bit integers changes its function in jumps while it
trains, and the small test splits (iris: 38 rows) move by a row at a time. For each seed this
script trains the benchmark's configuration on the task's train split and records the integer
and the torch (Brevitas) test accuracy and their agreement. Issue 3 asks for ≥ 0.92 on the
100-hidden checkerboard with configuration A and ≥ 99.9% torch/integer agreement.

Usage: ``python benchmarks/seeds.py --task checkerboard_100 --config A --seeds 0 1 2 3 4``
(about 2 minutes per seed on an idle 2-core machine; iris and breast_cancer take seconds).
Rows are merged into ``results/seeds.json`` by (task, configuration, seed), and the tables are
written to ``results/SEEDS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import CONFIGS, TASKS, load  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "seeds.json"
MARKDOWN = RESULTS / "SEEDS.md"
CLASSIFICATION_TASKS = sorted(name for name, task in TASKS.items() if task.kind == "classification")


def measure(task_name: str, config_name: str, seed: int) -> dict:
    task = TASKS[task_name]
    X_train, X_test, y_train, y_test = load(task_name)
    params = {**CONFIGS[config_name].estimator_params(task, len(X_train)), "random_state": seed}
    start = time.perf_counter()
    model = task.estimator(**params).fit(X_train, y_train)
    train_s = time.perf_counter() - start
    torch_labels = model.classes_[model.forward(X_test).argmax(1).numpy()]
    integer_labels = model.predict(X_test)
    return {
        "task": task_name,
        "config": config_name,
        "seed": seed,
        "torch_accuracy": float(np.mean(torch_labels == y_test)),
        "integer_accuracy": float(np.mean(integer_labels == y_test)),
        "agreement": float(np.mean(torch_labels == integer_labels)),
        "hidden": model.module_.hidden_widths(),
        "epochs": params["max_epochs"],
        "train_s": train_s,
        "load_average": os.getloadavg()[0],
        "commit": _commit(),
    }


def write_markdown(rows: list[dict]) -> None:
    lines = [
        "# Accuracy by seed",
        "",
        "`python benchmarks/seeds.py --task T --config C --seeds ...`: the benchmark's "
        "configuration C on task T, trained once per `random_state`, scored on the test split.",
    ]
    for key in sorted({(row["task"], row["config"]) for row in rows}):
        group = sorted((row for row in rows if (row["task"], row["config"]) == key), key=_seed)
        accuracies = [row["integer_accuracy"] for row in group]
        lines += [
            "",
            f"## {key[0]}, configuration {key[1]}",
            "",
            "| random_state | integer accuracy | torch accuracy | torch == integer | hidden after "
            "pruning | train s | commit |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {row['seed']} | {row['integer_accuracy']:.3f} | {row['torch_accuracy']:.3f} | "
            f"{row['agreement']:.1%} | {row['hidden']} | {row['train_s']:.0f} | {row['commit']} |"
            for row in group
        ]
        lines += [
            "",
            f"Integer accuracy: mean {np.mean(accuracies):.3f}, min {min(accuracies):.3f}, "
            f"max {max(accuracies):.3f}.",
        ]
    MARKDOWN.write_text("\n".join(lines) + "\n")


def _seed(row: dict) -> int:
    return row["seed"]


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="checkerboard_100", choices=CLASSIFICATION_TASKS)
    parser.add_argument("--config", default="A", choices=sorted(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    rows = json.loads(OUT.read_text()) if OUT.exists() else []
    for seed in args.seeds:
        row = measure(args.task, args.config, seed)
        print(
            f"{args.task}/{args.config} seed {seed}: integer {row['integer_accuracy']:.3f}, "
            f"torch {row['torch_accuracy']:.3f}, agreement {row['agreement']:.1%} "
            f"({row['train_s']:.0f}s)",
            flush=True,
        )
        key = (args.task, args.config, seed)
        rows = [r for r in rows if (r["task"], r["config"], r["seed"]) != key] + [row]
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(rows, indent=2))
        write_markdown(rows)


if __name__ == "__main__":
    main()
