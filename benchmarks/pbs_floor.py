"""The latency floor of FHE inference on this machine: one PBS at each precision.

For every precision p in 1..8 we compile a circuit that applies one table lookup to 64
encrypted p-bit values (p_error 2**-40, the library's default), generate its keys, then time
``circuit.run`` (server side only, no encryption or decryption) a few times. concrete-python
spreads the 64 lookups over the cores, so

* ``wall_per_pbs_s`` = median wall time / 64: what one PBS costs when all cores are busy;
* ``latency_s`` = ``wall_per_pbs_s * cores``: the latency of one PBS on one core.

A model's floor is then ``Σ_pbs latency_s[precision] / cores`` = ``Σ_pbs wall_per_pbs_s``
(benchmarks/run.py reads the JSON this script writes).

Usage: ``python benchmarks/pbs_floor.py [--precisions 1 2 ...] [--runs 3] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from qnn_sklearn.quantization.pbs_timing import cores, time_lookups

N_VALUES = 64
P_ERROR = 2.0**-40
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "pbs_floor.json"


def measure(precision: int, runs: int) -> dict:
    """Compile, keygen and time a 64-lookup circuit at ``precision`` bits (the package's
    :func:`~qnn_sklearn.quantization.pbs_timing.time_lookups`, which the model search's
    per-machine table also uses)."""
    row = time_lookups(precision, N_VALUES, runs, p_error=P_ERROR)
    wall = row.pop("median_s")
    for name in ("n_values", "lsbs_to_remove", "fan_in", "round_trip"):
        del row[name]
    return {**row, "wall_per_pbs_s": wall / N_VALUES, "latency_s": wall / N_VALUES * cores()}


ROUNDING_COST = DEFAULT_OUT.with_name("rounding_cost.json")


def load_floor(path: Path = DEFAULT_OUT) -> dict | None:
    """``{precision: wall_per_pbs_s}`` from a saved run, or None if there is none.

    With ``rounding_cost.json`` (benchmarks/rounding_cost.py) beside it, the key ``"round"``
    holds the wall time of one removed bit of an exact rounding (see :func:`round_cost_s`).
    """
    if not Path(path).exists():
        return None
    data = json.loads(Path(path).read_text())
    floor: dict = {int(row["precision"]): float(row["wall_per_pbs_s"]) for row in data["results"]}
    if ROUNDING_COST.exists():
        floor["round"] = round_cost_s(floor, json.loads(ROUNDING_COST.read_text()))
    return floor


def round_cost_s(floor: dict, rounding_cost: dict) -> float:
    """One removed bit of exact ``round_bit_pattern``, in the floor's units.

    ``rounding_cost.py`` times, side by side on the same machine, an exact rounding a→k plus a
    k-bit lookup and the k-bit lookup on a native k-bit accumulator. The difference per removed
    bit, as a fraction of the native lookup, times the floor's k-bit PBS, is one estimate; we
    average them. (The ratio carries over between loads; the absolute times do not.)
    """
    rows = {row["case"]: row for row in rounding_cost["results"]}
    estimates = []
    for row in rows.values():
        if row["exactness"] != "exact" or row["overrides"]:
            continue
        kept = row["acc_bits"] - row["lsbs_removed"]
        native = rows.get(f"native{kept}")
        if native is None or kept not in floor:
            continue
        extra = (row["ms_per_lookup"] - native["ms_per_lookup"]) / row["lsbs_removed"]
        estimates.append(extra / native["ms_per_lookup"] * floor[kept])
    return float(sum(estimates) / len(estimates)) if estimates else floor[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", type=int, nargs="+", default=list(range(1, 9)))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    results = []
    print(
        f"{'bits':>4} {'ms/PBS (all cores)':>19} {'ms/PBS (1 core)':>16} "
        f"{'keygen s':>9} {'BSK MB':>8}"
    )
    for precision in args.precisions:
        row = measure(precision, args.runs)
        results.append(row)
        print(
            f"{precision:>4} {1e3 * row['wall_per_pbs_s']:>19.2f} {1e3 * row['latency_s']:>16.2f} "
            f"{row['keygen_s']:>9.1f} {row['bootstrap_key_bytes'] / 2**20:>8.0f}"
            + ("" if row["correct"] else "  WRONG RESULT"),
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {
            "cores": cores(),
            "platform": platform.platform(),
            "load_average_at_end": os.getloadavg(),
        },
        "n_values": N_VALUES,
        "p_error": P_ERROR,
        "results": results,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
