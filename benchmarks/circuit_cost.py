"""The bootstraps of a model and their price in seconds, shared by every benchmark mode.

Two sources say which bootstraps a model runs: the compiled circuit's MLIR (what concrete will
execute) and ``fhe_report()["lookups"]`` (what the builder announces, available without
compiling). Both are reduced to one form, ``{"kind", "count", "precision"}`` per operation, so
that one function prices either against the measured floor (``pbs_floor.json``).
"""

from __future__ import annotations

import re

import numpy as np

_LOOKUP = re.compile(
    r'"FHE(?:Linalg)?\.apply_(?:mapped_|multi_)?lookup_table"\(.*?\) : '
    r"\((?:tensor<([\dx]+)x)?!FHE\.es?int<(\d+)>"
)
_ROUND = re.compile(
    r'"FHE(?:Linalg)?\.round"\(.*?\) : \((?:tensor<([\dx]+)x)?!FHE\.es?int<(\d+)>>?\) -> '
    r"(?:tensor<[\dx]+x)?!FHE\.es?int<(\d+)>"
)


def _elements(shape: str | None) -> int:
    return int(np.prod([int(d) for d in shape.split("x")])) if shape else 1


def circuit_pbs(circuit) -> list[dict]:
    """The bootstraps of the compiled circuit, read from its MLIR.

    A table lookup on ``eint<p>`` (or signed ``esint<p>``, as Concrete ML's circuits compute)
    is one PBS of precision p per element. An exact
    ``round_bit_pattern`` (``FHE.round`` from ``eint<a>`` to ``eint<b>``) costs one small
    bootstrap per removed bit and element (a - b of them); we count those at precision 1, the
    precision of the parameters concrete picks for them.
    """
    rows = []
    for line in circuit.mlir.splitlines():
        if match := _ROUND.search(line):
            removed = int(match.group(2)) - int(match.group(3))
            count = _elements(match.group(1)) * removed
            rows.append({"kind": "round", "count": count, "precision": 1})
        elif match := _LOOKUP.search(line):
            precision = int(match.group(2))
            rows.append(
                {"kind": "lookup", "count": _elements(match.group(1)), "precision": precision}
            )
    return rows


def report_pbs(lookups: list[dict]) -> list[dict]:
    """The bootstraps that ``fhe_report()["lookups"]`` announces, in :func:`circuit_pbs`' form."""
    rows = []
    for lookup in lookups:
        if lookup["lsbs_to_remove"]:
            count = lookup["count"] * lookup["lsbs_to_remove"]
            rows.append({"kind": "round", "count": count, "precision": 1})
        rows.append({"kind": "lookup", "count": lookup["count"], "precision": lookup["precision"]})
    return rows


def floor_seconds(pbs: list[dict], floor: dict | None) -> float | None:
    """Σ over PBS of one PBS's latency at its precision / cores (= its all-cores wall time);
    a removed bit of exact rounding at ``floor["round"]`` when measured (else as a 1-bit PBS)."""
    if floor is None:
        return None
    total = 0.0
    for row in pbs:
        if row.get("kind") == "round" and "round" in floor:
            total += row["count"] * floor["round"]
        elif row["precision"] in floor:
            total += row["count"] * floor[row["precision"]]
        else:
            return None
    return float(total)


def price(row: dict, floor: dict | None) -> None:
    """Re-price a results row with the current floor, so that every table compares rows priced
    alike: its circuit's bootstraps when it was compiled, else the announced ones. Rows without
    bootstraps recorded (the seeds mode's) are left alone."""
    pbs = row.get("pbs_circuit") or row.get("pbs_report")
    if pbs is None:
        return
    row["floor_s"] = floor_seconds(pbs, floor)
    if row["floor_s"] and "fhe_s_per_row" in row:
        row["latency_over_floor"] = row["fhe_s_per_row"] / row["floor_s"]
