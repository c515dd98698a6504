"""What a rounded lookup costs against a lookup on a natively narrow accumulator.

Each case is a small circuit shaped like one layer of our models: 8 encrypted 3-bit inputs, a
leveled matmul to 64 non-negative accumulators whose largest value needs ``acc_bits`` bits, then
(optionally) ``round_bit_pattern`` and one table lookup per accumulator. We time
``circuit.run`` (server side) and check that execution equals simulation equals the clear
function on a few inputs, including the extreme ones.

Cases: exact rounding ``acc_bits → kept`` + TLU; the same TLU on a native ``kept``-bit
accumulator; approximate rounding; and concrete-python configuration knobs on one case.

Usage: ``python benchmarks/rounding_cost.py [--cases NAME ...] [--runs 3] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from concrete import fhe

N_IN, N_OUT = 8, 64
P_ERROR = 2.0**-40
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "rounding_cost.json"


def weights_for(acc_bits: int, lsbs: int, seed: int = 0) -> np.ndarray:
    """Non-negative (N_IN, N_OUT) weights: the largest accumulator (all inputs 7) nearly fills
    ``acc_bits`` bits, and rounding it up cannot overflow them."""
    rng = np.random.default_rng(seed)
    total = (2**acc_bits - 1 - (1 << lsbs) // 2) // 7
    weight = np.zeros((N_IN, N_OUT), dtype=np.int64)
    for j in range(N_OUT):
        weight[:, j] = rng.multinomial(total, np.ones(N_IN) / N_IN)
    return weight


def make_function(acc_bits: int, lsbs: int, exactness):
    weight = weights_for(acc_bits, lsbs)
    kept = acc_bits - lsbs
    table = (np.arange(2**kept) * 5 + 3) % 8  # a non-trivial 3-bit activation

    def layer(x):
        acc = fhe.hint(x @ weight, bit_width=acc_bits)
        if lsbs:
            acc = fhe.round_bit_pattern(
                acc, lsbs_to_remove=lsbs, overflow_protection=False, exactness=exactness
            )
        return fhe.univariate(lambda v: table[np.minimum(v >> lsbs, 2**kept - 1)])(acc)

    return layer, weight


CASES = {
    # name: (acc_bits, lsbs, exactness, configuration overrides)
    "native4": (4, 0, None, {}),
    "native5": (5, 0, None, {}),
    "native6": (6, 0, None, {}),
    "native7": (7, 0, None, {}),
    "exact7to5": (7, 2, fhe.Exactness.EXACT, {}),
    "exact8to6": (8, 2, fhe.Exactness.EXACT, {}),
    "exact7to4": (7, 3, fhe.Exactness.EXACT, {}),
    "exact8to5": (8, 3, fhe.Exactness.EXACT, {}),
    "exact7to6": (7, 1, fhe.Exactness.EXACT, {}),
    # a hidden layer at the defaults (3/3/8): 4 bits rounded away, then a 4-bit lookup (the
    # carry-free budget) or a 5-bit one (the full ±127 range, whose top values carry)
    "exact8to4": (8, 4, fhe.Exactness.EXACT, {}),
    "exact9to5": (9, 4, fhe.Exactness.EXACT, {}),
    "approx8to4": (8, 4, fhe.Exactness.APPROXIMATE, {}),
    "approx7to5": (7, 2, fhe.Exactness.APPROXIMATE, {}),
    "approx8to6": (8, 2, fhe.Exactness.APPROXIMATE, {}),
    "native6_mono": (6, 0, None, {"parameter_selection_strategy": "mono"}),
    "native6_dataflow": (6, 0, None, {"dataflow_parallelize": True, "loop_parallelize": False}),
    "native6_noloop": (6, 0, None, {"loop_parallelize": False}),
    "native4_noloop": (4, 0, None, {"loop_parallelize": False}),
    "native5_noloop": (5, 0, None, {"loop_parallelize": False}),
    "exact8to6_mono": (8, 2, fhe.Exactness.EXACT, {"parameter_selection_strategy": "mono"}),
    "exact8to6_noorig": (
        8,
        2,
        fhe.Exactness.EXACT,
        {"optimize_tlu_based_on_original_bit_width": False},
    ),
    "native6_p20": (6, 0, None, {"p_error": 2.0**-20}),
    "native5_p20": (5, 0, None, {"p_error": 2.0**-20}),
    "exact8to6_p20": (8, 2, fhe.Exactness.EXACT, {"p_error": 2.0**-20}),
}


def prepare(name: str) -> dict:
    """Compile and keygen one case; check execution against simulation and the clear function."""
    acc_bits, lsbs, exactness, overrides = CASES[name]
    layer, _ = make_function(acc_bits, lsbs, exactness)
    compiler = fhe.Compiler(layer, {"x": "encrypted"})
    rng = np.random.default_rng(1)
    inputset = [np.zeros(N_IN, np.int64), np.full(N_IN, 7)] + [
        rng.integers(0, 8, N_IN) for _ in range(30)
    ]
    configuration = fhe.Configuration(**{"p_error": P_ERROR, "fhe_simulation": True, **overrides})
    start = time.perf_counter()
    circuit = compiler.compile(inputset, configuration)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    circuit.keygen(force=True)
    keygen_s = time.perf_counter() - start
    samples = inputset[:2] + [rng.integers(0, 8, N_IN) for _ in range(6)]
    mismatches_sim, mismatches_clear = 0, 0
    for sample in samples:
        executed = circuit.encrypt_run_decrypt(sample)
        mismatches_sim += int(np.sum(executed != circuit.simulate(sample)))
        mismatches_clear += int(np.sum(executed != layer(sample)))
    return {
        "circuit": circuit,
        "encrypted": circuit.encrypt(samples[2]),
        "row": {
            "case": name,
            "acc_bits": acc_bits,
            "lsbs_removed": lsbs,
            "exactness": None if exactness is None else exactness.value,
            "overrides": dict(overrides),
            "pbs_count": int(circuit.programmable_bootstrap_count),
            "compile_s": compile_s,
            "keygen_s": keygen_s,
            "bootstrap_key_mb": circuit.size_of_bootstrap_keys / 2**20,
            "compared_values": len(samples) * N_OUT,
            "execute_ne_simulate": mismatches_sim,
            "execute_ne_clear": mismatches_clear,
        },
    }


def time_interleaved(prepared: dict[str, dict], runs: int) -> None:
    """Time ``circuit.run`` round-robin over the cases, so a shared machine's load falls on
    all of them alike; the ratios between cases are what to read."""
    times: dict[str, list[float]] = {name: [] for name in prepared}
    wall: dict[str, list[float]] = {name: [] for name in prepared}
    for case in prepared.values():
        case["circuit"].run(case["encrypted"])  # warm-up
    loads = []
    for _ in range(runs):
        for name, case in prepared.items():
            cpu0, start = time.process_time(), time.perf_counter()
            case["circuit"].run(case["encrypted"])
            wall[name].append(time.perf_counter() - start)
            times[name].append(time.process_time() - cpu0)
        loads.append(os.getloadavg()[0])
    for name, case in prepared.items():
        row = case["row"]
        row["runs_s"] = wall[name]
        row["wall_s"] = statistics.median(wall[name])
        row["ms_per_lookup"] = 1e3 * row["wall_s"] / N_OUT
        row["cpu_over_wall"] = statistics.median(times[name]) / row["wall_s"]
        row["cpu_ms_per_lookup"] = 1e3 * statistics.median(times[name]) / N_OUT
        row["load_average_during"] = [min(loads), max(loads)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    prepared = {}
    for name in args.cases:
        prepared[name] = prepare(name)
        row = prepared[name]["row"]
        print(
            f"prepared {name}: {row['pbs_count']} PBS, keygen {row['keygen_s']:.1f}s, "
            f"exec≠sim {row['execute_ne_simulate']}/{row['compared_values']}, "
            f"exec≠clear {row['execute_ne_clear']}",
            flush=True,
        )
    time_interleaved(prepared, args.runs)
    print(f"{'case':<20} {'PBS':>5} {'ms/lookup':>10} {'cpu/wall':>9} {'keygen s':>9} exec≠sim")
    for name, case in prepared.items():
        row = case["row"]
        print(
            f"{name:<20} {row['pbs_count']:>5} {row['ms_per_lookup']:>10.1f} "
            f"{row['cpu_over_wall']:>9.2f} {row['keygen_s']:>9.1f} "
            f"{row['execute_ne_simulate']:>3}/{row['compared_values']}"
        )
    loads = next(iter(prepared.values()))["row"]["load_average_during"]
    print(f"1-min load average during timing: {loads[0]:.1f}–{loads[1]:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "n_lookups": N_OUT,
                "p_error": P_ERROR,
                "cores": len(os.sched_getaffinity(0)),
                "results": [case["row"] for case in prepared.values()],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
