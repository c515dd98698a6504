"""The cost model: what one bootstrap costs, from a measured table.

``choose_program`` (layered or tabulated) and post-training ``rounding_threshold_bits="auto"``
(how many bits to round away) compare bootstraps by these costs; only their ratios matter.

Measured with ``python benchmarks/pbs_floor.py`` (one table lookup on 64 encrypted values at
each precision 1..8, p_error 2⁻⁴⁰, median of 3 runs; ``wall_per_pbs_s`` in
benchmarks/results/pbs_floor.json, 2 cores) and ``python benchmarks/rounding_cost.py``
(benchmarks/results/rounding_cost.json: exact a→k rounding plus a k-bit lookup against the
native k-bit lookup). To re-measure on another machine, run both scripts and copy the new
figures here; tests/quantization/test_cost_model.py checks the table against pbs_floor.json.
"""

from __future__ import annotations

LOOKUP_COST_MS = (4.3, 4.9, 6.6, 9.2, 20.8, 45.7, 112.6, 415.7)
"""Wall time of one PBS at 1..8 bits, in ms (``wall_per_pbs_s`` of pbs_floor.json)."""

ROUND_COST_MS_PER_BIT = 5.5
"""Wall time of one removed bit of exact rounding, same units (rounding_cost.json)."""

BEYOND_TABLE_FACTOR = 4.0
"""Cost ratio per bit above the table's 8 bits (the measured 7→8 step is ×3.7)."""


def lookup_cost_ms(bits: int) -> float:
    """One lookup at ``bits``; beyond the table, ×``BEYOND_TABLE_FACTOR`` per bit."""
    if bits <= len(LOOKUP_COST_MS):
        return LOOKUP_COST_MS[max(bits, 1) - 1]
    return LOOKUP_COST_MS[-1] * BEYOND_TABLE_FACTOR ** (bits - len(LOOKUP_COST_MS))


def rounded_lookup_cost_ms(precision: int, lsbs_to_remove: int) -> float:
    """One lookup at ``precision`` bits after rounding ``lsbs_to_remove`` bits away."""
    return lookup_cost_ms(precision) + lsbs_to_remove * ROUND_COST_MS_PER_BIT
