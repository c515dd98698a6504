"""qnn_sklearn's benchmark runner: one loop over tasks × configurations, in one of four modes.

Usage::

    python benchmarks/run.py                       # suite: every task, configurations A and ours
    python benchmarks/run.py --tasks digits iris --configs ours
    python benchmarks/run.py --smoke               # iris, 5 epochs, simulation only (< 2 min)
    python benchmarks/run.py --mode seeds --tasks iris --configs ours --seeds 0 1 2 3 4
    python benchmarks/run.py --mode sweep --tasks iris --configs A --layers 1 2 \
        --bits 3,3,7 4,4,14 --lr 1e-2 1e-3 --min-steps 2000 --seeds 0 1 2
    python benchmarks/run.py --mode rounding --tasks digits --configs A --bits 3,3,8 \
        --round-after none auto 6 5 4 [--compile]

Modes (what each row is: ``suite.py``, ``modes.py``):

- suite: the full row, from training to real FHE execution (results.json, RESULTS.md).
- seeds: test metrics per ``--seeds`` value (seeds.json, SEEDS.md).
- sweep: validation metric over ``--seeds`` and floor per candidate, the cheapest reaching the
  task's target selected (config_sweep.json, CONFIG_SWEEP.md).
- rounding: one training, the integer model rebuilt at each ``--round-after`` value
  (rounding_sweep.json, ROUNDING.md).

The grid options (``--layers``, ``--bits``, ``--rounding``, ...) replace fields of each
``--configs`` configuration (after its per-task settings); every combination is a candidate
configuration. Rows are merged into the mode's JSON by their key, so a run over a few tasks
updates those rows only, and the markdown is rewritten from the whole JSON with every floor
re-priced from the current ``pbs_floor.json`` (``--report-only`` does only that).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402
from circuit_cost import price  # noqa: E402
from modes import (  # noqa: E402
    rounding_key,
    rounding_rows,
    seed_key,
    seed_rows,
    sweep_key,
    sweep_rows,
)
from pbs_floor import load_floor  # noqa: E402
from suite import measure_isolated, suite_key  # noqa: E402
from tasks import CONFIGS, TASKS, Config, Task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Mode:
    """What one mode measures per (task, configuration), how its rows merge, where they go."""

    measure: Callable[[Task, Config, argparse.Namespace, dict | None], list[dict]]
    key: Callable[[dict], tuple]
    results: str
    markdown: Callable[[dict, Path], None]
    markdown_name: str
    threads: int  # torch threads: the suite's networks are large enough to use both cores


MODES = {
    "suite": Mode(
        measure_isolated,
        suite_key,
        "results.json",
        report.write_results,
        "RESULTS.md",
        threads=max(1, min(2, os.cpu_count() or 1)),
    ),
    "seeds": Mode(seed_rows, seed_key, "seeds.json", report.write_seeds, "SEEDS.md", threads=1),
    "sweep": Mode(
        sweep_rows, sweep_key, "config_sweep.json", report.write_sweep, "CONFIG_SWEEP.md", threads=1
    ),
    "rounding": Mode(
        rounding_rows,
        rounding_key,
        "rounding_sweep.json",
        report.write_rounding,
        "ROUNDING.md",
        threads=1,
    ),
}

GRID_FIELDS = {
    # option: Config field it replaces
    "layers": "n_layers",
    "multipliers": "multiplier",
    "rounding": "rounding_threshold_bits",
    "min_steps": "min_steps",
    "lr": "lr",
    "batch_size": "batch_size",
}
HIDDEN_ONLY = ("multipliers", "rounding", "prune_neurons")
"""Grid options that change only hidden layers (a linear candidate takes their first value)."""
GRID_EXTRA = {
    # option: estimator parameter it sets (Config.extra)
    "prune_neurons": "module__n_prune_neurons_percentage",
    "input_bits": "module__n_input_bits",
}


def configurations(args, task: Task) -> list[Config]:
    """The named configurations on this task, or with grid options their candidates: every
    combination of the options' values. A linear candidate (one layer) has no hidden layer to
    round or prune, so only the first multiplier, rounding and pruning values make one."""
    bases = [CONFIGS[name].for_task(task) for name in args.configs]
    options = {name: values for name, values in grid_options(args).items() if values is not None}
    if not options and not args.unsigned_input:
        return bases
    candidates = []
    for base, values in itertools.product(bases, itertools.product(*options.values())):
        setting = dict(zip(options, values))
        if setting.get("layers", base.n_layers) == 1:
            if any(setting[name] != options[name][0] for name in HIDDEN_ONLY if name in setting):
                continue
            setting["rounding"] = None
        candidates.append(candidate(base, setting, args.unsigned_input))
    return candidates


def grid_options(args) -> dict:
    """The grid options' value lists (None: not given), bits as one option of three fields."""
    names = [*GRID_FIELDS, *GRID_EXTRA, "bits"]
    return {name: getattr(args, name) for name in names}


