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

from ..quantization.bounds import worst_case_magnitude


class WeightMask(nn.Module):
    """Parametrization ``weight ↦ weight · mask``; the mask is a buffer refreshed in place.

    The gradient passes straight through to masked weights too, so a pruned weight keeps
    learning and can win its place back when the masks are refreshed.
    """

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight):
        return weight * self.mask + (weight - weight.detach()) * (1 - self.mask)


def budget_mask(
    linear, candidates: torch.Tensor, max_abs_weight: int, max_abs_input: int, budget: int
) -> torch.Tensor:
    """Per row: keep the largest ``candidates`` while ``Σ|w_q| · max_abs_input ≤ budget``.

    ``candidates`` are float weights, their integers taken at the layer's current weight
    scale and clipped to ``±max_abs_weight``. Zero candidates cost nothing and are kept:
    callers multiply the result into another mask. The cost is bounds.worst_case_magnitude,
    the arithmetic the integer model's certified ranges lie within.
    """
    with torch.no_grad():
        scale = linear.quant_weight().scale
        q = torch.clamp(torch.round(candidates / scale), -max_abs_weight, max_abs_weight)
        magnitude = q.abs().to(torch.int64)
        order = torch.argsort(candidates.abs(), dim=1, descending=True, stable=True)
        running_sum = torch.cumsum(torch.gather(magnitude, 1, order), dim=1)
        keep_sorted = worst_case_magnitude(running_sum, max_abs_input) <= budget
        mask = torch.zeros_like(candidates)
        mask.scatter_(1, order, keep_sorted.to(candidates.dtype))
        return mask


def is_masked(linear) -> bool:
    return parametrize.is_parametrized(linear, "weight")


def raw_weight(linear) -> torch.Tensor:
    """The trained weight before masking (masked-out inputs keep learning; see WeightMask)."""
    return linear.parametrizations.weight.original if is_masked(linear) else linear.weight


def sliced_linear(linear, rows=None, columns=None):
    """A copy of ``linear`` keeping only the given output rows / input columns."""
    weight = linear.weight.detach()
    bias = linear.bias.detach()
    if rows is not None:
        weight, bias = weight[rows], bias[rows]
    if columns is not None:
        weight = weight[:, columns]
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
    return new
