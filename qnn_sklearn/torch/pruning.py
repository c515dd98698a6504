"""Per-neuron pruning of Brevitas QuantLinear layers: masks, the budget cut, slicing.

The network (SparseQuantNeuralNetwork) decides when to prune; these functions do it on one
layer. A mask is a parametrization of the layer's weight, so a pruned weight keeps its value
and its gradient and can come back when the masks are recomputed.
"""

from __future__ import annotations

import torch
from brevitas import nn as qnn
from torch import nn
from torch.nn.utils import parametrize

from ..quantization.bounds import worst_case_ends


class WeightMask(nn.Module):
    """Parametrization ``weight ↦ weight · mask``; the mask is a buffer refreshed in place.

    The gradient passes straight through to masked weights too, so a pruned weight keeps
    learning and can win its place back when the masks are refreshed.
    """

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight):
        return _StraightThroughMask.apply(weight, self.mask)


class _StraightThroughMask(torch.autograd.Function):
    """``weight · mask`` whose gradient is the identity: one autograd node, where the same
    gradient written in ops took four (the mask is applied at every training forward)."""

    @staticmethod
    def forward(ctx, weight, mask):
        return weight * mask

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def budget_mask(
    scale: torch.Tensor,
    candidates: torch.Tensor,
    max_abs_weight: int,
    input_range: tuple[int, int],
    budget: int,
) -> torch.Tensor:
    """Per row: keep the largest ``candidates`` while the accumulator stays within ``±budget``
    over inputs in ``input_range``.

    ``candidates`` are float weights, their integers taken at ``scale`` (the layer's current
    weight scale, which the caller has at hand: Brevitas' ``quant_weight()`` cost most of this
    function) and clipped to ``±max_abs_weight``. In order of magnitude, a candidate is kept while
    each end of the range it moves (bounds.worst_case_ends, on the running sums) is within
    budget: on a non-negative input grid a positive weight moves only the maximum and a
    negative one only the minimum, so each sign fills its own end. Callers multiply the
    result into another mask.
    """
    lo, hi = input_range
    with torch.no_grad():
        q = torch.clamp(torch.round(candidates / scale), -max_abs_weight, max_abs_weight)
        order = torch.argsort(candidates.abs(), dim=1, descending=True, stable=True)
        sorted_q = torch.gather(q, 1, order).to(torch.int64)
        sorted_sign = torch.gather(torch.sign(candidates), 1, order)
        positive_sum = torch.cumsum(sorted_q.clamp(min=0), dim=1)
        negative_sum = torch.cumsum((-sorted_q).clamp(min=0), dim=1)
        max_end, min_end = worst_case_ends(positive_sum, negative_sum, lo, hi)
        moves_max = ((sorted_sign > 0) & (hi > 0)) | ((sorted_sign < 0) & (lo < 0))
        moves_min = ((sorted_sign < 0) & (hi > 0)) | ((sorted_sign > 0) & (lo < 0))
        keep_sorted = ~(moves_max & (max_end > budget)) & ~(moves_min & (min_end > budget))
        mask = torch.zeros_like(candidates)
        mask.scatter_(1, order, keep_sorted.to(candidates.dtype))
        return mask


def rows_over_budget(
    integer_weight: torch.Tensor, input_range: tuple[int, int], budget: int
) -> torch.Tensor:
    """Per row: whether its accumulator can leave ``±budget`` over inputs in ``input_range``."""
    return ends_over_budget(accumulator_ends(integer_weight, input_range), budget)


def ends_over_budget(ends: tuple[torch.Tensor, torch.Tensor], budget: int) -> torch.Tensor:
    """Per row: whether its accumulator ends ``(max, −min)`` leave ``±budget``."""
    max_end, min_end = ends
    return (max_end > budget) | (min_end > budget)


def any_over_budget(ends: tuple[torch.Tensor, torch.Tensor], budget: int) -> bool:
    """Whether any row's ends leave ``±budget``: :func:`ends_over_budget`'s ``any()`` in one
    reduction, for the training forward's check of every layer at every step."""
    return float(torch.maximum(*ends).max()) > budget


def accumulator_ends(
    integer_weight: torch.Tensor, input_range: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: ``(max, −min)`` of its accumulator over inputs in ``input_range``, as float64
    integers, exact (bounds.worst_case_ends on the row's sums per sign; the negative weights'
    magnitudes sum to the positive ones' sum minus the row's). The integer weights may be
    float (the training forward's) or int64: they are summed in float64, and the whole
    weight is never converted (the training forward checks every layer at every step)."""
    positive_sum = integer_weight.clamp(min=0).sum(dim=1, dtype=torch.float64)
    negative_sum = positive_sum - integer_weight.sum(dim=1, dtype=torch.float64)
    return worst_case_ends(positive_sum, negative_sum, *input_range)


def integer_values(quantized) -> torch.Tensor:
    """The integers of a Brevitas QuantTensor straight from a quantizer, as int64.

    ``QuantTensor.int()`` first checks that the values lie on the grid, which costs more
    than quantizing them. (The training forward reads the integers its own quantizer made:
    fake_quant.FakeQuantized.integers.)
    """
    with torch.no_grad():
        return torch.round(quantized.value / quantized.scale + quantized.zero_point).to(torch.int64)


def weight_and_mask(linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's trained weight before masking, and its mask buffer (its WeightMask's,
    refreshed in place; None if unmasked).

    Read from the modules' own dictionaries: every training forward reads both for every
    layer, and through ``parametrize.is_parametrized`` and ``nn.Module.__getattr__`` they cost
    18 µs a layer, against 0.6 (a ``timeit`` probe, issue 15).
    """
    parametrizations = linear._modules.get("parametrizations")
    weight = None if parametrizations is None else parametrizations._modules.get("weight")
    if weight is None:
        return linear._parameters["weight"], None
    return weight._parameters["original"], weight._modules["0"]._buffers["mask"]


def is_masked(linear) -> bool:
    return weight_and_mask(linear)[1] is not None


def raw_weight(linear) -> torch.Tensor:
    """The trained weight before masking (masked-out inputs keep learning; see WeightMask)."""
    return weight_and_mask(linear)[0]


def weight_mask(linear) -> torch.Tensor | None:
    """The layer's mask buffer (its WeightMask's, refreshed in place), None if unmasked."""
    return weight_and_mask(linear)[1]


def sliced_linear(linear, rows=None, columns=None):
    """A copy of ``linear`` keeping only the given output rows / input columns (of its mask
    too, if it has one: the copy trains on as the layer did)."""
    weight = raw_weight(linear).detach()
    bias = linear.bias.detach()
    mask = weight_mask(linear)
    if rows is not None:
        weight, bias = weight[rows], bias[rows]
        mask = None if mask is None else mask[rows]
    if columns is not None:
        weight = weight[:, columns]
        mask = None if mask is None else mask[:, columns]
    new = qnn.QuantLinear(
        weight.shape[1],
        weight.shape[0],
        bias=True,
        weight_bit_width=int(linear.weight_quant.bit_width().item()),
        weight_narrow_range=linear.weight_quant.is_narrow_range,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias.copy_(bias)
    if mask is not None:
        parametrize.register_parametrization(new, "weight", WeightMask(mask.clone()))
    return new.train(linear.training)