def candidate(base: Config, setting: dict, unsigned_input: bool) -> Config:
    """``base`` with the setting's fields, named after them (the suite and seeds key rows by
    configuration name)."""
    fields = {GRID_FIELDS[name]: value for name, value in setting.items() if name in GRID_FIELDS}
    extra = {GRID_EXTRA[name]: value for name, value in setting.items() if name in GRID_EXTRA}
    if unsigned_input:
        extra["module__quant_signed"] = False
    if "bits" in setting:
        fields |= dict(zip(("n_w_bits", "n_a_bits", "n_accum_bits"), setting["bits"]))
    label = " ".join(f"{name}={value}" for name, value in setting.items())
    label += " unsigned" if unsigned_input else ""
    return dataclasses.replace(
        base, name=f"{base.name}[{label}]", extra={**base.extra, **extra}, **fields
    )


def merge_rows(path: Path, rows: list[dict], key: Callable[[dict], tuple], meta: dict) -> dict:
    """Merge ``rows`` into the JSON file by ``key``, under a lock (several runs may write the
    same file at once), with the run's ``meta`` fields; the merged data."""
    with open(Path(tempfile.gettempdir()) / f"qnn_sklearn_{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_rows(path)
        keys = {key(row) for row in rows}
        data["rows"] = [row for row in data["rows"] if key(row) not in keys] + rows
        data.update(meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=_json_default))
    return data


def read_rows(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"rows": []}


def publish(data: dict, floor: dict | None, mode: Mode, markdown: Path) -> None:
    """Re-price every row with the current floor and rewrite the mode's markdown: rows
    measured at different times compare only when priced with the same floor."""
    for row in data["rows"]:
        price(row, floor)
    data["floor"] = floor
    mode.markdown(data, markdown)


