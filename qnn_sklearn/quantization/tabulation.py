"""Tabulating a whole program: on a narrow input, one table lookup per output.

A program's output is a function of its input row alone. When the input holds few bits in all
(two features on a 2-bit grid: 16 possible rows), the circuit can pack each row into one
integer, a leveled dot product with the powers of the grid's size, and read each output from a
table indexed by that integer: one bootstrap per output at the packed input's precision,
whatever the network's depth, width, accumulators and rounding. The tables are the layered
program evaluated on every possible row, so the two programs agree on every input by
construction.

Which of the two the circuit runs is chosen from the measured cost of its bootstraps
(quantization/cost_model.py): a tabulated program only wins on low-dimensional inputs (the
checkerboard's two features), never on the sklearn tasks' 4 to 64.
"""

from __future__ import annotations

import numpy as np

from .cost_model import rounded_lookup_cost_ms
from .program import LinearStep, LookupStep, ReshapeStep, bits_for, run_program

PROGRAMS = ("auto", "layered", "tabulated")
"""``program`` values: the cheaper of the two by :func:`program_cost_ms`, or either one."""

MAX_TABULATED_BITS = 16
"""Widest packed input a tabulated program reads (concrete-python's widest table lookup)."""


def bootstraps(steps) -> list[dict]:
    """Per lookup step of a program: how many lookups, their precision, the bits rounded away
    before them (each removed bit costs one more bootstrap per lookup)."""
    return [
        {
            "count": int(step.tables.shape[0]),
            "precision": step.precision,
            "lsbs_to_remove": step.lsbs_to_remove,
        }
        for step in steps
        if isinstance(step, LookupStep)
    ]


def program_cost_ms(steps) -> float:
    """The bootstraps' wall time by the measured cost model (quantization/cost_model.py)."""
    return sum(
        lookup["count"] * rounded_lookup_cost_ms(lookup["precision"], lookup["lsbs_to_remove"])
        for lookup in bootstraps(steps)
    )


def packed_bits(n_features: int, levels: int) -> int:
    """Bits of the packed input: rows are numbers ``0 .. levels**n_features − 1``."""
    return bits_for(levels**n_features - 1)


def every_row(n_features: int, levels: int) -> np.ndarray:
    """All ``levels**n_features`` input rows; row ``i`` packs to ``i``."""
    radix = _radix(n_features, levels)
    index = np.arange(levels**n_features, dtype=np.int64)
    return (index[:, None] // radix) % levels


def _radix(n_features: int, levels: int) -> np.ndarray:
    return levels ** np.arange(n_features - 1, -1, -1, dtype=np.int64)


def tabulate(steps, input_shape: tuple[int, ...], levels: int) -> list:
    """The program ``steps`` on inputs in ``0 .. levels − 1`` as: pack, then one table per output.

    Every output reads the same packed integer, copied by the packing matrix (one row of
    powers per output), so one lookup step holds all the tables.
    """
    n_features, levels = int(np.prod(input_shape)), int(levels)
    bits = packed_bits(n_features, levels)
    if bits > MAX_TABULATED_BITS:
        raise ValueError(
            f"A tabulated program would read a {bits}-bit packed input ({n_features} features "
            f"of {levels} levels); FHE lookups take at most {MAX_TABULATED_BITS} bits. Use "
            "program='layered'."
        )
    rows = every_row(n_features, levels)
    outputs = run_program(steps, rows.reshape((len(rows), *input_shape)))
    output_shape = outputs.shape[1:]
    tables = outputs.reshape(len(rows), -1).T
    pack = LinearStep(np.tile(_radix(n_features, levels), (len(tables), 1)), 0, bits)
    lookup = LookupStep(tables, bits, 0, bits_for(tables.max()))
    program = [pack, lookup]
    if len(input_shape) != 1:
        program.insert(0, ReshapeStep((n_features,)))
    if len(output_shape) != 1:
        program.append(ReshapeStep(output_shape))
    return program


def choose_program(steps, input_shape: tuple[int, ...], levels: int, program: str = "auto"):
    """``(kind, steps)``: the layered program as built, or its tabulation (see module doc)."""
    levels = int(levels)
    if program not in PROGRAMS:
        raise ValueError(f"program must be one of {PROGRAMS}, got {program!r}.")
    if program == "layered" or not steps:
        return "layered", list(steps)
    if program == "tabulated":
        return "tabulated", tabulate(steps, input_shape, levels)
    if packed_bits(int(np.prod(input_shape)), levels) <= MAX_TABULATED_BITS:
        tabulated = tabulate(steps, input_shape, levels)
        if program_cost_ms(tabulated) < program_cost_ms(steps):
            return "tabulated", tabulated
    return "layered", list(steps)
