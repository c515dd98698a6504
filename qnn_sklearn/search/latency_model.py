"""Predicted FHE latency of one row, from the program a compiled QuantizedModule runs.

The circuit is traced from ``module.steps`` (quantization/program.py), so its bootstraps are
those steps' lookups: per :class:`LookupStep`, one PBS per feature at its precision, after an
exact rounding that costs one small PBS per removed bit (``tabulation.bootstraps`` lists them;
the builder's ``LayerReport`` holds the same counts per layer of the layered program). A row's
latency is then the fixed cost of one runtime call, which grows with the widest bootstrap key,
plus every bootstrap at this machine's measured price (:class:`MachineCosts`). The leveled
dot products are left out: next to the bootstraps they cost little.
"""

from __future__ import annotations

from ..quantization.machine_costs import MachineCosts
from ..quantization.module import QuantizedModule
from ..quantization.tabulation import bootstraps


def pbs_count(module: QuantizedModule) -> int:
    """Bootstraps per row of the module's circuit: lookups plus one per removed bit."""
    return sum(
        lookup["count"] * (1 + lookup["lsbs_to_remove"]) for lookup in bootstraps(module.steps)
    )


def predicted_latency_s(module: QuantizedModule, costs: MachineCosts) -> float:
    """Seconds per row of ``module``'s circuit in FHE (one call per row), by ``costs``."""
    lookups = bootstraps(module.steps)
    widest = max((lookup["precision"] for lookup in lookups), default=0)
    return costs.call_overhead_at(widest) + sum(
        lookup["count"]
        * (costs.lookup_at(lookup["precision"]) + lookup["lsbs_to_remove"] * costs.round_s_per_bit)
        for lookup in lookups
    )
