"""AveragePool, GlobalAveragePool and MaxPool over a row's (C, *spatial) features."""

from __future__ import annotations

import numpy as np

from .linear_maps import pooling_matrix, spatial_attributes, windows
from .op_base import QuantizedOp, require
from .program import bits_for
from .quantizers import QuantizationOptions, UniformQuantizer
from .stages import Activation, append_stage
from .values import Encrypted


def _window_index(op, x: Encrypted, node_name: str):
    """``(index, output_spatial)`` of the node's pooling windows over ``x``'s spatial axes."""
    n_spatial = len(x.feature_shape) - 1
    require(n_spatial >= 1, f"{node_name}: pooling needs (C, *spatial) features.")
    kernel, strides, pads, dilations = spatial_attributes(
        op.attributes, n_spatial, node_name=node_name
    )
    return windows(x.feature_shape[1:], kernel, strides, pads, dilations, node_name)


class QuantizedAveragePool(QuantizedOp):
    """AveragePool: a sum over each window (a 0/1 LinearStep, no lookup), then a division in
    the float view.

    With one divisor for every output (no padding, or ``count_include_pad = 1``) the output is
    integers on the input's grid divided by the window size, which a following Conv or Gemm
    reads directly; with ``count_include_pad = 0`` border windows divide by fewer terms, and a
    lookup (a quantizer) must come before the next linear layer.
    """

    op_type = "AveragePool"

    def apply(self, builder, inputs, names, node_name):
        x = builder.ensure_quantized(inputs[0], names[0], node_name)
        index, output = _window_index(self, x, node_name)
        matrix = pooling_matrix(x.feature_shape, index, node_name)
        if self.attributes.get("count_include_pad", 0):
            divisor = np.full(len(index), index.shape[1])
        else:
            divisor = np.sum(index >= 0, axis=1)
        return builder.add_linear(
            x,
            matrix,
            node_name,
            output_shape=(x.feature_shape[0], *output),
            scale=(1.0 / divisor).reshape(output),
        )


class QuantizedGlobalAveragePool(QuantizedOp):
    """GlobalAveragePool: each channel's mean, as AveragePool with one window per channel."""

    op_type = "GlobalAveragePool"

    def apply(self, builder, inputs, names, node_name):
        x = builder.ensure_quantized(inputs[0], names[0], node_name)
        require(len(x.feature_shape) >= 2, f"{node_name}: needs (C, *spatial) features.")
        n_spatial = int(np.prod(x.feature_shape[1:]))
        matrix = pooling_matrix(x.feature_shape, np.arange(n_spatial)[None, :], node_name)
        output_shape = (x.feature_shape[0],) + (1,) * (len(x.feature_shape) - 1)
        return builder.add_linear(
            x, matrix, node_name, output_shape=output_shape, scale=1.0 / n_spatial
        )


class QuantizedMaxPool(QuantizedOp):
    """MaxPool: the maximum of each window, by pairwise maxima in a tree.

    ``max(a, b) = b + relu(a − b)``: the difference and the sum are leveled, the ReLU is one
    table lookup. A window of k elements costs k − 1 lookups per output (3 for 2×2, 8 for
    3×3), at the precision of a difference of two inputs (one bit more than the input); the
    layer report of the node counts them all (``pbs_count`` = outputs × (k − 1)). Windows are
    picked by gathers, which cost nothing; padded elements (−∞ in ONNX) are replaced by an
    element of the same window, which leaves its maximum unchanged.
    """

    op_type = "MaxPool"

    def apply(self, builder, inputs, names, node_name):
        x = builder.ensure_quantized(inputs[0], names[0], node_name)
        index, output = _window_index(self, x, node_name)
        require(
            np.all(np.any(index >= 0, axis=1)),
            f"{node_name}: a window lies entirely in the padding.",
        )
        first = index[np.arange(len(index)), np.argmax(index >= 0, axis=1)]
        index = np.where(index >= 0, index, first[:, None])
        channels, n_spatial = x.feature_shape[0], int(np.prod(x.feature_shape[1:]))
        channel_index = np.arange(channels)[:, None, None] * n_spatial + index[None]
        output_shape = (channels, *output)
        candidates = [
            builder.add_gather([x], channel_index[:, :, k], output_shape, node_name)
            for k in range(index.shape[1])
        ]
        layer = None
        while len(candidates) > 1:
            pairs = zip(candidates[0::2], candidates[1::2])
            maxima = []
            last = len(candidates) == 2
            for a, b in pairs:
                maximum, layer = _maximum(builder, a, b, node_name, layer, last)
                maxima.append(maximum)
            candidates = maxima + candidates[len(maxima) * 2 :]
        return candidates[0]


def _maximum(builder, a: Encrypted, b: Encrypted, node_name: str, layer, last: bool):
    """``(max(a, b), layer)`` of two integer tensors on one grid: ``b + relu(a − b)``, whose
    lookups count in ``layer`` (the node's report, made by its first difference). The
    ``last`` maximum is the node's output, whose lookups (a next quantizer's) are not the
    node's."""
    difference = builder.add_sum([a, b], [1, -1], node_name, scale=1.0, layer=layer)
    layer = builder.report_of(difference)
    stages = append_stage(difference.stages, Activation("Relu"))
    positive = Encrypted(difference.span, stages, None, producer=difference.producer)
    largest = max(int((difference.grid.offset + difference.span).max()), 1)
    unit = UniformQuantizer(QuantizationOptions(bits_for(largest)), 1.0, 0)
    relu = builder.add_lookup(positive, unit, node_name)
    # the maximum's integers lie within the larger of its terms' ranges
    span = np.maximum(a.grid.offset + a.span, b.grid.offset + b.span) - (
        b.grid.offset + relu.grid.offset
    )
    output_layer = False if last else layer
    maximum = builder.add_sum([b, relu], [1, 1], node_name, a.grid.scale, output_layer, span)
    return maximum, layer
