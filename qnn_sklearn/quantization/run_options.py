"""RunOptions: how a compiled QuantizedModule runs many rows, simulated or encrypted.

These change only speed, never the integers a row gets, so they are not part of the circuit
(CompileOptions) and can be set on a module at any time (``module.run_options = ...``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def available_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class RunOptions:
    """How rows go through the circuit.

    Parameters
    ----------
    fhe_threads : int
        Encrypted rows run at once (default: the cores available). concrete-python's runtime
        releases the GIL, so rows on parallel threads use the cores one prediction leaves
        idle: 1.25× to 1.8× the rows/s on 2 cores, depending on how busy one run already
        keeps them (benchmarks/README.md, "Cores").
    simulation_batch : int
        Rows per call of the simulation-only circuit. concrete-python's simulation has a large
        cost per call, which batching divides among the rows; 256 measured best
        (benchmarks/README.md, "Simulation speed"; ``benchmarks/simulation_speed.py``).
    min_batched_rows : int
        Below this many rows, simulation runs row by row on the FHE circuit (no extra compile).
    """

    fhe_threads: int = field(default_factory=available_cores)
    simulation_batch: int = 256
    min_batched_rows: int = 64

    def __post_init__(self):
        for name in ("fhe_threads", "simulation_batch", "min_batched_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
