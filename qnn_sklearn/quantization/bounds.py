"""Accumulator intervals: the one arithmetic behind the pruner's budget and the builder's bounds.

A neuron's accumulator is ``Σ_i w_i · x_i`` over integer weights ``w`` and integer inputs ``x``
in a box ``lo ≤ x ≤ hi``. :func:`accumulator_range` is its exact range. The pruner of
SparseQuantNeuralNetwork keeps each neuron within ``n_accum_bits`` over the box of its input
grid (:func:`worst_case_ends`, the same range's ends, from running sums of the weights), and
the builder certifies the exact range over the grid the input really has. The two agree, so
:func:`check_certified_bits` holds for every pruned network; it is checked all the same after
each import, as the invariant it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np


def accumulator_range(weight: np.ndarray, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Exact range of each neuron's ``Σ_i weight[j, i] · x_i`` over inputs ``lo ≤ x ≤ hi``.

    ``lo`` and ``hi`` are per input or one for all. Each input takes either end of its range
    independently, so neuron j's minimum puts the inputs with positive weights at ``lo`` and the
    others at ``hi`` (its maximum the other way round).
    """
    weight = np.asarray(weight, dtype=np.int64)
    lo = np.broadcast_to(np.asarray(lo, dtype=np.int64), weight.shape[1:])
    hi = np.broadcast_to(np.asarray(hi, dtype=np.int64), weight.shape[1:])
    positive, negative = np.maximum(weight, 0), np.minimum(weight, 0)
    return positive @ lo + negative @ hi, positive @ hi + negative @ lo


def worst_case_ends(positive_sum, negative_sum, lo: int, hi: int):
    """``(max, −min)`` of ``Σ w_i · x_i`` over inputs ``lo ≤ x_i ≤ hi``, with ``lo ≤ 0 ≤ hi``.

    ``positive_sum`` is the sum of the positive weights, ``negative_sum`` that of the negative
    weights' magnitudes. The maximum puts the positive weights' inputs at ``hi`` and the
    others' at ``lo``; the minimum the other way round (:func:`accumulator_range` at the box's
    ends). On a non-negative grid (after a ReLU), positive weights only raise the maximum and
    negative ones only lower the minimum, so a signed accumulator holds twice the weight that
    a bound by ``Σ|w| · max|x|`` allows. The sums may be numpy or torch arrays (e.g. running
    sums), so the pruner can price its candidate weights one by one.

    The networks' two kinds of grid skip the formula's zero terms: a non-negative grid (``lo =
    0``, after a ReLU) gives each sign's sum times ``hi``, a symmetric one (``lo = −hi``, the
    signed input's) both ends ``(positive_sum + negative_sum) · hi`` (one array, returned
    twice). The training forward takes these ends for every layer at every step: 2 ops
    instead of 6, for the same values (a 60 × 60 layer's ends, pruning.accumulator_ends:
    35–42 µs against 58).
    """
    if lo == 0:
        return positive_sum * hi, negative_sum * hi
    if lo == -hi:
        end = (positive_sum + negative_sum) * hi
        return end, end
    return positive_sum * hi - negative_sum * lo, negative_sum * hi - positive_sum * lo


def signed_limit(n_bits: int) -> int:
    """Largest ``|accumulator|`` the pruner allows in ``n_bits`` signed bits: ``2^(n−1) − 1``,
    at either end of the range (symmetric: one limit for ``max`` and ``−min``)."""
    return 2 ** (n_bits - 1) - 1


def max_terms(budget: int, max_abs_weight: int, max_abs_input: int) -> int:
    """Inputs per neuron that fit ``|accumulator| ≤ budget`` whatever their weights and values
    (worst case: every weight of one sign, every input at its largest magnitude)."""
    return budget // (max_abs_weight * max_abs_input)


def signed_bits(lo: int, hi: int) -> int:
    """Bits of the two's-complement integer that holds every value of ``lo..hi``."""
    magnitude_bits = max(int(hi), 0).bit_length(), max(-int(lo) - 1, 0).bit_length()
    return max(magnitude_bits) + 1


class CertifiedLayer(Protocol):
    """A linear layer with its certified accumulator range (builder.LayerReport)."""

    name: str
    accumulator_min: np.ndarray
    accumulator_max: np.ndarray


class AccumulatorOverflowError(RuntimeError):
    """A certified accumulator needs more bits than the network was pruned for."""


def check_certified_bits(layers: Iterable[CertifiedLayer], n_accum_bits: int) -> None:
    """Raise AccumulatorOverflowError if a layer's certified range needs > ``n_accum_bits``.

    The pruner's bound is the certified range's, so this never fires on a network the
    pruner left; it guards the seam between the two (grids, scales, zero points).
    """
    for layer in layers:
        lo, hi = int(np.min(layer.accumulator_min)), int(np.max(layer.accumulator_max))
        bits = signed_bits(lo, hi)
        if bits > n_accum_bits:
            raise AccumulatorOverflowError(
                f"Layer {layer.name!r}: its certified accumulator range [{lo}, {hi}] needs "
                f"{bits} signed bits, more than n_accum_bits={n_accum_bits}. The network's "
                "weights were changed after pruning, or the pruner and the integer model "
                "disagree on a grid; retrain (fit) the estimator."
            )
