"""Rounding an accumulator before its table lookup: which low bits go, and what that costs.

An accumulator ``acc`` (the signed integer ``Σ w_q · x_q`` of one neuron) is rounded to
``round_half_up(acc / 2**lsbs) · 2**lsbs``: to a multiple of ``2**lsbs``, whatever the neuron's
range. The circuit stores ``acc − base`` with ``base`` a multiple of ``2**lsbs`` (see
:func:`aligned_base`), so concrete-python's ``round_bit_pattern`` on the stored value is that
same rounding. Defined this way, the rounding is a function of the accumulator alone: a
network can train with it (``SparseQuantNeuralNetwork``) and the integer model reproduces it
exactly, even though the two certify different ranges.

Ranges are given per neuron as the certified ``lo ≤ acc ≤ hi`` (numpy integer arrays).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cost_model import rounded_lookup_cost_ms
from .program import bits_for

AUTO_ROUNDING = "auto"
"""``rounding_threshold_bits="auto"``. In the integer-model builders (post-training) it
chooses the kept bits of each layer from its tables (:func:`auto_lsbs`, then the cheapest
within that, :func:`cheapest_lsbs`); in a ``SparseQuantNeuralNetwork`` it trains with
``n_a_bits + 2`` kept bits (network.py's ``AUTO_ROUNDING_EXTRA_BITS``). The two differ on
purpose: after training the tables are known and fixed, while a network that trains with the
rounding needs a rule that does not depend on tables that move with every step."""


@dataclass(frozen=True)
class RoundingPlan:
    """Bits each accumulator loses before its lookup, keyed by linear layer.

    ``lsbs[i]`` is for the i-th linear layer that a lookup follows, in graph order. A network
    that trains with rounding makes its plan (``SparseQuantNeuralNetwork.rounding_plan``) and
    the builder applies it as given, so the integer model rounds exactly as training did.
    """

    lsbs: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "lsbs", tuple(int(bits) for bits in self.lsbs))
        if any(bits < 0 for bits in self.lsbs):
            raise ValueError(f"A rounding plan removes >= 0 bits per layer, got {self.lsbs}.")

    def for_layer(self, index: int) -> int:
        """Bits the ``index``-th rounded layer removes; ValueError past the plan's end."""
        if index >= len(self.lsbs):
            raise ValueError(
                f"The rounding plan has {len(self.lsbs)} layers; the graph has more linear "
                "layers followed by a lookup."
            )
        return self.lsbs[index]


AUTO_ROUNDING_MARGIN = 1
"""Post-training ``"auto"`` keeps rounding steps at most ``2**-AUTO_ROUNDING_MARGIN`` of the
narrowest activation step, so rounding moves an accumulator by at most a quarter of a step
(see :func:`auto_lsbs` and benchmarks/ROUNDING.md for the measurement behind it)."""


def check_rounding_threshold_bits(value):
    """``None``, ``"auto"`` or an integer ≥ 1; ValueError otherwise.

    The one check of the setting, wherever a user gives it: the network
    (SparseQuantNeuralNetwork) and the post-training builder call it on entry; the functions
    below take thresholds already checked.
    """
    if value is None or (isinstance(value, str) and value == AUTO_ROUNDING):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"rounding_threshold_bits must be None, 'auto' or an integer >= 1, got {value!r}."
        )
    if value < 1:
        raise ValueError(f"rounding_threshold_bits must be at least 1, got {value}.")
    return int(value)


def round_accumulator(acc, lsbs: int):
    """``acc`` rounded half up to a multiple of ``2**lsbs`` (integer arrays or tensors, or a
    float tensor of integers, as the training forward holds its accumulators).

    Integers are shifted, not divided with ``//``: an arithmetic right shift floors as ``//``
    does, in a third of the time on a torch tensor. Float integers are scaled by powers of 2
    and floored, exactly (below 2**24 in float32): converting a batch's accumulators to int64
    and back cost more than the rounding (the training forward rounds every hidden
    accumulator of every batch).
    """
    if not lsbs:
        return acc
    if getattr(acc.dtype, "is_floating_point", False):  # a torch float tensor
        return (acc * 2.0**-lsbs + 0.5).floor_() * 2.0**lsbs
    return ((acc + (1 << (lsbs - 1))) >> lsbs) << lsbs


def aligned_base(lo, lsbs: int) -> np.ndarray:
    """The largest multiple of ``2**lsbs`` at or below ``lo``: what the circuit subtracts."""
    return (np.asarray(lo, dtype=np.int64) >> lsbs) << lsbs


def rounded_span(lo, hi, lsbs: int) -> np.ndarray:
    """Largest stored value after rounding: ``round(hi) − aligned_base(lo)``, per neuron."""
    return round_accumulator(np.asarray(hi, dtype=np.int64), lsbs) - aligned_base(lo, lsbs)


