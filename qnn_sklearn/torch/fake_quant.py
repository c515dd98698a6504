"""Brevitas' fake quantization, in plain torch ops, for SparseQuantNeuralNetwork's training forward.

Why it exists: speed, measured (issue 15). One optimizer step of a 30-120-120-2 network took
about 11 ms against 0.63 ms for a float MLP of the same widths, and most of it was Brevitas'
machinery, not its arithmetic: a ``quant_weight()`` cost about 0.37 ms (its injector-built proxy,
a dozen script modules, a QuantTensor), a ``QuantIdentity`` 0.23 ms, the QuantTensor product
0.3 ms, for a few elementwise ops each. The functions here compute the same values, bit for bit,
and the same gradients up to float rounding (tests/torch/test_fake_quant.py), from the
quantizers' own parameters and state: the Brevitas modules stay their only holders (a
stats-collecting quantizer's counter and buffer advance here as they would there), and the ONNX
export still traces Brevitas itself. Each quantizer's round-and-clamp is one autograd node with
its gradients written out: as a dozen small ops, the backward cost more than the forward.

The arithmetic of Brevitas 0.13's quantizers as the network builds them, ``b`` bits on the grid
``[qmin, qmax]`` of the quantizer's sign and narrowness, ``threshold`` its ``IntScaling``:
``−qmin`` on a signed grid (``2^(b−1)`` when it is not narrow: one more than ``qmax``), ``qmax``
on an unsigned one:

- weights (QuantLinear's ``Int8WeightPerTensorFloat``): ``scale = max(max|w|, min_scale) /
  threshold`` over the whole (masked) weight; integers ``clamp(round(w / scale))``, the round and
  the clamp both straight-through, so every weight gets the gradient directly and the largest
  ones also through the scale.
- activations and the input (``QuantIdentity``'s ``Int8ActPerTensorFloat``): for the first
  ``collect_stats_steps`` training forwards the scale is a high percentile of ``|x|`` over the
  batch (its gradient reaching ``x``), recorded in the quantizer's buffer with momentum; then
  the learned parameter ``value`` takes that buffer over and the scale is ``max(|value|,
  min_scale) / threshold``. In eval mode the scale is the buffer's (or the parameter's, once it
  took over), divided before the clamp. The round is straight-through, the clamp is not: a value
  clipped to the grid's end passes no gradient to the input.

``torch.round`` rounds half to even, as Brevitas does; ``min_scale`` is ``scaling_min_val``
(1e-10), clamped straight-through. A quantizer built otherwise (another scaling or rounding) is
refused rather than computed differently.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import NamedTuple

import torch
from brevitas.core.function_wrapper import (
    Identity,
    OverTensorView,
    RoundSte,
    TensorClamp,
    TensorClampSte,
)
from brevitas.core.restrict_val import FloatRestrictValue
from brevitas.core.scaling import ParameterFromRuntimeStatsScaling, StatsFromParameterScaling
from brevitas.core.stats import AbsMax, AbsPercentile
from brevitas.core.utils import inplace_momentum_update
from brevitas.core.zero_point import ZeroZeroPoint

from .pruning import weight_and_mask


class FakeQuantized(NamedTuple):
    """A fake-quantized tensor: ``value = integers · scale``."""

    value: torch.Tensor
    """The quantized values, carrying the gradient."""
    scale: torch.Tensor
    """The (0-d) scale, carrying the gradient."""
    integers: torch.Tensor
    """The grid's integers (float, detached): what the budget and the rounding plan read."""


@dataclass(frozen=True)
class _Quantizer:
    """What a Brevitas quantizer's forward needs, read once from its modules."""

    qmin: float
    qmax: float
    threshold: torch.Tensor
    min_scale: float | None


_QUANTIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Each Brevitas ``tensor_quant``'s _Quantizer: reading one costs more than quantizing. Keyed
weakly by the module, which Brevitas builds anew when a state dict is loaded or a layer is
replaced, so an entry never outlives what it describes."""


def weight(linear) -> FakeQuantized:
    """``linear.quant_weight()``'s value and scale (per-tensor, from max|w|). A masked layer's
    weight is masked here, in the same autograd node (pruning.WeightMask's straight-through
    product, without the parametrization's machinery at every forward)."""
    quantizer = _quantizer(_submodule(linear, "weight_quant", "tensor_quant"))
    return FakeQuantized(*_FakeQuantizeWeight.apply(*weight_and_mask(linear), quantizer))


def activation(quant_identity, x: torch.Tensor) -> FakeQuantized:
    """``quant_identity(x)``'s value and scale (learned, first calibrated on batches)."""
    tensor_quant = _submodule(
        quant_identity, "act_quant", "fused_activation_quant_proxy", "tensor_quant"
    )
    quantizer = _quantizer(tensor_quant)
    scaling = tensor_quant.scaling_impl
    collecting = scaling.counter <= scaling.collect_stats_steps
    if not scaling.training:
        base = scaling.buffer if collecting else scaling.value
        scale = _clamp_min_ste(base.abs() / quantizer.threshold, quantizer.min_scale)
    elif scaling.counter < scaling.collect_stats_steps:
        stats, scale = _BatchScale.apply(x, scaling.value, scaling.stats.stats_impl.q, quantizer)
        _record(scaling, stats)
    else:
        if collecting:
            scaling.init_scale()  # the parameter takes the collected statistic over, once
        return FakeQuantized(*_FakeQuantizeLearned.apply(x, scaling.value, quantizer))
    value, integers = _FakeQuantizeActivation.apply(x, scale, quantizer)
    return FakeQuantized(value, scale, integers)


class _FakeQuantizeActivation(torch.autograd.Function):
    """``clamp(round(x / scale)) · scale`` with Brevitas' gradients: the round straight-through,
    the clamp not, so ``x`` gets no gradient where the rounded value left the grid;
    ``∂value/∂scale`` is ``integers − x / scale``, or the grid's end where it clipped."""

    @staticmethod
    def forward(ctx, x, scale, quantizer: _Quantizer):
        q, integers, inside = _round_to_grid(x, scale, quantizer)
        ctx.save_for_backward(q, integers, inside)
        ctx.mark_non_differentiable(integers)
        ctx.set_materialize_grads(False)
        return integers * scale, integers

    @staticmethod
    def backward(ctx, grad, _):
        if grad is None:
            return None, None, None
        q, integers, inside = ctx.saved_tensors
        grad_x = torch.where(inside, grad, 0.0)
        if not ctx.needs_input_grad[1]:
            return grad_x, None, None
        return grad_x, _scale_gradient(grad, q, integers, inside), None


class _FakeQuantizeLearned(torch.autograd.Function):
    """A trained quantizer's ``_FakeQuantizeActivation`` at its learned scale,
    ``max(|value|, min_scale) / threshold`` (the clamp straight-through), in one autograd
    node where the scale took one of its own: a custom node's Python forward and backward
    cost more than this arithmetic (issue 15). Returns the value, the scale and the
    integers."""

    @staticmethod
    def forward(ctx, x, value, quantizer: _Quantizer):
        scale = _clamp_min(value.abs(), quantizer.min_scale) / quantizer.threshold
        q, integers, inside = _round_to_grid(x, scale, quantizer)
        ctx.save_for_backward(q, integers, inside, value)
        ctx.threshold = quantizer.threshold
        ctx.mark_non_differentiable(integers)
        ctx.set_materialize_grads(False)
        return integers * scale, scale, integers

    @staticmethod
    def backward(ctx, grad, grad_scale, _):
        q, integers, inside, value = ctx.saved_tensors
        grad_x = None if grad is None else torch.where(inside, grad, 0.0)
        if not ctx.needs_input_grad[1]:
            return grad_x, None, None
        if grad is not None:
            grad_scale = _sum(_scale_gradient(grad, q, integers, inside), grad_scale)
        if grad_scale is None:
            return grad_x, None, None
        return grad_x, grad_scale / ctx.threshold * value.sign(), None


def _round_to_grid(x, scale, quantizer: _Quantizer):
    """``x / scale``, its integers on the grid, and where rounding left them inside it."""
    q = x / scale
    rounded = torch.round(q)
    integers = rounded.clamp(quantizer.qmin, quantizer.qmax)
    return q, integers, integers == rounded


def _scale_gradient(grad, q, integers, inside) -> torch.Tensor:
    """``Σ grad · ∂value/∂scale``: ``integers − q`` inside the grid, its end where clipped."""
    return _dot(grad, torch.where(inside, integers - q, integers))


class _FakeQuantizeWeight(torch.autograd.Function):
    """``clamp(round(w / scale)) · scale`` at ``scale = max(max|w|, min_scale) / threshold``,
    with Brevitas' gradients: the round and the clamp straight-through, so ``w`` gets the
    gradient everywhere, plus the scale's (``∂value/∂scale = integers − w / scale``) on its
    largest magnitudes (shared if they tie), signed. ``w = raw · mask`` (``mask`` None: no
    mask), the mask straight-through: ``raw`` gets ``w``'s gradient, as pruning.WeightMask
    passes it."""

    @staticmethod
    def forward(ctx, raw, mask, quantizer: _Quantizer):
        w = raw if mask is None else raw * mask
        magnitude = w.abs()
        stats = magnitude.max()
        scale = _clamp_min(stats, quantizer.min_scale) / quantizer.threshold
        q = w / scale
        integers = torch.round(q).clamp_(quantizer.qmin, quantizer.qmax)
        ctx.save_for_backward(w, q, integers, magnitude, stats)
        ctx.threshold = quantizer.threshold
        ctx.mark_non_differentiable(integers)
        ctx.set_materialize_grads(False)
        return integers * scale, scale, integers

    @staticmethod
    def backward(ctx, grad, grad_scale, _):
        w, q, integers, magnitude, stats = ctx.saved_tensors
        if grad is not None:
            grad_scale = _sum(_dot(grad, integers - q), grad_scale)
        if grad_scale is None:
            return None, None, None
        peaks = magnitude == stats
        share = float(grad_scale / ctx.threshold) / int(torch.count_nonzero(peaks))
        grad_w = torch.zeros_like(w) if grad is None else grad
        return torch.addcmul(grad_w, peaks, w.sign(), value=share), None, None


class _BatchScale(torch.autograd.Function):
    """A collecting quantizer's scale: the ``q``-th percentile of ``|x|`` over the batch (the
    k-th smallest, ``k = ⌊q/100 · n + 1/2⌋``), at least ``min_scale``, over ``threshold``;
    returned with that statistic (detached), which the quantizer records. The gradient reaches
    the one element of ``x`` the percentile picked (signed), and the learned parameter, which
    Brevitas adds times 0 so that it has a gradient from the first step, gets zeros."""

    @staticmethod
    def forward(ctx, x, value, q: float, quantizer: _Quantizer):
        flat = x.reshape(-1)
        k = int(math.floor(0.01 * q * flat.numel() + 0.5))
        percentile, index = torch.kthvalue(flat.abs(), k)
        stats = _clamp_min(percentile, quantizer.min_scale)
        ctx.save_for_backward(flat[index])
        ctx.index, ctx.shape, ctx.threshold = index, x.shape, quantizer.threshold
        ctx.mark_non_differentiable(stats)
        ctx.set_materialize_grads(False)
        return stats, stats / quantizer.threshold

    @staticmethod
    def backward(ctx, _, grad):
        if grad is None:
            return None, None, None, None
        (picked,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad.new_zeros(ctx.shape)
            grad_x.view(-1)[ctx.index] = grad / ctx.threshold * picked.sign()
        grad_value = torch.zeros((), dtype=grad.dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_value, None, None


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.dot(a.reshape(-1), b.reshape(-1))


def _sum(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``a + b``, ``b`` None for no gradient: the quantizers' autograd nodes leave gradients
    that never reach them unmaterialized (``set_materialize_grads(False)``); as zero tensors,
    they had cost ten allocations and additions per breast_cancer training step."""
    return a if b is None else a + b


def _clamp_min(x: torch.Tensor, min_value: float | None) -> torch.Tensor:
    return x if min_value is None else x.clamp_min(min_value)


def _clamp_min_ste(x: torch.Tensor, min_value: float | None) -> torch.Tensor:
    """``max(x, min_value)`` (x ≥ 0) with gradient 1 everywhere."""
    if min_value is None:
        return x
    return x.detach().clamp_min(min_value) + (x - x.detach())


def _record(scaling, stats: torch.Tensor) -> None:
    """Advance the quantizer's statistics as its own training forward does."""
    counter = scaling.counter
    if counter == 0:
        scaling.buffer.mul_(stats)
    else:
        inplace_momentum_update(scaling.buffer, stats, scaling.momentum, counter, counter + 1)
    scaling.counter = counter + 1


def _submodule(module, *names: str):
    """``module.name1.name2…``, read from the modules' own dictionaries: through
    ``nn.Module.__getattr__``, a quantizer's path cost 4 µs, and every forward reads one per
    quantizer (a ``timeit`` probe, issue 15)."""
    for name in names:
        module = module._modules[name]
    return module


def _quantizer(tensor_quant) -> _Quantizer:
    quantizer = _QUANTIZERS.get(tensor_quant)
    if quantizer is None:
        quantizer = _QUANTIZERS[tensor_quant] = _read(tensor_quant)
    return quantizer


def _read(tensor_quant) -> _Quantizer:
    """The quantizer's constants, from its modules; TypeError if it is not one we compute."""
    int_quant, scaling = tensor_quant.int_quant, tensor_quant.scaling_impl
    if isinstance(scaling, StatsFromParameterScaling):
        stats_impl = scaling.parameter_list_stats.stats.stats_impl
        view = scaling.parameter_list_stats.first_tracked_param.view_shape_impl
        stats_scaling = scaling.stats_scaling_impl
        restrict = stats_scaling.restrict_clamp_scaling.restrict_value_impl
        clamp = stats_scaling.clamp_scaling
        clamp_impl = TensorClampSte
        expected = isinstance(stats_impl, AbsMax) and isinstance(
            stats_scaling.affine_rescaling, Identity
        )
    elif isinstance(scaling, ParameterFromRuntimeStatsScaling):
        stats_impl, view = scaling.stats.stats_impl, scaling.stats_input_view_shape_impl
        restrict = scaling.restrict_scaling.restrict_value_impl
        clamp = scaling.clamp_scaling
        clamp_impl = TensorClamp
        expected = isinstance(stats_impl, AbsPercentile) and not scaling.local_loss_mode
    else:
        expected = False
    expected = (
        expected
        and stats_impl.stats_reduce_dim is None
        and isinstance(view, OverTensorView)
        and isinstance(restrict, FloatRestrictValue)
        and isinstance(int_quant.float_to_int_impl, RoundSte)
        and type(int_quant.tensor_clamp_impl) is clamp_impl
        and isinstance(tensor_quant.zero_point_impl, ZeroZeroPoint)
    )
    if not expected:
        raise TypeError(f"fake_quant does not compute this Brevitas quantizer: {tensor_quant}")
    with torch.no_grad():
        bit_width = tensor_quant.msb_clamp_bit_width_impl()
        return _Quantizer(
            qmin=float(int_quant.min_int(bit_width)),
            qmax=float(int_quant.max_int(bit_width)),
            threshold=tensor_quant.int_scaling_impl(bit_width),
            min_scale=clamp.min_val or None,
        )