def summary(row: dict) -> str:
    """One log line per row: its configuration and whichever metrics and costs it has."""
    fields = ["seed", "rounding", "val_metric", "test_metric", "torch_metric", "integer_metric"]
    fields += ["integer_eq_torch", "floor_s", "fhe_s_per_row", "train_s"]
    cells = [
        f"{name} {row[name]:.3f}" if isinstance(row[name], float) else f"{name} {row[name]}"
        for name in fields
        if name in row
    ]
    return f"{row['task']}/{row.get('config')}: " + ", ".join(cells)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="suite")
    parser.add_argument("--smoke", action="store_true", help="suite: iris, 5 epochs, no FHE")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), help="default: all")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds, sweep: random_state values")
    parser.add_argument("--epochs", type=int, help="override every configuration's epochs")
    parser.add_argument("--threads", type=int, help="torch threads (default: the mode's)")
    parser.add_argument("--out", type=Path, help="JSON file to merge rows into")
    parser.add_argument("--report-only", action="store_true", help="re-price, rewrite markdown")
    parser.add_argument(
        "--skip-existing", action="store_true", help="keep (task, configuration) rows already there"
    )
    suite = parser.add_argument_group("suite")
    suite.add_argument("--fhe-rows", type=int, default=3, help="timed FHE rows (0: skip FHE)")
    suite.add_argument(
        "--fhe-budget-s",
        type=float,
        default=900.0,
        help="seconds of FHE execution per row of the table, estimated as 2 × floor per FHE "
        "row: slower circuits get fewer timed rows (at least 1) and no separate warm-up",
    )
    grid = parser.add_argument_group("grid: candidate values replacing the configurations'")
    grid.add_argument("--layers", nargs="+", type=int)
    grid.add_argument("--multipliers", nargs="+", type=int, help="n_hidden_neurons_multiplier")
    grid.add_argument("--bits", nargs="+", type=_bits, help="w,a,accum e.g. 3,3,8")
    grid.add_argument("--rounding", nargs="+", type=_rounding, help="trained: none, auto, int")
    grid.add_argument("--min-steps", nargs="+", type=int, help="at least this many steps")
    grid.add_argument("--lr", nargs="+", type=float)
    grid.add_argument("--batch-size", nargs="+", type=int)
    grid.add_argument("--prune-neurons", nargs="+", type=float, help="share of hidden dropped")
    grid.add_argument("--input-bits", nargs="+", type=_optional_int, help="input grid bits, none")
    grid.add_argument("--unsigned-input", action="store_true", help="module__quant_signed=False")
    rounding = parser.add_argument_group("rounding")
    rounding.add_argument(
        "--round-after",
        nargs="+",
        type=_rounding,
        default=[None, 8, 7, 6, 5, 4, 3, 2],
        help="post-training rounding_threshold_bits: none, auto, auto:m (margin m), int",
    )
    rounding.add_argument("--compile", action="store_true", help="read the circuit's PBS")
    args = parser.parse_args(argv)
    if args.smoke and args.mode != "suite":
        parser.error("--smoke is a suite run")
    if args.seeds and args.mode not in ("seeds", "sweep"):
        parser.error("--seeds applies to the seeds and sweep modes")
    args.tasks = args.tasks or (["iris"] if args.smoke else list(TASKS))
    if args.smoke:
        args.epochs = args.epochs or 5
    args.seeds = args.seeds or [0]
    args.threads = args.threads or MODES[args.mode].threads
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    mode = MODES[args.mode]
    torch.set_num_threads(args.threads)
    smoke = "_smoke" if args.smoke else ""
    out = args.out or RESULTS / mode.results.replace(".json", f"{smoke}.json")
    markdown = out.with_name(mode.markdown_name.replace(".md", f"{smoke}.md"))
    floor = load_floor()
    if floor is None:
        print("No benchmarks/results/pbs_floor.json: run benchmarks/pbs_floor.py for the floor.")
    meta = {"machine": {"cores": os.cpu_count(), "platform": platform.platform()}}
    meta |= {"configs": {name: config.description for name, config in CONFIGS.items()}}
    meta |= {"smoke": args.smoke}
    data = read_rows(out)
    if args.report_only:
        # the configurations as the code describes them now; the machine stays the measuring one
        descriptions = {"configs": meta["configs"]}
        data |= descriptions
        publish(data, floor, mode, markdown)
        merge_rows(out, data["rows"], mode.key, descriptions)
        print(f"rewrote {out} and {markdown}")
        return
    wall = time.perf_counter()
    for task in (TASKS[name] for name in args.tasks):
        for config in configurations(args, task):
            if args.skip_existing and has_row(data, task, config):
                continue
            rows = mode.measure(task, config, args, floor)
            for row in rows:
                row.setdefault("load_average", os.getloadavg())
                row["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
                price(row, floor)
                print(summary(row), flush=True)
            data = merge_rows(out, rows, mode.key, meta)
            publish(data, floor, mode, markdown)
    print(f"done in {time.perf_counter() - wall:.0f}s: {out}, {markdown}")


def has_row(data: dict, task: Task, config: Config) -> bool:
    """Whether the results already hold a row of this task and configuration (resuming)."""
    return any((row["task"], row.get("config")) == (task.name, config.name) for row in data["rows"])


def _bits(text: str) -> tuple[int, int, int]:
    w, a, accum = (int(part) for part in text.split(","))
    return w, a, accum


def _optional_int(text: str) -> int | None:
    return None if text == "none" else int(text)


def _rounding(text: str) -> int | str | None:
    """``none`` → None, an integer → int, ``auto`` and ``auto:m`` as written."""
    return text if text.startswith("auto") else _optional_int(text)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    main()