def lookup_precision(lo, hi, lsbs: int) -> int:
    """Bits the lookup reads once ``lsbs`` bits are rounded away (the widest neuron)."""
    return bits_for(int(rounded_span(lo, hi, lsbs).max()) >> lsbs)


def lsbs_for_threshold(lo, hi, threshold: int) -> int:
    """Fewest low bits to round away so that every neuron's lookup reads ``threshold`` bits.

    Rounding half up can carry into a new top bit (``2**b − 1`` rounds to ``2**b``), so the
    fewest bits are not always ``bits − threshold``; they are searched. ``threshold`` is
    checked (:func:`check_rounding_threshold_bits`).

    The training forward makes a plan at every step, so the search starts at the fewest bits
    that the widest range alone does not rule out (:func:`_too_wide`): on breast_cancer and
    digits fits, that start was the answer at every one of 1,258 plans, where the bound used
    before (``bits_for(span) − threshold − 1``) took two evaluations each.
    """
    lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
    span = int(np.max(hi - lo))
    lsbs = 0
    while _too_wide(span, lsbs, threshold):
        lsbs += 1
    while lookup_precision(lo, hi, lsbs) > threshold:
        lsbs += 1
    return lsbs


def _too_wide(span: int, lsbs: int, threshold: int) -> bool:
    """Whether a neuron whose range is ``span`` wide (``hi − lo``) reads more than ``threshold``
    bits once ``lsbs`` bits are rounded away, wherever its range lies.

    Its lookup reads ``⌊(hi + half) / 2^lsbs⌋ − ⌊lo / 2^lsbs⌋`` levels (``half`` is
    ``2^(lsbs−1)``, 0 for no bits: :func:`round_accumulator` and :func:`aligned_base`), at
    least ``(span + half − 2^lsbs + 1) / 2^lsbs``; more than ``2^threshold − 1`` levels take
    more than ``threshold`` bits. Exact for ``lsbs = 0``.
    """
    half = (1 << lsbs) >> 1
    return span + half - (1 << lsbs) + 1 > ((1 << threshold) - 1) << lsbs


def carry_free_limit(limit: int, threshold: int) -> int:
    """Largest ``|accumulator|`` up to ``limit`` whose rounding to ``threshold`` bits carries
    into no extra lookup bit.

    A layer whose range reaches ``±limit`` rounds away ``lsbs`` bits, the fewest that bring its
    span ``2·limit`` to ``threshold`` bits. Rounding half up then lifts the top values to the
    next multiple of ``2**lsbs``, one step past ``threshold`` bits, so
    :func:`lsbs_for_threshold` has to remove one bit more (or the lookup reads one bit more).
    Within the limit returned, the same ``lsbs`` bits leave a lookup of exactly ``threshold``
    bits. At ``n_accum_bits=8`` and 5 kept bits that is ±123 instead of ±127: 3 bits away
    before a 5-bit lookup, 38.6 ms per neuron, where a layer with one neuron past ±123 rounded
    4 away, 42.4 ms (benchmarks/results/rounding_carry.json, cases exact8to5 and exact9to5).
    """
    lsbs = max(bits_for(2 * limit) - threshold, 0)
    while limit > 0 and lookup_precision(-limit, limit, lsbs) > threshold:
        limit -= 1
    return limit


def cheapest_lsbs(lo, hi, max_lsbs: int) -> int:
    """Among 0..max_lsbs removed bits, the cheapest rounding + lookup (ties: fewer bits)."""

    def cost(lsbs: int) -> float:
        return rounded_lookup_cost_ms(lookup_precision(lo, hi, lsbs), lsbs)

    return min(range(max(max_lsbs, 0) + 1), key=cost)


def auto_lsbs(tables: np.ndarray, spans: np.ndarray, margin: int | None = None) -> int:
    """Low bits a layer can drop: ``2**lsbs`` ≤ its narrowest activation step / ``2**margin``.

    ``tables[j, v]`` is neuron j's output for accumulator value v. An activation step is a run
    of accumulator values with one output between two changes of the output (the first and
    last runs, cut by the range's ends, do not count). Rounding to multiples of ``2**lsbs``
    moves a value by at most ``2**(lsbs-1)``, so only values within ``2**-(margin+1)`` of a
    step's width from one of its edges can change level, and by one level at most.
    A layer whose neurons all have fewer than two changes keeps its full precision (nothing
    tells how far it may round).
    """
    margin = AUTO_ROUNDING_MARGIN if margin is None else margin
    narrowest = None
    for row, span in zip(tables, spans):
        changes = np.flatnonzero(np.diff(row[: int(span) + 1])) + 1
        if len(changes) >= 2:
            width = int(np.diff(changes).min())
            narrowest = width if narrowest is None else min(narrowest, width)
    if narrowest is None:
        return 0
    return max(int(np.floor(np.log2(narrowest))) - margin, 0)
